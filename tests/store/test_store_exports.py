"""The public surface of dockline.store: explicit, importable, documented."""

from __future__ import annotations

import inspect

import dockline.store
from dockline.core.ports import DeadLetterStore, EventLog


def test_all_names_exist_and_are_documented() -> None:
    for name in dockline.store.__all__:
        obj = getattr(dockline.store, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
            for method_name, method in inspect.getmembers(obj, inspect.isfunction):
                if not method_name.startswith("_"):
                    assert inspect.getdoc(method), f"{name}.{method_name}"


def test_backends_have_the_ports_exact_signatures() -> None:
    pairs = [
        (EventLog, dockline.store.SqliteEventLog),
        (DeadLetterStore, dockline.store.SqliteDeadLetterStore),
    ]
    for port, backend in pairs:
        methods = [m for m in vars(port) if not m.startswith("_")]
        assert methods
        for method in methods:
            want = inspect.signature(getattr(port, method))
            got = inspect.signature(getattr(backend, method))
            assert list(got.parameters.values()) == list(want.parameters.values()), method
            assert got.return_annotation == want.return_annotation, method
