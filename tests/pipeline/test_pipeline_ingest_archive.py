"""Archives: content identity, hostile documents, and a feed starting beside a large import."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dockline.core.contracts import STATION_STATUS_SCHEMA, TOPIC_STATION_STATUS
from dockline.pipeline.ingest import IngestRun, ingest_archive
from dockline.pipeline.platform import Platform

T0 = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
T0_S = int(T0.timestamp())


def _log_rows(platform: Platform) -> int:
    log = platform.open_log()
    try:
        return sum(log.end_offsets(TOPIC_STATION_STATUS).values())
    finally:
        log.close()


def test_a_renamed_copy_of_an_archive_adds_no_rows(tmp_path: Path) -> None:
    archive = tmp_path / "divvy-2024" / "station_status"
    archive.mkdir(parents=True)
    minutes = np.arange(600)
    table = pa.table(
        {
            "station_id": pa.array([f"s{i % 20}" for i in minutes]),
            "obs_ts": pa.array(
                [T0 + timedelta(minutes=int(m // 20)) for m in minutes],
                pa.timestamp("us", tz="UTC"),
            ),
            "num_bikes_available": pa.array(minutes % 9, pa.int32()),
            "num_docks_available": pa.array(minutes % 7, pa.int32()),
        }
    )
    pq.write_table(table.slice(0, 300), archive / "2024-05-a.parquet")
    pq.write_table(table.slice(300), archive / "2024-05-b.parquet")
    platform = Platform.open(tmp_path / "data")
    first = ingest_archive(platform, archive.parent)
    assert first.accepted == 600 and _log_rows(platform) == 600
    copy = tmp_path / "renamed"
    shutil.copytree(archive.parent, copy)
    again = ingest_archive(platform, copy)
    assert again.source != first.source
    assert again.accepted == 0 and again.rejected == 0
    assert (again.skipped_documents, again.skipped_records, again.received) == (2, 600, 600)
    assert _log_rows(platform) == 600


def _doc(stations: str, last_updated: int) -> bytes:
    head = f'{{"last_updated": {last_updated}, "ttl": 60, "version": "2.3", "data": '
    return (head + f'{{"stations": {stations}}}}}').encode()


def _station(sid: str, bikes: str = "3") -> str:
    return (
        orjson.dumps(
            {
                "station_id": sid,
                "num_docks_available": 5,
                "is_installed": True,
                "is_renting": True,
                "is_returning": True,
                "last_reported": T0_S - 30,
            }
        ).decode()[:-1]
        + f', "num_bikes_available": {bikes}}}'
    )


def test_hostile_documents_are_dead_letters_and_the_others_are_accepted(tmp_path: Path) -> None:
    archive = tmp_path / "gbfs"
    archive.mkdir()
    (archive / "station_status_1.json").write_bytes(_doc(f"[{_station('a')}]", T0_S))
    deep = "[" * 100_000 + "]" * 100_000
    (archive / "station_status_2.json").write_bytes(
        _doc(f'[{_station("b")[:-1]}, "x": {deep}}}]', T0_S + 60)
    )
    twice = _doc(f"[{_station('c')}]", T0_S + 120)[:-1] + b', "data": {"stations": []}}'
    (archive / "station_status_3.json").write_bytes(twice)
    bad_number = f"[{_station('d', '1e999')}, {_station('e', '123456789012345678901234567890')}"
    bad_number += f", {_station('f')}]"
    (archive / "station_status_4.json").write_bytes(_doc(bad_number, T0_S + 180))
    platform = Platform.open(tmp_path / "data")
    summary = ingest_archive(platform, archive)
    assert summary.accepted == 2  # a and f
    assert summary.dead_letters == {"malformed": 2, "bad_type": 1, "bad_value": 1}
    store = platform.open_deadletters()
    try:
        details = {letter.detail for letter in store.pending(reason="malformed")}
        keys = {letter.key for letter in store.pending() if letter.reason != "malformed"}
    finally:
        store.close()
    assert any("depth" in d for d in details)
    assert any("'data' more than once" in d for d in details)
    assert keys == {"d", "e"}


def _big_table(rows: int, source: str) -> pa.Table:
    stations = 300
    idx = np.arange(rows)
    event = (T0_S * 1_000_000 + (idx // stations) * 60_000_000).astype("datetime64[us]")
    return pa.Table.from_arrays(
        [
            pa.array([f"s{i}" for i in range(stations)] * (rows // stations)),
            pa.array(event, STATION_STATUS_SCHEMA.field("event_ts").type),
            pa.array(event, STATION_STATUS_SCHEMA.field("ingested_at").type),
            pa.array((idx % 11).astype(np.int32)),
            pa.array((idx % 13).astype(np.int32)),
            pa.array(np.full(rows, 20, np.int32)),
            pa.array(np.ones(rows, bool)),
            pa.array(np.ones(rows, bool)),
            pa.array(np.ones(rows, bool)),
            pa.array([source] * rows),
        ],
        schema=STATION_STATUS_SCHEMA,
    )


def _feed_doc(minute: int) -> bytes:
    stations = [
        {
            "station_id": f"f{i}",
            "num_bikes_available": 2,
            "num_docks_available": 5,
            "is_installed": True,
            "is_renting": True,
            "is_returning": True,
            "last_reported": T0_S + 60 * minute,
        }
        for i in range(5)
    ]
    return orjson.dumps(
        {"last_updated": T0_S + 60 * minute, "ttl": 60, "data": {"stations": stations}}
    )


def test_a_feed_starts_fast_after_a_large_import(tmp_path: Path) -> None:
    platform = Platform.open(tmp_path)
    feed = IngestRun(platform, "gbfs:f", platform.open_log(), platform.open_deadletters())
    try:
        for minute in range(3):
            feed.commit_status(
                feed.normalizer.normalize_document(
                    _feed_doc(minute),
                    ingested_at=T0 + timedelta(minutes=minute, seconds=5),
                    batch_id=str(minute),
                )
            )
    finally:
        feed.close()
    log = platform.open_log()
    try:  # a large import of another source after the feed stopped
        big = _big_table(300_000, "archive:big")
        for _ in range(16):
            log.append(TOPIC_STATION_STATUS, big, key="station_id")
        started = time.perf_counter()
        for partition, end in log.end_offsets(TOPIC_STATION_STATUS).items():
            offset = 0
            while offset < end:
                offset += log.read(TOPIC_STATION_STATUS, partition, offset, 500_000).num_rows
        full_scan = time.perf_counter() - started
    finally:
        log.close()

    for source in ("gbfs:new", "gbfs:f"):  # a new source, and the feed restarting
        started = time.perf_counter()
        run = IngestRun(platform, source, platform.open_log(), platform.open_deadletters())
        elapsed = time.perf_counter() - started
        try:
            assert elapsed < full_scan / 2, (source, elapsed, full_scan)
            if source == "gbfs:f":  # its state is exact: the last document again is unchanged
                batch = run.normalizer.normalize_document(
                    _feed_doc(2), ingested_at=T0 + timedelta(minutes=3), batch_id="again"
                )
                assert batch.unchanged == 5 and batch.dead_letters == []
        finally:
            run.close()
