"""Repeats of an accepted event: unchanged, duplicate or conflict — never a silent drop.

And every new event's time must be plausible, archives included.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from dockline.core.config import IngestConfig
from dockline.core.contracts import CONFIRMATION_SCHEMA, RejectReason
from dockline.ingest import StationStatusNormalizer

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())


def _doc(*records: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"last_updated": NOW_S, "ttl": 60, "version": "2.3", "data": {"stations": records}}
    )


def _record(bikes: int, last_reported: int = NOW_S - 30) -> dict[str, Any]:
    return {
        "station_id": "s1",
        "num_bikes_available": bikes,
        "num_docks_available": 7,
        "is_installed": True,
        "is_renting": True,
        "is_returning": True,
        "last_reported": last_reported,
    }


def test_same_time_other_counts_is_a_conflict_not_unchanged() -> None:
    norm = StationStatusNormalizer("feed", IngestConfig())
    first = norm.normalize_document(_doc(_record(3)), ingested_at=NOW, batch_id="1")
    assert first.accepted.num_rows == 1
    again = norm.normalize_document(
        _doc(_record(5)), ingested_at=NOW + timedelta(minutes=1), batch_id="2"
    )
    assert again.unchanged == 0 and again.accepted.num_rows == 0
    [letter] = again.dead_letters
    assert letter.reason == RejectReason.CONFLICT
    assert "other counts or flags" in letter.detail
    assert orjson.loads(letter.raw)["num_bikes_available"] == 5
    # the same values again: unchanged, with a confirmation at this poll's ingested_at
    same = norm.normalize_document(
        _doc(_record(3)), ingested_at=NOW + timedelta(minutes=2), batch_id="3"
    )
    assert same.unchanged == 1 and same.dead_letters == []
    assert same.confirmed.schema == CONFIRMATION_SCHEMA
    assert same.confirmed.to_pylist() == [
        {
            "station_id": "s1",
            "event_ts": datetime.fromtimestamp(NOW_S - 30, UTC),
            "ingested_at": NOW + timedelta(minutes=2),
        }
    ]


def test_a_conflict_survives_a_restart() -> None:
    norm = StationStatusNormalizer("feed", IngestConfig())
    norm.normalize_document(_doc(_record(3)), ingested_at=NOW, batch_id="1")
    restarted = StationStatusNormalizer("feed", IngestConfig(), state=norm.state())
    again = restarted.normalize_document(_doc(_record(4)), ingested_at=NOW, batch_id="2")
    assert [d.reason for d in again.dead_letters] == [RejectReason.CONFLICT]


def _table(rows: list[tuple[str, int, int]]) -> pa.Table:
    return pa.table(
        {
            "station_id": [r[0] for r in rows],
            "event_ts": pa.array([r[1] for r in rows], pa.timestamp("s", tz="UTC")),
            "num_bikes_available": [r[2] for r in rows],
            "num_docks_available": [1] * len(rows),
        }
    )


def _outcomes(batch_rows: int, rows: list[tuple[str, int, int]]) -> tuple[object, ...]:
    norm = StationStatusNormalizer("archive", IngestConfig())
    table = _table(rows)
    accepted: list[object] = []
    reasons: list[object] = []
    unchanged = 0
    for start in range(0, table.num_rows, batch_rows):
        batch = norm.normalize_table(table.slice(start, batch_rows), batch_id=str(start))
        accepted += batch.accepted["event_ts"].to_pylist()
        reasons += [d.reason for d in batch.dead_letters]
        unchanged += batch.unchanged
    return accepted, reasons, unchanged


def test_classification_does_not_depend_on_batch_rows() -> None:
    t = NOW_S
    rows = [
        ("a", t, 1),
        ("a", t, 1),  # the newest again: unchanged
        ("a", t + 60, 1),
        ("a", t, 1),  # an older accepted event again: duplicate
        ("a", t + 60, 2),  # the newest with other counts: conflict
        ("b", t, 1),
        ("b", t, 1),
    ]
    whole = _outcomes(len(rows), rows)
    assert whole == _outcomes(1, rows) == _outcomes(2, rows) == _outcomes(3, rows)
    assert whole[1] == [RejectReason.DUPLICATE, RejectReason.CONFLICT]
    assert whole[2] == 2


def test_archive_times_outside_the_plausible_range_are_stale_or_future() -> None:
    table = pa.table(
        {
            "station_id": ["a", "b", "c"],
            "event_ts": pa.array(
                [
                    datetime(1, 1, 1, tzinfo=UTC),
                    datetime(9999, 12, 31, tzinfo=UTC),
                    datetime(2024, 5, 1, tzinfo=UTC),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "num_bikes_available": [1, 1, 1],
            "num_docks_available": [1, 1, 1],
        }
    )
    norm = StationStatusNormalizer("archive", IngestConfig())
    batch = norm.normalize_table(table, batch_id="x")
    assert batch.accepted["station_id"].to_pylist() == ["c"]
    assert [(d.key, d.reason) for d in batch.dead_letters] == [
        ("a", RejectReason.STALE),
        ("b", RejectReason.FUTURE),
    ]
    assert "plausible_from 2000-01-01" in batch.dead_letters[0].detail
    # the range is configurable
    wide = StationStatusNormalizer(
        "archive", IngestConfig(plausible_from=datetime(1, 1, 1, tzinfo=UTC))
    )
    assert wide.normalize_table(table, batch_id="x").accepted.num_rows == 2
