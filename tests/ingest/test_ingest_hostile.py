"""Hostile input at the edges: deep nesting at the client, large JSON archives streamed."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from dockline.core.config import IngestConfig
from dockline.core.contracts import RejectReason
from dockline.core.time import SystemClock
from dockline.ingest import GbfsClient, StationStatusNormalizer, iter_json_archive

DEEP = b'{"last_updated": 1714978800, "ttl": 60, "data": {"stations": [' + b"[" * 100_000
DEEP += b"]" * 100_000 + b"]}}"


def test_the_client_fetches_a_deeply_nested_document_without_recursion_error() -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gbfs.json":
            feeds = [{"name": "station_status", "url": "http://feed/status.json"}]
            return httpx.Response(200, content=orjson.dumps({"data": {"en": {"feeds": feeds}}}))
        return httpx.Response(200, content=DEEP)

    client = GbfsClient(
        "http://feed/gbfs.json", clock=SystemClock(), transport=httpx.MockTransport(serve)
    )
    with client:
        fetched = client.fetch("station_status")
    assert fetched is not None and fetched.payload == DEEP and fetched.last_updated is None


def test_a_json_archive_is_streamed_one_document_at_a_time(tmp_path: Path) -> None:
    station = {
        "station_id": "s",
        "num_bikes_available": 1,
        "num_docks_available": 1,
        "is_installed": True,
        "is_renting": True,
        "is_returning": True,
        "last_reported": 1714978800,
    }
    size = 0
    for number in range(6):
        payload = orjson.dumps(
            {
                "last_updated": 1714978800 + number,
                "data": {"stations": [station] * 40_000},
            }
        )
        (tmp_path / f"station_status_{number}.json").write_bytes(payload)
        size = len(payload)
    tracemalloc.start()
    try:
        documents = 0
        for document in iter_json_archive(tmp_path):
            documents += 1
            del document
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert documents == 6
    assert peak < 2.5 * size, (peak, size)  # all six at once would be 6 x size


def test_one_bad_number_dead_letters_only_its_record_and_keeps_its_value() -> None:
    record = (
        '{"station_id": "%s", "num_bikes_available": %s, "num_docks_available": 1,'
        ' "is_installed": 1, "is_renting": 1, "is_returning": 1, "last_reported": 1714978770}'
    )
    records = [record % ("a", "1e999"), record % ("b", "1" * 30), record % ("c", "NaN")]
    records.append(record % ("ok", "4"))
    payload = b'{"last_updated": 1714978800, "ttl": 60, "version": "2.3", "data": {"stations": ['
    payload += ", ".join(records).encode() + b"]}}"
    norm = StationStatusNormalizer("feed", IngestConfig())
    batch = norm.normalize_document(
        payload, ingested_at=datetime(2024, 5, 6, 7, 0, tzinfo=UTC), batch_id="x"
    )
    assert batch.accepted["station_id"].to_pylist() == ["ok"]
    letters = {letter.key: letter for letter in batch.dead_letters}
    assert {k: v.reason for k, v in letters.items()} == {
        "a": RejectReason.BAD_TYPE,
        "b": RejectReason.BAD_VALUE,
        "c": RejectReason.BAD_TYPE,
    }
    assert b"Infinity" in letters["a"].raw and b"1" * 30 in letters["b"].raw
    assert b"NaN" in letters["c"].raw


def test_a_duplicate_data_key_is_malformed_not_a_silent_loss() -> None:
    payload = (
        b'{"last_updated": 1714978800, "data": {"stations": [{"station_id": "lost"}]},'
        b' "ttl": 60, "data": {"stations": []}}'
    )
    norm = StationStatusNormalizer("feed", IngestConfig())
    batch = norm.normalize_document(
        payload, ingested_at=datetime(2024, 5, 6, 7, 0, tzinfo=UTC), batch_id="x"
    )
    [letter] = batch.dead_letters
    assert letter.reason == RejectReason.MALFORMED and "'data' more than once" in letter.detail
    assert letter.raw == payload
