"""Fixtures of the feature tests: a real embedded event log and online store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dockline.store import SqliteEventLog, SqliteOnlineStore


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqliteEventLog]:
    with SqliteEventLog(tmp_path / "log.sqlite", default_partitions=3) as log:
        yield log


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteOnlineStore]:
    store = SqliteOnlineStore(tmp_path / "online.sqlite")
    yield store
    store.close()
