"""StationStatusNormalizer on crafted documents: every reject reason, coercions, state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pytest

from dockline.core.config import IngestConfig
from dockline.core.contracts import (
    STATION_INFORMATION_SCHEMA,
    STATION_STATUS_SCHEMA,
    RejectReason,
    dead_letter_id,
)
from dockline.core.errors import ConfigError, ContractError, ValidationError
from dockline.ingest import (
    Batch,
    StationStatusNormalizer,
    map_columns,
    normalize_station_information,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
CFG = IngestConfig()


def record(sid: Any = "s1", **overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "station_id": sid,
        "num_bikes_available": 3,
        "num_docks_available": 7,
        "is_installed": True,
        "is_renting": True,
        "is_returning": True,
        "last_reported": NOW_S - 30,
    }
    for key, value in overrides.items():
        if value is ...:
            rec.pop(key, None)
        else:
            rec[key] = value
    return rec


def doc(*records: Any, version: str | None = "2.3", last_updated: Any = NOW_S) -> bytes:
    body: dict[str, Any] = {
        "last_updated": last_updated,
        "ttl": 60,
        "data": {"stations": list(records)},
    }
    if version is not None:
        body["version"] = version
    return orjson.dumps(body)


def run(
    payload: bytes,
    norm: StationStatusNormalizer | None = None,
    *,
    at: datetime = NOW,
    batch_id: str = "b1",
) -> Batch:
    norm = norm or StationStatusNormalizer("test", CFG)
    batch = norm.normalize_document(payload, ingested_at=at, batch_id=batch_id)
    assert batch.received == batch.accepted.num_rows + batch.unchanged + len(batch.dead_letters)
    assert batch.accepted.schema == STATION_STATUS_SCHEMA
    return batch


def only_reason(batch: Batch) -> tuple[RejectReason, str]:
    assert batch.accepted.num_rows == 0, batch.accepted.to_pylist()
    assert len(batch.dead_letters) == 1
    letter = batch.dead_letters[0]
    return letter.reason, letter.detail


def test_clean_document_is_accepted_with_utc_microsecond_times() -> None:
    batch = run(doc(record("a"), record("b", last_reported=NOW_S - 5)))
    rows = batch.accepted.to_pylist()
    assert [r["station_id"] for r in rows] == ["a", "b"]
    assert rows[1]["event_ts"] == NOW - timedelta(seconds=5)
    assert rows[0]["ingested_at"] == NOW
    assert all(r["event_ts"].utcoffset() == timedelta(0) for r in rows)
    assert rows[0]["source"] == "test"
    assert rows[0]["capacity"] is None
    assert batch.version == "2.3" and batch.ttl == 60 and batch.last_updated == NOW


@pytest.mark.parametrize(
    ("rec", "reason", "fragment"),
    [
        (
            record(num_docks_available=...),
            RejectReason.MISSING_FIELD,
            "num_docks_available is missing",
        ),
        (record(station_id=...), RejectReason.MISSING_FIELD, "station_id is missing"),
        (record(last_reported=...), RejectReason.MISSING_FIELD, "last_reported is missing"),
        (record(is_renting=...), RejectReason.MISSING_FIELD, "is_renting is missing"),
        (record(num_bikes_available=None), RejectReason.MISSING_FIELD, "num_bikes_available"),
        (
            record(num_bikes_available="seven"),
            RejectReason.BAD_TYPE,
            "num_bikes_available must be an integer; got 'seven'",
        ),
        (record(num_bikes_available="7"), RejectReason.BAD_TYPE, "got '7'"),
        (record(num_bikes_available=2.5), RejectReason.BAD_TYPE, "got 2.5"),
        (record(num_docks_available=[1]), RejectReason.BAD_TYPE, "num_docks_available"),
        (record(num_bikes_available=True), RejectReason.BAD_TYPE, "got True"),
        (record(is_renting="yes"), RejectReason.BAD_TYPE, "is_renting must be a boolean or 0/1"),
        (record(is_installed=2), RejectReason.BAD_TYPE, "got 2"),
        (record(station_id=1.5), RejectReason.BAD_TYPE, "station_id"),
        (record(last_reported=[1]), RejectReason.BAD_TYPE, "last_reported"),
        (record(num_bikes_available=-1), RejectReason.NEGATIVE_COUNT, "must be >= 0; got -1"),
        (record(num_docks_available=-4), RejectReason.NEGATIVE_COUNT, "num_docks_available"),
        (record(station_id=""), RejectReason.BAD_VALUE, "station_id must not be empty"),
        (record(last_reported="yesterday"), RejectReason.BAD_VALUE, "last_reported"),
        (record(last_reported="2024-05-01T11:59:00"), RejectReason.BAD_VALUE, "UTC offset"),
        (record(num_bikes_available=2**40), RejectReason.BAD_VALUE, "32 bits"),
        (record(last_reported=86_400), RejectReason.STALE, "1970-01-02T00:00:00+00:00 is 54 years"),
        (record(last_reported=NOW_S + 7200), RejectReason.FUTURE, "is 2 hours after ingested_at"),
    ],
)
def test_each_reject_reason(rec: dict[str, Any], reason: RejectReason, fragment: str) -> None:
    got, detail = only_reason(run(doc(rec)))
    assert got == reason
    assert fragment in detail


def test_stale_detail_reads_like_a_sentence() -> None:
    _, detail = only_reason(run(doc(record(last_reported=86_400))))
    assert detail == (
        "last_reported 1970-01-02T00:00:00+00:00 is 54 years before ingested_at (stale_after 1 day)"
    )


def test_stateless_reasons_have_a_fixed_priority() -> None:
    # missing beats bad type beats negative beats bad value, whatever the field order
    rec = record(num_bikes_available=-1, is_renting="yes", num_docks_available=...)
    assert only_reason(run(doc(rec)))[0] == RejectReason.MISSING_FIELD
    rec = record(num_bikes_available=-1, is_renting="yes")
    assert only_reason(run(doc(rec)))[0] == RejectReason.BAD_TYPE
    rec = record(num_bikes_available=-1, station_id="")
    assert only_reason(run(doc(rec)))[0] == RejectReason.NEGATIVE_COUNT


def test_dead_letter_fields() -> None:
    bad = record("s9", num_bikes_available="seven")
    batch = run(doc(record("s1"), bad), batch_id="doc-7")
    (letter,) = batch.dead_letters
    assert letter.id == dead_letter_id("test", "doc-7", 1)
    assert letter.raw == orjson.dumps(bad)
    assert letter.key == "s9"
    assert letter.event_ts == NOW - timedelta(seconds=30)
    assert letter.ingested_at == NOW
    assert letter.topic == "station_status" and letter.source == "test"
    # unreadable key and time stay None
    batch = run(doc(record(station_id=..., last_reported="nope")))
    assert batch.dead_letters[0].key is None and batch.dead_letters[0].event_ts is None


def test_non_object_records_are_bad_type() -> None:
    batch = run(doc(record("a"), 42, "x"))
    assert batch.accepted.num_rows == 1
    assert [d.reason for d in batch.dead_letters] == [RejectReason.BAD_TYPE] * 2
    assert batch.dead_letters[0].raw == b"42"


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"data": {}}', b'{"data": {"stations": {}}}', b""],
)
def test_malformed_documents(payload: bytes) -> None:
    norm = StationStatusNormalizer("test", CFG)
    batch = run(payload, norm)
    assert batch.received == 1
    assert only_reason(batch)[0] == RejectReason.MALFORMED
    assert batch.dead_letters[0].raw == payload
    assert norm.counters["malformed"] == 1 and norm.counters["received"] == 1


def test_station_information_document_is_not_a_status_document() -> None:
    info = orjson.dumps(
        {
            "last_updated": NOW_S,
            "ttl": 0,
            "data": {"stations": [{"station_id": "a", "lat": 1.0, "lon": 2.0}]},
        }
    )
    assert only_reason(run(info))[0] == RejectReason.MALFORMED


def test_coercions_numeric_ids_ms_timestamps_01_flags() -> None:
    rec = record(
        1001, last_reported=(NOW_S - 10) * 1000, is_renting=0, is_returning=1, is_installed=1
    )
    rows = run(doc(rec)).accepted.to_pylist()
    assert rows[0]["station_id"] == "1001"
    assert rows[0]["event_ts"] == NOW - timedelta(seconds=10)
    assert (rows[0]["is_renting"], rows[0]["is_returning"], rows[0]["is_installed"]) == (
        False,
        True,
        True,
    )


def test_integral_floats_are_counts_but_fractions_are_not() -> None:
    assert run(doc(record(num_bikes_available=4.0))).accepted[
        "num_bikes_available"
    ].to_pylist() == [4]


def test_v3_document_rfc3339_times_and_vehicles() -> None:
    rec = record("a", last_reported="2024-05-01T13:59:30+02:00", num_vehicles_available=5)
    del rec["num_bikes_available"]
    batch = run(doc(rec, version="3.0", last_updated="2024-05-01T12:00:00Z"))
    row = batch.accepted.to_pylist()[0]
    assert row["event_ts"] == NOW - timedelta(seconds=30)
    assert row["num_bikes_available"] == 5
    assert batch.last_updated == NOW and batch.version == "3.0"


def test_v3_fractional_seconds_and_mixed_fallback() -> None:
    rec1 = record("a", last_reported="2024-05-01T11:59:30.250Z", num_vehicles_available=1)
    rec2 = record("b", last_reported=NOW_S - 20, num_vehicles_available=1)  # a number in v3: ok
    rows = run(doc(rec1, rec2, version="3.0")).accepted.to_pylist()
    assert rows[0]["event_ts"] == NOW - timedelta(seconds=29, microseconds=750_000)
    assert rows[1]["event_ts"] == NOW - timedelta(seconds=20)


def test_vehicle_type_counts_are_not_required_to_sum() -> None:
    rec = record(vehicle_types_available=[{"vehicle_type_id": "x", "count": 99}])
    assert run(doc(rec)).accepted["num_bikes_available"].to_pylist() == [3]


def test_flags_required_in_v2_but_default_true_in_v1() -> None:
    rec = record(is_installed=..., is_renting=..., is_returning=...)
    assert only_reason(run(doc(rec, version="2.3")))[0] == RejectReason.MISSING_FIELD
    for version in ("1.1", None):
        rows = run(doc(rec, version=version)).accepted.to_pylist()
        assert rows[0]["is_installed"] and rows[0]["is_renting"] and rows[0]["is_returning"]


def test_duplicates_in_one_document_keep_the_newest() -> None:
    older = record("a", last_reported=NOW_S - 90, num_bikes_available=1)
    newer = record("a", last_reported=NOW_S - 30, num_bikes_available=2)
    batch = run(doc(older, newer, record("b")))
    assert batch.accepted.num_rows == 2
    assert batch.accepted.to_pylist()[0]["num_bikes_available"] == 2
    (letter,) = batch.dead_letters
    assert letter.reason == RejectReason.DUPLICATE and letter.raw == orjson.dumps(older)
    assert "kept the newest" in letter.detail


def test_identical_copies_keep_the_first() -> None:
    copy = record("a")
    batch = run(doc(copy, record("b"), copy))
    assert batch.accepted["station_id"].to_pylist() == ["a", "b"]
    assert [(d.reason, d.id) for d in batch.dead_letters] == [
        (RejectReason.DUPLICATE, dead_letter_id("test", "b1", 2))
    ]


def test_a_station_that_has_not_reported_since_the_last_poll_is_unchanged() -> None:
    # A live feed repeats every station on every poll; most have not reported anew. Those
    # records are already stored: counted, not appended again, and not dead letters.
    norm = StationStatusNormalizer("test", CFG)
    run(doc(record("a"), record("b")), norm)
    later = NOW + timedelta(minutes=1)
    batch = run(doc(record("a"), record("b", last_reported=NOW_S + 30)), norm, at=later)
    assert batch.accepted["station_id"].to_pylist() == ["b"]
    assert batch.dead_letters == []
    assert batch.unchanged == 1 and batch.received == 2
    assert norm.counters["unchanged"] == 1 and norm.counters["duplicate"] == 0
    # the same after a restart from the saved state
    restored = StationStatusNormalizer("test", CFG, state=norm.state())
    again = run(doc(record("a"), record("b", last_reported=NOW_S + 30)), restored, at=later)
    assert again.accepted.num_rows == 0 and again.dead_letters == [] and again.unchanged == 2
    assert restored.counters["unchanged"] == 3


def test_a_repeat_of_an_older_accepted_event_is_a_duplicate() -> None:
    norm = StationStatusNormalizer("test", CFG)
    run(doc(record("a", last_reported=NOW_S - 60)), norm)
    run(doc(record("a", last_reported=NOW_S)), norm)
    batch = run(doc(record("a", last_reported=NOW_S - 60)), norm)
    (letter,) = batch.dead_letters
    assert letter.reason == RejectReason.DUPLICATE
    assert "already has an accepted event" in letter.detail
    assert batch.unchanged == 0


def test_out_of_order_within_lateness_is_accepted_but_late_is_not() -> None:
    norm = StationStatusNormalizer("test", CFG)  # allowed lateness 10 minutes
    run(doc(record("a", last_reported=NOW_S)), norm)
    batch = run(doc(record("a", last_reported=NOW_S - 300)), norm)
    assert batch.accepted.num_rows == 1  # 5 min behind: out of order but legal
    # an exact repeat of that out-of-order event is a duplicate, not accepted twice
    assert (
        only_reason(run(doc(record("a", last_reported=NOW_S - 300)), norm))[0]
        == RejectReason.DUPLICATE
    )
    reason, detail = only_reason(run(doc(record("a", last_reported=NOW_S - 30 * 60 - 7)), norm))
    assert reason == RejectReason.LATE
    assert "30 minutes behind station a's newest accepted event" in detail
    assert "allowed_lateness 10 minutes" in detail


def test_future_events_do_not_move_the_watermark() -> None:
    norm = StationStatusNormalizer("test", CFG)
    assert (
        only_reason(run(doc(record("a", last_reported=NOW_S + 7200)), norm))[0]
        == RejectReason.FUTURE
    )
    assert run(doc(record("a", last_reported=NOW_S - 60)), norm).accepted.num_rows == 1


def test_counters_are_cumulative() -> None:
    norm = StationStatusNormalizer("test", CFG)
    run(doc(record("a"), record("b", num_docks_available=-1)), norm)
    run(doc(record("a")), norm)
    assert norm.counters["received"] == 3
    assert norm.counters["accepted"] == 1
    assert norm.counters["negative_count"] == 1 and norm.counters["unchanged"] == 1


def test_state_round_trip_gives_the_same_decisions() -> None:
    first = StationStatusNormalizer("test", CFG)
    run(doc(record("a", last_reported=NOW_S), record("b", last_reported=NOW_S - 100)), first)
    run(doc(record("a", last_reported=NOW_S - 200)), first)
    restored = StationStatusNormalizer("test", CFG, state=first.state())
    assert restored.state() == first.state()
    assert restored.counters == first.counters
    probe = doc(
        record("a", last_reported=NOW_S),  # the watermark again: unchanged
        record("b", last_reported=NOW_S - 30 * 60),  # late
        record("c", last_reported=NOW_S),  # new station
    )
    probe2 = doc(record("a", last_reported=NOW_S - 200))  # duplicate inside the window
    for payload in (probe, probe2):
        one, two = run(payload, first), run(payload, restored)
        assert one.accepted.equals(two.accepted)
        assert [(d.reason, d.detail) for d in one.dead_letters] == [
            (d.reason, d.detail) for d in two.dead_letters
        ]
        assert one.unchanged == two.unchanged
    assert first.state() == restored.state()


def test_state_is_compact_and_bounded_by_the_lateness_window() -> None:
    norm = StationStatusNormalizer("test", CFG)
    for minute in range(120):
        at = NOW + timedelta(minutes=minute)
        run(doc(record("a", last_reported=int(at.timestamp()))), norm, at=at)
    window = msgspec.msgpack.decode(norm.state())["seen"]["a"]
    assert len(window) == 11  # the newest event and those within 10 minutes, not all 120
    assert max(window) - min(window) == 10 * 60 * 1_000_000


def test_invalid_state_is_a_contract_error() -> None:
    with pytest.raises(ContractError):
        StationStatusNormalizer("test", CFG, state=b"\x00garbage")


def test_naive_ingested_at_is_rejected() -> None:
    with pytest.raises(ValidationError):
        StationStatusNormalizer("test", CFG).normalize_document(
            doc(record()), ingested_at=datetime(2024, 5, 1), batch_id="b"
        )


def test_capacity_comes_from_station_information() -> None:
    info = orjson.dumps(
        {
            "last_updated": NOW_S,
            "ttl": 0,
            "version": "2.3",
            "data": {
                "stations": [
                    {"station_id": "a", "name": "A", "lat": 41.0, "lon": -87.0, "capacity": 15},
                    {"station_id": 7, "name": "B", "lat": 41.0, "lon": -87.0},
                ]
            },
        }
    )
    info_batch = normalize_station_information(info, source="test", ingested_at=NOW, batch_id="i")
    norm = StationStatusNormalizer("test", CFG)
    norm.update_information(info_batch.accepted)
    rows = run(doc(record("a"), record("7"), record("z", capacity=9)), norm).accepted.to_pylist()
    assert [r["capacity"] for r in rows] == [15, None, 9]
    # capacities survive a restart
    restored = StationStatusNormalizer("test", CFG, state=norm.state())
    rows = run(doc(record("a", last_reported=NOW_S - 1)), restored).accepted.to_pylist()
    assert rows[0]["capacity"] == 15


def test_station_information_v3_localized_names_and_rejects() -> None:
    payload = orjson.dumps(
        {
            "last_updated": "2024-05-01T12:00:00Z",
            "ttl": 0,
            "version": "3.0",
            "data": {
                "stations": [
                    {
                        "station_id": "a",
                        "name": [
                            {"text": "Gare", "language": "fr"},
                            {"text": "Station", "language": "en"},
                        ],
                        "lat": 48.8,
                        "lon": 2.3,
                        "region_id": 5,
                    },
                    {
                        "station_id": "b",
                        "name": [{"text": "Nur", "language": "de"}],
                        "lat": 1,
                        "lon": 2,
                    },
                    {"station_id": "c", "name": "X", "lat": 200.0, "lon": 2.0},
                    {"station_id": "d", "name": "X", "lon": 2.0},
                    {"station_id": "e", "name": "X", "lat": "1", "lon": 2.0},
                    {"station_id": "a", "name": "again", "lat": 1.0, "lon": 2.0},
                ]
            },
        }
    )
    batch = normalize_station_information(payload, source="s", ingested_at=NOW, batch_id="i")
    assert batch.accepted.schema == STATION_INFORMATION_SCHEMA
    rows = batch.accepted.to_pylist()
    assert [(r["station_id"], r["name"], r["region_id"]) for r in rows] == [
        ("a", "Station", "5"),
        ("b", "Nur", None),
    ]
    assert rows[0]["event_ts"] == NOW
    assert [d.reason for d in batch.dead_letters] == [
        RejectReason.BAD_VALUE,
        RejectReason.MISSING_FIELD,
        RejectReason.BAD_TYPE,
        RejectReason.DUPLICATE,
    ]
    assert batch.received == 6


def test_station_information_without_last_updated_is_malformed() -> None:
    payload = orjson.dumps({"data": {"stations": [{"station_id": "a", "lat": 1.0, "lon": 1.0}]}})
    batch = normalize_station_information(payload, source="s", ingested_at=NOW, batch_id="i")
    assert batch.received == 1 and batch.dead_letters[0].reason == RejectReason.MALFORMED


def test_map_columns() -> None:
    table = pa.table({"id": ["a"], "obs_ts": [1]})
    mapped = map_columns(table, {"obs_ts": "event_ts", "id": "station_id"})
    assert mapped.column_names == ["station_id", "event_ts"]
    with pytest.raises(ConfigError, match="'when'"):
        map_columns(table, {"when": "event_ts"})
    with pytest.raises(ConfigError, match="duplicate"):
        map_columns(table, {"obs_ts": "id"})


# Written by the normalizer at 60f80c9 (before the ingest modules were split): stations a (two
# events, newest 60 s before NOW) and b (one), a's capacity 20, and the counters of 5 records.
SAVED_STATE = bytes.fromhex(
    "85a776657273696f6e02a47365656e82a16192cf0006176327f78d00cf000617633645a900a16291cf00061763"
    "2b8b1400a67072696e747382a161cf000000060000003fa162cf0000000a0000003fa863617061636974798"
    "1a16114a8636f756e746572738da8726563656976656405a8616363657074656403a9756e6368616e676564"
    "01a96d616c666f726d656400ad6d697373696e675f6669656c6400a86261645f7479706500a96261645f7661"
    "6c756500ae6e656761746976655f636f756e7400a96475706c696361746500a8636f6e666c69637400a57374"
    "616c6500a666757475726501a46c61746500"
)


def test_a_state_saved_by_an_earlier_version_loads_byte_for_byte_and_decides_alike() -> None:
    norm = StationStatusNormalizer("feed", CFG, state=SAVED_STATE)
    assert norm.state() == SAVED_STATE
    same = run(
        doc(
            record("a", last_reported=NOW_S - 60),
            record("b", last_reported=NOW_S - 240, num_bikes_available=6),
        ),
        norm,
    )
    assert same.unchanged == 1  # a: its newest event, same values
    assert [d.reason for d in same.dead_letters] == [RejectReason.CONFLICT]  # b: other counts
    older = run(doc(record("a", last_reported=NOW_S - 300)), norm)
    assert only_reason(older)[0] is RejectReason.DUPLICATE
    late = run(doc(record("a", last_reported=NOW_S - 900)), norm)
    assert only_reason(late)[0] is RejectReason.LATE
    new = run(doc(record("a", last_reported=NOW_S)), norm)
    assert new.accepted.column("capacity").to_pylist() == [20]
    assert norm.counters["received"] == 5 + 5
