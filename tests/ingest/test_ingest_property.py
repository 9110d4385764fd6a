"""Property: whatever a feed sends, every record is accounted for and accepted rows are sound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dockline.core.config import IngestConfig
from dockline.core.contracts import STATION_STATUS_SCHEMA, dead_letter_id
from dockline.core.time import from_micros, to_micros
from dockline.ingest import StationStatusNormalizer

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
CFG = IngestConfig()
FIELDS = [
    "station_id",
    "num_bikes_available",
    "num_docks_available",
    "is_installed",
    "is_renting",
    "is_returning",
    "last_reported",
]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson writes
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(INT64, max_size=2),
    st.just({"a": 1}),
    st.sampled_from(["seven", "7", "", "2024-05-01T11:59:00Z", "2024-05-01T11:59:00"]),
)


@st.composite
def station(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.one_of(INT64, st.text(max_size=3), st.none()))
    offset = draw(
        st.one_of(
            st.integers(-600, 60),  # normal
            st.integers(-3 * 86_400, 3 * 3600),  # stale / late / future
        )
    )
    sid = draw(st.sampled_from(["a", "b", "c", "d", 1, 2]))
    stamp: Any = NOW_S + offset
    style = draw(st.sampled_from(["s", "ms", "rfc"]))
    if style == "ms":
        stamp = stamp * 1000
    elif style == "rfc":
        stamp = datetime.fromtimestamp(stamp, UTC).isoformat()
    rec: dict[str, Any] = {
        "station_id": sid,
        "num_bikes_available": draw(st.integers(0, 40)),
        "num_docks_available": draw(st.integers(0, 40)),
        "is_installed": draw(st.sampled_from([True, False, 0, 1])),
        "is_renting": draw(st.booleans()),
        "is_returning": draw(st.booleans()),
        "last_reported": stamp,
    }
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            rec.pop(name, None)
        else:
            rec[name] = draw(JUNK)
    return rec


documents = st.lists(
    st.tuples(
        st.lists(station(), max_size=12),
        st.integers(0, 600),  # seconds after NOW the document is ingested
        st.sampled_from(["2.3", "3.0", "1.1"]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(documents)
def test_accounting_is_exact_and_accepted_rows_are_sound(docs: list[Any]) -> None:
    norm = StationStatusNormalizer("prop", CFG)
    accepted_keys: set[tuple[str, datetime]] = set()
    newest: dict[str, datetime] = {}
    total = 0
    for number, (stations, delay, version) in enumerate(docs):
        if version == "3.0":
            for rec in stations:
                if isinstance(rec, dict) and "num_bikes_available" in rec:
                    rec["num_vehicles_available"] = rec.pop("num_bikes_available")
        payload = orjson.dumps(
            {"last_updated": NOW_S, "ttl": 0, "version": version, "data": {"stations": stations}}
        )
        at = NOW + timedelta(seconds=delay)
        batch_id = f"doc{number}"
        batch = norm.normalize_document(payload, ingested_at=at, batch_id=batch_id)
        total += len(stations)
        assert batch.received == len(stations)
        assert batch.accepted.num_rows + batch.unchanged + len(batch.dead_letters) == len(stations)
        assert batch.accepted.schema == STATION_STATUS_SCHEMA
        ids = [d.id for d in batch.dead_letters]
        assert len(set(ids)) == len(ids)
        assert set(ids) <= {dead_letter_id("prop", batch_id, i) for i in range(len(stations))}
        for letter in batch.dead_letters:
            assert letter.detail and letter.raw
            assert letter.ingested_at == at
        rows = batch.accepted.to_pylist()
        assert len({r["station_id"] for r in rows}) == len(rows)  # one per station per doc
        for row in rows:
            assert row["station_id"] and isinstance(row["station_id"], str)
            assert row["num_bikes_available"] >= 0 and row["num_docks_available"] >= 0
            assert row["event_ts"].utcoffset() == timedelta(0) == row["ingested_at"].utcoffset()
            assert row["ingested_at"] == at
            assert at - CFG.stale_after <= row["event_ts"] <= at + CFG.future_tolerance
            key = (row["station_id"], row["event_ts"])
            assert key not in accepted_keys  # never accepted twice
            accepted_keys.add(key)
            sid = row["station_id"]
            if sid in newest:
                assert row["event_ts"] >= newest[sid] - CFG.allowed_lateness
            newest[sid] = max(newest.get(sid, row["event_ts"]), row["event_ts"])
    counters = norm.counters
    rejected = sum(v for k, v in counters.items() if k not in ("received", "accepted"))
    assert counters["received"] == total == counters["accepted"] + rejected
    # the state survives a round trip unchanged
    assert StationStatusNormalizer("prop", CFG, state=norm.state()).state() == norm.state()
    assert all(to_micros(from_micros(to_micros(t))) == to_micros(t) for _, t in accepted_keys)


# --- normalize_table against a row-by-row reference model -----------------------------------

import pyarrow as pa  # noqa: E402

from dockline.core.contracts import RejectReason  # noqa: E402

LATENESS = CFG.allowed_lateness


UNCHANGED = "unchanged"


Row = tuple[str, int, int, int]  # station, event time (s), bikes, ingested_at (s)


def reference(rows: list[Row]) -> list[RejectReason | str | None]:
    """Decisions computed one row at a time, in input order, straight from the definitions.

    None: accepted; UNCHANGED: the station's newest accepted event again, same values
    (counted, not a dead letter); otherwise the dead letter's reason. Batches play no part.
    """
    accepted: dict[str, dict[int, int]] = {}
    lateness = int(LATENESS.total_seconds())
    earliest, latest = CFG.plausible_from.timestamp(), CFG.plausible_until.timestamp()
    decisions: list[RejectReason | str | None] = []
    for sid, ts, bikes, ing in rows:
        events = accepted.get(sid, {})
        newest = max(events) if events else None
        within = newest is None or ts >= newest - lateness
        if within and ts in events:
            if ts != newest:
                decisions.append(RejectReason.DUPLICATE)  # an older event again
            elif events[ts] != bikes:
                decisions.append(RejectReason.CONFLICT)
            else:
                decisions.append(UNCHANGED)
        elif ts > latest or ts > ing + CFG.future_tolerance.total_seconds():
            decisions.append(RejectReason.FUTURE)
        elif ts < earliest or ts < ing - CFG.stale_after.total_seconds():
            decisions.append(RejectReason.STALE)
        elif not within:
            decisions.append(RejectReason.LATE)
        else:
            decisions.append(None)
            accepted.setdefault(sid, {})[ts] = bikes
    return decisions


table_batches = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from([-2 * 86_400, -1800, -900, -601, -600, -300, -60, 0, 60, 600, 3600]),
            st.sampled_from([1, 1, 1, 2]),  # mostly the same values: repeats, some conflicts
        ),
        max_size=15,
    ),
    min_size=1,
    max_size=3,
)


def _decide(norm: StationStatusNormalizer, rows: list[Row], batch_id: str) -> list[object]:
    table = pa.table(
        {
            "station_id": pa.array([r[0] for r in rows], pa.string()),
            "event_ts": pa.array([r[1] for r in rows], pa.int64()),
            "ingested_at": pa.array([r[3] * 1_000_000 for r in rows], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "num_bikes_available": pa.array([r[2] for r in rows], pa.int32()),
            "num_docks_available": pa.array([1] * len(rows), pa.int32()),
        }
    )
    batch = norm.normalize_table(table, batch_id=batch_id)
    got: list[object] = [None] * len(rows)
    ids = [dead_letter_id("t", batch_id, i) for i in range(len(rows))]
    for letter in batch.dead_letters:
        got[ids.index(letter.id)] = letter.reason
    assert batch.unchanged + batch.accepted.num_rows + len(batch.dead_letters) == len(rows)
    accepted = set(
        zip(
            batch.accepted["station_id"].to_pylist(),
            batch.accepted["event_ts"].cast(pa.int64()).to_pylist(),
            strict=True,
        )
    )
    # rows without a dead letter: per key, the first is the accepted one (if any), the rest
    # are unchanged
    for i, row in enumerate(rows):
        key = (row[0], row[1] * 1_000_000)
        if got[i] is None:
            if key in accepted:
                accepted.discard(key)
            else:
                got[i] = UNCHANGED
    assert not accepted
    return got


@settings(max_examples=300, deadline=None)
@given(table_batches, st.booleans(), st.integers(min_value=1, max_value=7))
def test_normalize_table_matches_a_row_by_row_model(
    batches: list[list[tuple[str, int, int]]], sort: bool, cut: int
) -> None:
    """Any batching (and a restart between batches) gives the record-at-a-time decisions."""
    if sort:  # exercise the sorted fast path as well as the general one
        batches = [sorted(rows) for rows in batches]
    ingested = [NOW_S + 600 * i for i in range(len(batches))]
    rows: list[Row] = [
        (sid, ing + off, bikes, ing)
        for batch, ing in zip(batches, ingested, strict=True)
        for sid, off, bikes in batch
    ]
    expected = reference(rows)
    for size in (None, cut):  # the generated batches, then batches of `cut` rows
        if size is None:
            pieces, at = [], 0
            for batch in batches:
                pieces.append(rows[at : at + len(batch)])
                at += len(batch)
        else:
            pieces = [rows[i : i + size] for i in range(0, len(rows), size)]
        norm = StationStatusNormalizer("t", CFG)
        got: list[object] = []
        for number, piece in enumerate(pieces):
            if number == 1:  # a restart in the middle changes nothing
                norm = StationStatusNormalizer("t", CFG, state=norm.state())
            got += _decide(norm, piece, f"{size}-{number}")
        assert got == expected, (size, rows, got, expected)
