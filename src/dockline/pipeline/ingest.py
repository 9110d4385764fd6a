"""Ingest runs: a source (feed or archive) → validation → dead letters + event log → offline store.

Every record read is either appended to the log or stored as a dead letter with its reason; the
summary's accounting (``received == accepted + dead letters``) is checked at the end of each run.

Crash safety: a run's resume point (validator state, batches done, the newest document per feed)
is a :class:`~dockline.core.ports.ProducerState` committed atomically with each append, and dead
letters are written first with deterministic ids. A ``kill -9`` at any point followed by a restart
neither loses nor duplicates a record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core.contracts import (
    TOPIC_STATION_INFORMATION,
    TOPIC_STATION_STATUS,
    IngestSummary,
)
from dockline.core.errors import SourceError
from dockline.core.ports import OFFSET_COLUMN, DeadLetterStore, EventLog, ProducerState
from dockline.core.time import to_micros
from dockline.ingest import (
    DIVVY_MAPPING,
    Batch,
    GbfsClient,
    StationStatusNormalizer,
    iter_json_archive,
    iter_table_archive,
    normalize_information_table,
    normalize_station_information,
)
from dockline.pipeline.platform import Platform
from dockline.store.offline import OfflineSink, SinkReport

__all__ = ["IngestRun", "ingest_archive", "ingest_feed", "sink_offline"]

ProgressFn = Callable[[IngestSummary], None]


SNAPSHOT_EVERY = 32
"""Appends between two snapshots of the validator's state (see :class:`IngestRun`)."""


class _Resume(msgspec.Struct):
    """A producer's resume point: small, committed atomically with every append."""

    batches_done: int = 0
    newest_document: dict[str, int] = msgspec.field(default_factory=dict)  # feed → last_updated µs


class _Snapshot(msgspec.Struct):
    """The validator's state, and the log position from which later records must be replayed."""

    validator: bytes
    log_offsets: dict[int, int]


class IngestRun:
    """One producer writing one source into the log: validation state plus backends.

    Station information is stored (topic ``station_information``) and fills capacities of status
    records; the run's :class:`IngestSummary` accounts for ``station_status`` records.

    Every append commits a small resume point; every :data:`SNAPSHOT_EVERY` appends (and after
    station information changes) it also commits a snapshot of the validator's per-station state
    with the log offsets it was taken at. A restart restores the snapshot and re-observes the
    source's records appended since — the log is the source of truth, as in Flink's checkpoints —
    so the large state is not rewritten for every document.
    """

    def __init__(
        self, platform: Platform, source: str, log: EventLog, deadletters: DeadLetterStore
    ) -> None:
        self.platform = platform
        self.source = source
        self.log = log
        self.deadletters = deadletters
        self.producer = f"ingest:{source}"
        self._snapshot_key = f"{self.producer}#validator"
        for topic in (TOPIC_STATION_STATUS, TOPIC_STATION_INFORMATION):
            log.create_topic(topic, platform.config.log.partitions)
        raw = log.producer_state(self.producer)
        self.resume = msgspec.msgpack.decode(raw, type=_Resume) if raw else _Resume()
        snapshot_raw = log.producer_state(self._snapshot_key)
        snapshot = msgspec.msgpack.decode(snapshot_raw, type=_Snapshot) if snapshot_raw else None
        self.normalizer = StationStatusNormalizer(
            source, platform.config.ingest, state=snapshot.validator if snapshot else None
        )
        self._replay_tail(snapshot.log_offsets if snapshot else {})
        self._appends_since_snapshot = SNAPSHOT_EVERY  # snapshot on this run's first append
        self.summary = IngestSummary(source=source)
        self.information_received = 0
        self.skipped_documents = 0
        self._stations: set[str] = set()

    def _replay_tail(self, offsets: Mapping[int, int]) -> None:
        """Re-observe this source's records appended after the snapshot was taken."""
        chunk = self.platform.config.offline.read_batch
        for partition, end in self.log.end_offsets(TOPIC_STATION_STATUS).items():
            offset = offsets.get(partition, 0)
            while offset < end:
                records = self.log.read(TOPIC_STATION_STATUS, partition, offset, chunk)
                if not records.num_rows:
                    break
                offset = int(records[OFFSET_COLUMN][-1].as_py()) + 1
                mine = records.filter(pc.equal(records["source"], self.source))
                self.normalizer.observe(mine)

    def commit_status(self, batch: Batch) -> None:
        """Store the batch's dead letters, then append its records with the resume point."""
        self.deadletters.add(batch.dead_letters)
        self._advance(TOPIC_STATION_STATUS, batch.last_updated)
        self.log.append(
            TOPIC_STATION_STATUS, batch.accepted, key="station_id", state=self._states()
        )
        self.summary.received += batch.received
        self.summary.accepted += batch.accepted.num_rows
        self.summary.unchanged += batch.unchanged
        self.summary.documents += 1
        self.summary.add_rejections(batch.dead_letters)
        if batch.accepted.num_rows:
            self._stations.update(pc.unique(batch.accepted["station_id"]).to_pylist())
            self.summary.stations = len(self._stations)

    def commit_information(self, batch: Batch) -> None:
        """Store station information; its capacities fill status records that lack them."""
        self.deadletters.add(batch.dead_letters)
        if batch.accepted.num_rows:
            self.normalizer.update_information(batch.accepted)
            self._appends_since_snapshot = SNAPSHOT_EVERY  # capacities live in the snapshot
        self._advance(TOPIC_STATION_INFORMATION, batch.last_updated)
        self.log.append(
            TOPIC_STATION_INFORMATION, batch.accepted, key="station_id", state=self._states()
        )
        self.information_received += batch.received

    def append_replayed(self, records: pa.Table) -> None:
        """Append records re-ingested from dead letters, with the updated validator state."""
        self._appends_since_snapshot = SNAPSHOT_EVERY
        self.log.append(TOPIC_STATION_STATUS, records, key="station_id", state=self._states())

    def is_new_document(self, feed: str, last_updated: datetime | None) -> bool:
        """False for a document no newer than one already committed (a re-fetch after restart)."""
        if last_updated is None:
            return True
        return to_micros(last_updated) > self.resume.newest_document.get(feed, -(2**62))

    def _advance(self, feed: str, last_updated: datetime | None) -> None:
        self.resume.batches_done += 1
        if last_updated is not None:
            self.resume.newest_document[feed] = to_micros(last_updated)

    def _states(self) -> list[ProducerState]:
        states = [ProducerState(self.producer, msgspec.msgpack.encode(self.resume))]
        self._appends_since_snapshot += 1
        if self._appends_since_snapshot >= SNAPSHOT_EVERY:
            # offsets before this append: replaying from them re-observes this batch too, which
            # is harmless (observing is idempotent) and keeps the snapshot's position simple
            snapshot = _Snapshot(
                validator=self.normalizer.state(),
                log_offsets=self.log.end_offsets(TOPIC_STATION_STATUS),
            )
            states.append(ProducerState(self._snapshot_key, msgspec.msgpack.encode(snapshot)))
            self._appends_since_snapshot = 0
        return states

    def close(self) -> None:
        """Close the backends."""
        self.log.close()
        self.deadletters.close()


