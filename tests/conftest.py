"""Shared fixtures: paths to the reference material beside the repository."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_server import INSTALL_HINT as PG_INSTALL_HINT
from postgres_server import PostgresServer, find_bindir, has_wal2json, postgres_cluster

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only reference material (``../shared``); required, never skipped."""
    assert SHARED.is_dir(), f"../shared must sit beside the repository; not found at {SHARED}"
    return SHARED


@pytest.fixture(scope="session")
def divvy_dir(shared_dir: Path) -> Path:
    """The real Divvy archive."""
    return shared_dir / "data" / "divvy"


@pytest.fixture(scope="session")
def gbfs_dir(shared_dir: Path) -> Path:
    """GBFS schemas and fixtures."""
    return shared_dir / "gbfs"


# -- postgres: one private cluster per test session (CDC source, MLflow/Optuna backends) ---------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster with ``wal_level=logical`` and wal2json, on 127.0.0.1.

    Skips with an install hint when the server or wal2json is missing; fails under ``CI=true``.
    """
    bindir = find_bindir()
    if bindir is None or not has_wal2json(bindir):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{PG_INSTALL_HINT}; under CI=true this is a failure", pytrace=False)
        pytest.skip(PG_INSTALL_HINT)
    with postgres_cluster(bindir) as server:
        yield server


# -- end postgres ---------------------------------------------------------------------------------
