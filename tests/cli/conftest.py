"""A filled data dir (simulated archive, ingested, materialized) shared by the CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _run import ok_json, run


@pytest.fixture(scope="session")
def filled_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 simulated stations' day, ingested and materialized; read-only for the tests."""
    work = tmp_path_factory.mktemp("filled")
    archive, data = work / "archive", work / "data"
    args = ("--stations", "12", "--days", "1", "--seed", "0", "--out", str(archive), "--json")
    ok_json(run("sim", "archive", *args, cwd=work))
    ok_json(run("ingest", "--archive", str(archive), "--data-dir", str(data), "--json", cwd=work))
    ok_json(run("features", "materialize", "--data-dir", str(data), "--json", cwd=work))
    return data


@pytest.fixture
def data_copy(filled_data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the filled data dir, for tests that change it."""
    target = tmp_path / "data"
    shutil.copytree(filled_data_dir, target)
    return target