def _open_run(platform: Platform, source: str) -> IngestRun:
    return IngestRun(platform, source, platform.open_log(), platform.open_deadletters())


def ingest_archive(
    platform: Platform,
    path: str | Path,
    *,
    source: str | None = None,
    mapping: Mapping[str, str] | None = None,
    on_progress: ProgressFn | None = None,
) -> IngestSummary:
    """Import an archive: a directory of GBFS JSON documents, or Parquet/CSV histories.

    A directory with ``station_status/`` (the Divvy layout, and ``dockline sim archive``'s)
    reads status from there and ``station_information.parquet`` beside it. Re-running an import
    that was interrupted resumes after the last committed batch.
    """
    root = Path(path)
    if not root.exists():
        raise SourceError("archive does not exist", where=str(root))
    name = source or f"archive:{root.resolve().name}"
    run = _open_run(platform, name)
    started = time.perf_counter()
    try:
        done = run.resume.batches_done
        for index, (topic, batch) in enumerate(_archive_batches(root, run, mapping)):
            if index < done:
                continue  # committed before an interruption
            if topic == TOPIC_STATION_INFORMATION:
                run.commit_information(batch())
            else:
                run.commit_status(batch())
            if on_progress is not None:
                on_progress(run.summary)
        run.summary.seconds = time.perf_counter() - started
        run.summary.check_accounting()
        # -- lineage: an OpenLineage run event (never fails the ingest) --
        from dockline.pipeline.lineage import record_ingest

        record_ingest(platform, run.summary)
        # -- end lineage --
        return run.summary
    finally:
        run.close()


