"""The decide modules' public surface is explicit and true (like tests/test_exported_members)."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = [
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
]


@pytest.mark.parametrize("name", PUBLIC)
def test_all_is_declared_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} must declare __all__"
    assert len(exported) == len(set(exported))
    for member in exported:
        assert hasattr(module, member), f"{name}.__all__ names {member!r}, which does not exist"
