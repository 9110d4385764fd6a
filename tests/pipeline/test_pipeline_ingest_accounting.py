"""Every record accounted for: confirmations, skipped documents, replays, the sim's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from dockline.core.config import IngestConfig
from dockline.core.contracts import (
    CONFIRMATION_SCHEMA,
    TOPIC_STATION_STATUS,
    IngestSummary,
    confirmations_topic,
)
from dockline.core.time import FixedClock
from dockline.pipeline.deadletters import replay_dead_letters
from dockline.pipeline.ingest import IngestRun, ingest_feed, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import City, CityConfig, FaultConfig, SimServer

T0 = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
T0_S = int(T0.timestamp())


def _doc(*stations: dict[str, Any], last_updated: int) -> bytes:
    return orjson.dumps(
        {"last_updated": last_updated, "ttl": 60, "version": "2.3", "data": {"stations": stations}}
    )


def _station(sid: str, last_reported: int, bikes: int = 3) -> dict[str, Any]:
    return {
        "station_id": sid,
        "num_bikes_available": bikes,
        "num_docks_available": 5,
        "is_installed": True,
        "is_renting": True,
        "is_returning": True,
        "last_reported": last_reported,
    }


def _read_all(platform: Platform, topic: str) -> list[dict[str, Any]]:
    log = platform.open_log()
    try:
        rows: list[dict[str, Any]] = []
        for partition, end in log.end_offsets(topic).items():
            if end:
                rows += log.read(topic, partition, 0, end).drop_columns(["_offset"]).to_pylist()
        return rows
    finally:
        log.close()


def test_a_quiet_station_polled_three_times_is_confirmed_twice(tmp_path: Path) -> None:
    platform = Platform.open(tmp_path)
    run = IngestRun(platform, "gbfs:test", platform.open_log(), platform.open_deadletters())
    try:
        for poll in range(3):
            ingested = T0 + timedelta(minutes=poll)
            batch = run.normalizer.normalize_document(
                _doc(_station("quiet", T0_S - 30), last_updated=T0_S + 60 * poll),
                ingested_at=ingested,
                batch_id=f"poll-{poll}",
            )
            run.commit_status(batch)
        summary = run.finish(0.0)
    finally:
        run.close()
    assert (summary.received, summary.accepted, summary.unchanged) == (3, 1, 2)
    assert summary.confirmations == 2 and summary.rejected == 0
    topic = confirmations_topic(TOPIC_STATION_STATUS)
    assert topic == "station_status.confirmed"
    confirmed = _read_all(platform, topic)
    assert [r["ingested_at"] for r in confirmed] == [
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
    ]
    assert {r["station_id"] for r in confirmed} == {"quiet"}
    assert {r["event_ts"] for r in confirmed} == {T0 - timedelta(seconds=30)}
    assert set(confirmed[0]) == set(CONFIRMATION_SCHEMA.names)
    assert len(_read_all(platform, TOPIC_STATION_STATUS)) == 1
    # the offline sink keeps them apart from the source's partitions
    reports = sink_offline(platform)
    assert reports[topic].records == 2 and reports[TOPIC_STATION_STATUS].records == 1
    status = str(platform.data.offline("station_status") / "**" / "*.parquet")
    assert duckdb.execute("select count(*) from read_parquet(?)", [status]).fetchone() == (1,)
    confirmed_files = str(platform.data.offline(topic) / "**" / "*.parquet")
    assert duckdb.execute("select count(*) from read_parquet(?)", [confirmed_files]).fetchone() == (
        2,
    )


def _follow_once(platform: Platform, url: str) -> IngestSummary:
    """Follow the feed until one station_status document was committed or skipped."""
    seen: list[IngestSummary] = []

    def done() -> bool:
        return bool(seen) and (seen[-1].documents + seen[-1].skipped_documents) >= 1

    return ingest_feed(
        platform,
        url,
        stop=done,
        clock_source="feed",
        sink_every=None,
        on_progress=seen.append,
    )


def test_a_document_whose_last_updated_did_not_advance_is_counted(tmp_path: Path) -> None:
    city = City(CityConfig(stations=12, seed=3))
    platform = Platform.open(tmp_path / "data")
    with SimServer(city, clock=FixedClock(city.time)) as server:
        first = _follow_once(platform, server.url + "/gbfs.json")
        again = _follow_once(platform, server.url + "/gbfs.json")  # a restart: same document
    assert first.documents == 1 and first.skipped_documents == 0
    assert (again.skipped_documents, again.skipped_records) == (1, 12)
    assert again.received == 12 and again.accepted == 0
    again.check_accounting()
    assert again.to_dict()["skipped_documents"] == 1


def test_the_simulator_clock_is_followed_by_default_and_a_wrong_clock_alarms(
    tmp_path: Path,
) -> None:
    """The README recipe: `sim serve --faults all` then `ingest --feed` with no --clock."""
    city = City(CityConfig(stations=30, seed=5, faults=FaultConfig.all(0.01)))
    with SimServer(city, clock=FixedClock(city.time)) as server:
        default = ingest_feed(
            Platform.open(tmp_path / "auto"),
            server.url + "/gbfs.json",
            stop=lambda: False,
            duration=timedelta(seconds=1.5),
            sink_every=None,
        )
        local = ingest_feed(
            Platform.open(tmp_path / "local"),
            server.url + "/gbfs.json",
            duration=timedelta(seconds=1.5),
            clock_source="local",
            sink_every=None,
        )
    assert default.accepted > 0 and default.alarm is None
    assert default.rejected < default.received / 2
    assert local.rejected > local.received / 2
    assert local.alarm is not None and "stale" in local.alarm
    assert local.to_dict()["alarm"] == local.alarm


def test_replay_stamps_the_replay_time_and_keeps_the_past_unchanged(tmp_path: Path) -> None:
    platform = Platform.open(tmp_path)
    run = IngestRun(platform, "gbfs:test", platform.open_log(), platform.open_deadletters())
    old = T0_S - 2 * 86_400  # stale under the default stale_after of 1 day
    try:
        run.commit_status(
            run.normalizer.normalize_document(
                _doc(_station("a", T0_S - 30), _station("b", old), last_updated=T0_S),
                ingested_at=T0,
                batch_id="poll-0",
            )
        )
        run.commit_status(
            run.normalizer.normalize_document(b"not json", ingested_at=T0, batch_id="poll-1")
        )
    finally:
        run.close()
    sink_offline(platform)
    as_of = T0 + timedelta(hours=1)

    def known_at(when: datetime) -> list[tuple[Any, ...]]:
        pattern = str(platform.data.offline("station_status") / "**" / "*.parquet")
        return duckdb.execute(
            "select station_id, event_ts, ingested_at, num_bikes_available from read_parquet(?)"
            " where ingested_at <= ? order by all",
            [pattern, when],
        ).fetchall()

    before = known_at(as_of)
    assert [row[0] for row in before] == ["a"]

    replay_at = T0 + timedelta(hours=2)
    fixed = Platform(
        data=platform.data,
        config=platform.config.model_copy(
            update={"ingest": IngestConfig(stale_after=timedelta(days=3))}
        ),
        clock=FixedClock(replay_at),
    )
    result = replay_dead_letters(fixed)
    assert result == {"replayed": 1, "accepted": 1, "still_rejected": 0, "not_replayable": 1}
    sink_offline(fixed)
    assert known_at(as_of) == before  # a training set for a past as_of does not change
    after = known_at(replay_at)
    assert [(row[0], row[2]) for row in after] == [("a", T0), ("b", replay_at)]
