"""Dagster runs here on ephemeral instances; DAGSTER_HOME points into the test's tmp dir so
nothing Dagster might write lands outside it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster-home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DOCKLINE_DATA_DIR", raising=False)
