"""Fixtures of the feature tests: a real embedded event log and online store per test, and a
simulated city's offline store per module."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockline.core.time import FixedClock
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import CityConfig, write_archive
from dockline.store import SqliteEventLog, SqliteOnlineStore

SIM_START = datetime(2024, 5, 6, 5, tzinfo=UTC)  # Monday 00:00 in Chicago


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqliteEventLog]:
    with SqliteEventLog(tmp_path / "log.sqlite", default_partitions=3) as log:
        yield log


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteOnlineStore]:
    store = SqliteOnlineStore(tmp_path / "online.sqlite")
    yield store
    store.close()


@pytest.fixture(scope="module")
def simulated_city(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """Eight simulated days of 12 stations (a week for the hour-of-week profile), ingested and
    sunk into an offline store."""
    root = tmp_path_factory.mktemp("bikeshare")
    write_archive(CityConfig(stations=12, seed=7, start=SIM_START), 8.0, root / "archive")
    platform = Platform.open(root / "data", clock=FixedClock(datetime(2024, 6, 1, tzinfo=UTC)))
    ingest_archive(platform, root / "archive")
    sink_offline(platform)
    return platform
