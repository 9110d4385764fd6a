"""Dead letters: what was rejected, why, and re-ingesting it after a fix.

Replay re-validates each pending dead letter with the *current* code and config under its
source's producer (so its state — watermarks, duplicates — is respected and updated
atomically). Letters that now pass are appended to the log and marked replayed; letters that
fail again stay pending with their original reason. Run it while that source's ingester is
stopped: two producers of one source would race on its state.

A replayed record is judged as of when it was first received (its letter's ``ingested_at``:
``stale``/``future`` compare with that), but it is appended with the replay's ``ingested_at``:
dockline learns it now, so a training set built for an earlier ``as_of`` does not change.
A letter whose raw payload is not a JSON object (a document that was not JSON, or nested
beyond the parser's limit) cannot be replayed; it is counted as ``not_replayable`` and stays
pending.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pyarrow as pa

from dockline.core.contracts import TOPIC_STATION_STATUS, TS_TYPE, DeadLetter
from dockline.core.time import to_micros
from dockline.pipeline.ingest import IngestRun
from dockline.pipeline.platform import Platform

__all__ = ["replay_dead_letters", "summarize_dead_letters"]


def _letter_dict(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "source": letter.source,
        "reason": str(letter.reason),
        "detail": letter.detail,
        "key": letter.key,
        "event_ts": letter.event_ts.isoformat() if letter.event_ts else None,
        "ingested_at": letter.ingested_at.isoformat(),
        "raw": letter.raw.decode("utf-8", errors="replace"),
    }


def summarize_dead_letters(
    platform: Platform, *, reason: str | None = None, examples: int = 2
) -> dict[str, Any]:
    """Counts by reason (all and pending) with a few examples of each."""
    store = platform.open_deadletters()
    try:
        counts = store.counts()
        pending = store.counts(pending_only=True)
        if reason is not None:
            counts = {k: v for k, v in counts.items() if k == reason}
            pending = {k: v for k, v in pending.items() if k == reason}
        return {
            "counts": counts,
            "pending": pending,
            "total": sum(counts.values()),
            "examples": {
                why: [_letter_dict(letter) for letter in store.examples(why, examples)]
                for why in sorted(counts)
            },
        }
    finally:
        store.close()


def _is_tabular(raw: dict[str, Any]) -> bool:
    """Archive rows carry normalized column names; feed records carry GBFS field names."""
    return "event_ts" in raw and "last_reported" not in raw


def replay_dead_letters(platform: Platform, *, reason: str | None = None) -> dict[str, int]:
    """Re-ingest pending ``station_status`` dead letters; returns counts of what happened."""
    store = platform.open_deadletters()
    try:
        by_source: dict[str, list[DeadLetter]] = defaultdict(list)
        for letter in store.pending(reason=reason):
            if letter.topic == TOPIC_STATION_STATUS:
                by_source[letter.source].append(letter)
    finally:
        store.close()
    result = {"replayed": 0, "accepted": 0, "still_rejected": 0, "not_replayable": 0}
    for source, letters in sorted(by_source.items()):
        accepted_ids, unreadable = _replay_source(platform, source, letters)
        result["replayed"] += len(letters) - unreadable
        result["accepted"] += len(accepted_ids)
        result["still_rejected"] += len(letters) - unreadable - len(accepted_ids)
        result["not_replayable"] += unreadable
    return result


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _restamp(records: pa.Table, micros: int) -> pa.Table:
    """The records with ``ingested_at`` set to the replay's time."""
    column = pa.array([micros] * records.num_rows, pa.int64()).cast(TS_TYPE)
    return records.set_column(records.schema.get_field_index("ingested_at"), "ingested_at", column)


def _replay_source(
    platform: Platform, source: str, letters: list[DeadLetter]
) -> tuple[list[str], int]:
    """Replay one source's letters: the ids accepted, and how many could not be read."""
    run = IngestRun(platform, source, platform.open_log(), platform.open_deadletters())
    now = platform.clock.now()
    replayed_at = to_micros(now)
    try:
        accepted: list[str] = []
        records = [(letter, _decode(letter.raw)) for letter in letters]
        decodable = [(letter, raw) for letter, raw in records if raw is not None]
        tabular = [(letter, raw) for letter, raw in decodable if _is_tabular(raw)]
        feed = [(letter, raw) for letter, raw in decodable if not _is_tabular(raw)]
        # Letters are replayed one at a time so each keeps its own ingested_at and the result maps
        # back to its id; replays are rare and small.
        for letter, raw in feed:
            version = "3.0" if isinstance(raw.get("last_reported"), str) else "2.3"
            payload = orjson.dumps({"version": version, "data": {"stations": [raw]}})
            batch = run.normalizer.normalize_document(
                payload, ingested_at=letter.ingested_at, batch_id=f"replay:{letter.id}"
            )
            if batch.accepted.num_rows:
                run.append_replayed(_restamp(batch.accepted, replayed_at))
                accepted.append(letter.id)
        for letter, raw in tabular:
            # judged as of its first reception, like a feed record above
            row = {**raw, "ingested_at": letter.ingested_at}
            table = pa.Table.from_pylist([row])
            batch = run.normalizer.normalize_table(table, batch_id=f"replay:{letter.id}")
            if batch.accepted.num_rows:
                run.append_replayed(_restamp(batch.accepted, replayed_at))
                accepted.append(letter.id)
        run.deadletters.mark_replayed(accepted, now)
        return accepted, len(letters) - len(decodable)
    finally:
        run.close()
