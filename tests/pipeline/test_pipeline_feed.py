"""Simulator → real HTTP → GBFS client → validation → log → offline store, with every fault type.

The simulator counts what it injected into the documents it served; dockline's dead letters by
reason must equal those counts exactly, and accepted + dead letters must equal what was published.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from dockline.core.contracts import IngestSummary
from dockline.core.time import FixedClock
from dockline.pipeline.ingest import ingest_feed, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import REASON_BY_FAULT, City, CityConfig, FaultConfig, SimServer

PUBLICATIONS = 40


def _follow(
    tmp_path: Path, faults: FaultConfig, *, version_path: str = "/gbfs.json", stations: int = 60
) -> tuple[Platform, IngestSummary, dict[str, object]]:
    """Follow a simulated feed for PUBLICATIONS minutes, one fetch per publication."""
    city = City(CityConfig(stations=stations, seed=11, faults=faults))
    clock = FixedClock(city.time)
    platform = Platform.open(tmp_path / "data")
    end = city.time + timedelta(minutes=PUBLICATIONS)
    with SimServer(city, speed=6000.0, clock=clock) as server:
        # stepping the clock after each committed document makes every publication fetched once
        def advance(summary: IngestSummary) -> None:
            clock.advance(timedelta(minutes=1))

        summary = ingest_feed(
            platform,
            server.url + version_path,
            stop=lambda: clock.now() >= end,
            clock_source="feed",
            on_progress=advance,
        )
        stats = server.stats()
    sink_offline(platform)
    return platform, summary, stats


def _offline_rows(platform: Platform) -> tuple[int, int]:
    pattern = str(platform.data.offline("station_status") / "**" / "*.parquet")
    row = duckdb.execute(
        "select count(*), count(distinct (station_id, event_ts)) from read_parquet(?)", [pattern]
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("fault", sorted(REASON_BY_FAULT))
def test_each_rejecting_fault_is_counted_exactly(tmp_path: Path, fault: str) -> None:
    platform, summary, stats = _follow(tmp_path, FaultConfig(**{fault: 0.05}))
    injected = stats["faults"][fault]  # type: ignore[index]
    assert injected > 0, "the simulator must have injected the fault"
    assert summary.dead_letters == {str(REASON_BY_FAULT[fault]): injected}
    assert summary.received == stats["published_records"]
    assert summary.accepted + summary.rejected == summary.received
    store = platform.open_deadletters()
    try:
        assert store.counts() == {str(REASON_BY_FAULT[fault]): injected}
    finally:
        store.close()
    rows, distinct = _offline_rows(platform)
    assert rows == distinct == summary.accepted


@pytest.mark.parametrize("version_path", ["/gbfs.json", "/v3/gbfs.json"])
def test_all_faults_together_on_both_versions(tmp_path: Path, version_path: str) -> None:
    _, summary, stats = _follow(tmp_path, FaultConfig.all(0.01), version_path=version_path)
    assert summary.received == stats["published_records"]
    assert summary.dead_letters == stats["expected_rejections"]


def test_coercible_quirks_are_accepted(tmp_path: Path) -> None:
    """Numeric ids, millisecond timestamps and vanishing stations are not errors."""
    faults = FaultConfig(numeric_ids=1.0, millis=0.3, vanish=0.02)
    platform, summary, stats = _follow(tmp_path, faults)
    assert stats["faults"]["millis"] > 0 and stats["faults"]["vanish"] > 0  # type: ignore[index]
    assert summary.dead_letters == {}
    assert summary.accepted == stats["published_records"]
    pattern = str(platform.data.offline("station_status") / "**" / "*.parquet")
    with duckdb.connect() as con:
        kinds = con.execute(
            "select typeof(station_id), max(epoch_us(event_ts)) - min(epoch_us(event_ts))"
            " from read_parquet(?) group by 1",
            [pattern],
        ).fetchall()
    assert len(kinds) == 1 and kinds[0][0] == "VARCHAR"
    span = timedelta(microseconds=kinds[0][1])
    # millisecond timestamps were read as milliseconds, not as dates 1000 years away
    assert timedelta(0) < span < timedelta(minutes=PUBLICATIONS + 1)
