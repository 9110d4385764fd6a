"""The validator's state survives a restart through a snapshot plus the log's tail."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson

from dockline.core.time import from_micros
from dockline.pipeline.ingest import SNAPSHOT_EVERY, IngestRun
from dockline.pipeline.platform import Platform

T0 = 1_714_978_800  # 2024-05-06T07:00:00Z


def _doc(minute: int) -> bytes:
    stations = [
        {
            "station_id": f"s{i}",
            "num_bikes_available": (minute + i) % 7,
            "num_docks_available": 5,
            "is_installed": True,
            "is_renting": True,
            "is_returning": True,
            "last_reported": T0 + 60 * minute + i,
        }
        for i in range(5)
    ]
    payload = {"last_updated": T0 + 60 * minute + 10, "ttl": 60, "version": "2.3"}
    return orjson.dumps({**payload, "data": {"stations": stations}})


def _ingest(run: IngestRun, minutes: range) -> None:
    for minute in minutes:
        ingested = from_micros((T0 + 60 * minute + 10) * 1_000_000)
        batch = run.normalizer.normalize_document(
            _doc(minute), ingested_at=ingested, batch_id=f"doc-{minute}"
        )
        run.commit_status(batch)


def _open(platform: Platform) -> IngestRun:
    return IngestRun(platform, "feed", platform.open_log(), platform.open_deadletters())


def _seen(run: IngestRun) -> object:
    return msgspec.msgpack.decode(run.normalizer.state())["seen"]


def test_restart_restores_the_exact_validator_state(tmp_path: Path) -> None:
    platform = Platform.open(tmp_path)
    first = _open(platform)
    total = SNAPSHOT_EVERY + 7  # the last snapshot is 7 appends behind
    _ingest(first, range(total))
    expected = _seen(first)
    first.close()

    second = _open(platform)
    try:
        assert _seen(second) == expected
        # a re-delivered document is recognised as already accepted
        again = second.normalizer.normalize_document(
            _doc(total - 1), ingested_at=from_micros((T0 + 60 * total) * 1_000_000), batch_id="re"
        )
        assert again.accepted.num_rows == 0
        assert again.dead_letters == [] and again.unchanged == again.received > 0
        assert second.resume.batches_done == total
    finally:
        second.close()