def _archive_batches(
    root: Path, run: IngestRun, mapping: Mapping[str, str] | None
) -> Iterator[tuple[str, Callable[[], Batch]]]:
    """The archive's batches in a deterministic order; each is normalized only when called.

    Deferring normalization lets a resumed import skip committed batches without re-validating
    them (which would wrongly see their records as duplicates of themselves).
    """
    config = run.platform.config.ingest
    normalizer = run.normalizer
    is_json = root.suffix.lower() == ".json" if root.is_file() else any(root.rglob("*.json"))
    if is_json:
        for doc in iter_json_archive(root, publication_delay=config.publication_delay):
            if doc.kind == TOPIC_STATION_INFORMATION:
                yield (
                    TOPIC_STATION_INFORMATION,
                    lambda doc=doc: normalize_station_information(  # type: ignore[misc]
                        doc.payload,
                        source=run.source,
                        ingested_at=doc.ingested_at,
                        batch_id=doc.batch_id,
                    ),
                )
            else:
                yield (
                    TOPIC_STATION_STATUS,
                    lambda doc=doc: normalizer.normalize_document(  # type: ignore[misc]
                        doc.payload, ingested_at=doc.ingested_at, batch_id=doc.batch_id
                    ),
                )
        return
    status_dir = root / "station_status"
    info_file = root / "station_information.parquet"
    if status_dir.is_dir() and info_file.is_file():
        yield (
            TOPIC_STATION_INFORMATION,
            lambda: normalize_information_table(
                pq.read_table(info_file),
                source=run.source,
                batch_id=info_file.name,
                publication_delay=config.publication_delay,
            ),
        )
    tables = status_dir if status_dir.is_dir() else root
    for batch_id, table in iter_table_archive(
        tables, mapping or DIVVY_MAPPING, batch_rows=config.batch_rows
    ):
        yield (
            TOPIC_STATION_STATUS,
            lambda t=table, b=batch_id: normalizer.normalize_table(  # type: ignore[misc]
                t, batch_id=b
            ),
        )


def sink_offline(
    platform: Platform, *, progress: Callable[[int], None] | None = None
) -> dict[str, SinkReport]:
    """Run the offline sink once per topic: everything in the log lands in Parquet."""
    log = platform.open_log()
    try:
        store = platform.open_offline()
        reports: dict[str, SinkReport] = {}
        for topic in (TOPIC_STATION_INFORMATION, TOPIC_STATION_STATUS):
            log.create_topic(topic, platform.config.log.partitions)
            sink = OfflineSink(
                log, store, topic=topic, read_batch=platform.config.offline.read_batch
            )
            reports[topic] = sink.run_once(progress)
        return reports
    finally:
        log.close()


def _feed_source_name(client: GbfsClient, url: str) -> str:
    """``gbfs:<system_id>`` from system_information when published, else ``gbfs:<host>``."""
    feeds = client.discover().feeds
    if "system_information" in feeds:
        fetched = client.fetch("system_information")
        if fetched is not None:
            try:
                system_id = orjson.loads(fetched.payload)["data"]["system_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                system_id = None
            if isinstance(system_id, str) and system_id:
                return f"gbfs:{system_id}"
    return f"gbfs:{urlsplit(url).netloc}"


def ingest_feed(
    platform: Platform,
    url: str,
    *,
    source: str | None = None,
    duration: timedelta | None = None,
    stop: Callable[[], bool] | None = None,
    clock_source: Literal["local", "feed"] = "local",
    sink_every: timedelta | None = timedelta(minutes=1),
    on_progress: ProgressFn | None = None,
) -> IngestSummary:
    """Follow a live GBFS feed (auto-discovery from ``url``) until ``duration`` or ``stop()``.

    ``clock_source="feed"`` stamps ``ingested_at`` with the feed's clock (our simulator's
    ``X-Dockline-Clock``) — for simulated cities running faster than real time. The offline
    store is brought up to date every ``sink_every`` of real time.
    """
    deadline = None if duration is None else time.monotonic() + duration.total_seconds()

    def finished() -> bool:
        if stop is not None and stop():
            return True
        return deadline is not None and time.monotonic() >= deadline

    started = time.perf_counter()
    with GbfsClient(url, clock=platform.clock, clock_source=clock_source) as client:
        name = source or _feed_source_name(client, url)
        run = _open_run(platform, name)
        try:
            last_sink = time.monotonic()
            for fetched in client.poll(until=finished):
                feed = (
                    TOPIC_STATION_INFORMATION
                    if fetched.name == TOPIC_STATION_INFORMATION
                    else TOPIC_STATION_STATUS
                )
                if not run.is_new_document(feed, fetched.last_updated):
                    run.skipped_documents += 1  # already committed before a restart
                    continue
                batch_id = (
                    f"{fetched.name}@{(fetched.last_updated or fetched.ingested_at).isoformat()}"
                )
                if feed == TOPIC_STATION_INFORMATION:
                    run.commit_information(
                        normalize_station_information(
                            fetched.payload,
                            source=run.source,
                            ingested_at=fetched.ingested_at,
                            batch_id=batch_id,
                        )
                    )
                else:
                    run.commit_status(
                        run.normalizer.normalize_document(
                            fetched.payload, ingested_at=fetched.ingested_at, batch_id=batch_id
                        )
                    )
                if on_progress is not None:
                    on_progress(run.summary)
                if (
                    sink_every is not None
                    and time.monotonic() - last_sink >= sink_every.total_seconds()
                ):
                    sink_offline(run.platform)
                    last_sink = time.monotonic()
            run.summary.seconds = time.perf_counter() - started
            run.summary.check_accounting()
            # -- lineage: an OpenLineage run event (never fails the ingest) --
            from dockline.pipeline.lineage import record_ingest

            record_ingest(platform, run.summary)
            # -- end lineage --
            return run.summary
        finally:
            run.close()
