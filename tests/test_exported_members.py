"""The public surface is explicit: every public package declares ``__all__`` and it is true."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = [
    "dockline",
    "dockline.core.contracts",
    "dockline.core.errors",
    "dockline.core.ports",
    "dockline.core.time",
    "dockline.core.config",
    "dockline.sim",
    "dockline.ingest",
    "dockline.store",
    "dockline.core.bundle",
    "dockline.train",
    "dockline.serve",
    "dockline.core.monitoring",
    "dockline.monitor",
    "dockline.core.decisions",
    "dockline.decide",
    "dockline.decide.audit",
    "dockline.decide.forecast",
    "dockline.decide.planner",
    "dockline.decide.policies",
    "dockline.decide.report",
    "dockline.decide.scoring",
    "dockline.sim.fleet",
    "dockline.pipeline.decide",
    "dockline.pipeline.decide_run",
    "dockline.pipeline.decide_api",
    "dockline.cli._decide",
    "dockline.features.served",
    "dockline.orchestration",
    "dockline.orchestration.defs",
    # -- ui --
    "dockline.ui",
    "dockline.pipeline.ui_api",
    "dockline.cli._ui",
    "dockline.features.spark",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_all_is_declared_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} must declare __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    for member in exported:
        assert hasattr(module, member), f"{name}.__all__ names {member!r}, which does not exist"
        assert not member.startswith("_") or member == "__version__"
