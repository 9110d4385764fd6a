"""Ingest runs: a source (feed or archive) → validation → dead letters + event log → offline store.

Every record read is appended to the log, counted as unchanged (a repeat of the station's newest
event), stored as a dead letter with its reason, or counted as skipped (a document or archive
file already committed); the summary's accounting checks this at the end of each run, and its
``alarm`` says when most of what was received was rejected.

Crash safety: a run's resume point (validator state, batches done, the newest document per feed)
is a :class:`~dockline.core.ports.ProducerState` committed atomically with each append, and dead
letters are written first with deterministic ids. A ``kill -9`` at any point followed by a restart
neither loses nor duplicates a record.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core import tracing
from dockline.core.contracts import (
    TOPIC_STATION_INFORMATION,
    TOPIC_STATION_STATUS,
    IngestSummary,
    confirmations_topic,
)
from dockline.core.errors import SourceError
from dockline.core.ports import (
    OFFSET_COLUMN,
    DeadLetterStore,
    EventLog,
    ProducerState,
    stable_partition,
)
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
from dockline.ingest.client import ClockSource
from dockline.pipeline.platform import Platform
from dockline.pipeline.tracing import configure_tracing
from dockline.store.offline import OfflineSink, SinkReport

__all__ = ["TOPIC_CONFIRMED", "IngestRun", "ingest_archive", "ingest_feed", "sink_offline"]

log = logging.getLogger(__name__)

TOPIC_CONFIRMED = confirmations_topic(TOPIC_STATION_STATUS)
"""``station_status.confirmed``: a feed poll saw a station's newest accepted event again."""

ARCHIVE_FILES = "ingest#archive-files"
"""Producer-state key of the archive files imported completely, by content digest (any source)."""

ProgressFn = Callable[[IngestSummary], None]


SNAPSHOT_EVERY = 32
"""Appends between two snapshots of the validator's state (see :class:`IngestRun`)."""


class _Resume(msgspec.Struct):
    """A producer's resume point: small, committed atomically with every append."""

    batches_done: int = 0
    newest_document: dict[str, int] = msgspec.field(default_factory=dict)  # feed → last_updated µs
    # this source's station_status rows per partition appended since the validator snapshot
    # (None in a resume point written before it was tracked: replay the whole tail)
    since_snapshot: dict[int, int] | None = None
    # a CDC source's position: commit LSN of the last transaction appended (0: none yet)
    source_lsn: int = 0
    # a CDC source's initial snapshot while it runs: (ctid block, ctid offset, snapshot xmin)
    # marks of the rows appended so far, for a redo after a crash (empty once it completed)
    snapshot_marks: list[tuple[int, int, int]] = msgspec.field(default_factory=list)


class _Snapshot(msgspec.Struct):
    """The validator's state, and the log position from which later records must be replayed."""

    validator: bytes
    log_offsets: dict[int, int]


class IngestRun:
    """One producer writing one source into the log: validation state plus backends.

    Station information is stored (topic ``station_information``) and fills capacities of status
    records; the run's :class:`IngestSummary` accounts for ``station_status`` records. Records a
    document repeats unchanged are appended as confirmations (:data:`TOPIC_CONFIRMED`) in the
    same transaction as the document's accepted records.

    Every append commits a small resume point; every :data:`SNAPSHOT_EVERY` appends (and after
    station information changes) it also commits a snapshot of the validator's per-station state
    with the log offsets it was taken at. A restart restores the snapshot and re-observes the
    source's records appended since — the log is the source of truth, as in Flink's checkpoints —
    so the large state is not rewritten for every document. The resume point counts those
    records per partition, so the restart reads only until it has seen them, not through other
    sources' records (a large import) appended after them; a source that never appended (no
    snapshot: its first append always carries one) reads nothing.
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
        for topic in (TOPIC_STATION_STATUS, TOPIC_STATION_INFORMATION, TOPIC_CONFIRMED):
            log.create_topic(topic, platform.config.log.partitions)
        raw = log.producer_state(self.producer)
        self.resume = msgspec.msgpack.decode(raw, type=_Resume) if raw else _Resume()
        snapshot_raw = log.producer_state(self._snapshot_key)
        snapshot = msgspec.msgpack.decode(snapshot_raw, type=_Snapshot) if snapshot_raw else None
        self.normalizer = StationStatusNormalizer(
            source, platform.config.ingest, state=snapshot.validator if snapshot else None
        )
        if snapshot is not None:
            self._replay_tail(snapshot.log_offsets, self.resume.since_snapshot)
        self._appends_since_snapshot = SNAPSHOT_EVERY  # snapshot on this run's first append
        self._partitions = log.partitions(TOPIC_STATION_STATUS)
        self.summary = IngestSummary(source=source)
        self.information_received = 0
        self._stations: set[str] = set()
        self._files = self._imported_files()

    @property
    def skipped_documents(self) -> int:
        """Documents skipped as already committed (see :meth:`skip`)."""
        return self.summary.skipped_documents

    def _replay_tail(self, offsets: Mapping[int, int], pending: Mapping[int, int] | None) -> None:
        """Re-observe this source's records appended after the snapshot was taken.

        ``pending`` (rows of this source per partition) stops each partition's scan once they
        are all seen; None scans to the end (a resume point from before it was counted).
        """
        chunk = self.platform.config.offline.read_batch
        for partition, end in self.log.end_offsets(TOPIC_STATION_STATUS).items():
            offset = offsets.get(partition, 0)
            wanted = None if pending is None else pending.get(partition, 0)
            while offset < end and (wanted is None or wanted > 0):
                # bounded: read no more than the rows still missing (they come first unless
                # another producer wrote in between), not a chunk of someone else's import
                size = chunk if wanted is None else min(chunk, wanted)
                records = self.log.read(TOPIC_STATION_STATUS, partition, offset, size)
                if not records.num_rows:
                    break
                offset = int(records[OFFSET_COLUMN][-1].as_py()) + 1
                mine = records.filter(pc.equal(records["source"], self.source))
                self.normalizer.observe(mine)
                if wanted is not None:
                    wanted -= mine.num_rows

    def _imported_files(self) -> dict[str, int]:
        raw = self.log.producer_state(ARCHIVE_FILES)
        return msgspec.msgpack.decode(raw, type=dict[str, int]) if raw else {}

    def file_imported(self, digest: str) -> bool:
        """Whether an archive file with this content was imported completely (by any source)."""
        return digest in self._files

    def commit_status(self, batch: Batch, *, completes_file: str | None = None) -> None:
        """Store the batch's dead letters, then append its records with the resume point.

        Its confirmations go to :data:`TOPIC_CONFIRMED` in the same transaction.
        ``completes_file`` (an archive file's digest) records that file as imported.
        """
        self.deadletters.add(batch.dead_letters)
        self._advance(TOPIC_STATION_STATUS, batch.last_updated)
        appends = [(TOPIC_STATION_STATUS, batch.accepted)]
        if batch.confirmed.num_rows:
            appends.append((TOPIC_CONFIRMED, batch.confirmed))
        self._append(appends, completes_file=completes_file)
        self.summary.received += batch.received
        self.summary.accepted += batch.accepted.num_rows
        self.summary.unchanged += batch.unchanged
        self.summary.confirmations += batch.confirmed.num_rows
        self.summary.documents += 1
        self.summary.add_rejections(batch.dead_letters)
        if batch.accepted.num_rows:
            self._stations.update(pc.unique(batch.accepted["station_id"]).to_pylist())
            self.summary.stations = len(self._stations)

    def commit_information(self, batch: Batch, *, completes_file: str | None = None) -> None:
        """Store station information; its capacities fill status records that lack them."""
        self.deadletters.add(batch.dead_letters)
        if batch.accepted.num_rows:
            self.normalizer.update_information(batch.accepted)
            self._appends_since_snapshot = SNAPSHOT_EVERY  # capacities live in the snapshot
        self._advance(TOPIC_STATION_INFORMATION, batch.last_updated)
        self._append([(TOPIC_STATION_INFORMATION, batch.accepted)], completes_file=completes_file)
        self.information_received += batch.received

    def commit_resume(self) -> None:
        """Commit the resume point alone (e.g. a CDC snapshot completed with nothing to append)."""
        self._append([])

    def skip(self, records: int) -> None:
        """Count a document (or archive batch) already committed: received, and skipped."""
        self.summary.skipped_documents += 1
        self.summary.skipped_records += records
        self.summary.received += records

    def append_replayed(self, records: pa.Table) -> None:
        """Append records re-ingested from dead letters, with the updated validator state."""
        self._appends_since_snapshot = SNAPSHOT_EVERY
        self._append([(TOPIC_STATION_STATUS, records)])

    def is_new_document(self, feed: str, last_updated: datetime | None) -> bool:
        """False for a document no newer than one already committed (a re-fetch after restart)."""
        if last_updated is None:
            return True
        return to_micros(last_updated) > self.resume.newest_document.get(feed, -(2**62))

    def _advance(self, feed: str, last_updated: datetime | None) -> None:
        self.resume.batches_done += 1
        if last_updated is not None:
            self.resume.newest_document[feed] = to_micros(last_updated)

    def _append(
        self, appends: Sequence[tuple[str, pa.Table]], *, completes_file: str | None = None
    ) -> None:
        status = next((t for topic, t in appends if topic == TOPIC_STATION_STATUS), None)
        states = self._states(status)
        if completes_file is not None:
            # merge with what other imports recorded since this run started
            self._files = {**self._imported_files(), **self._files, completes_file: 1}
            states.append(ProducerState(ARCHIVE_FILES, msgspec.msgpack.encode(self._files)))
        self.log.append_many(appends, key="station_id", state=states)

    def _states(self, status: pa.Table | None) -> list[ProducerState]:
        rows: dict[int, int] = {}
        if status is not None and status.num_rows:
            parts = stable_partition(status["station_id"], self._partitions)
            sizes = np.bincount(parts, minlength=self._partitions)
            rows = {p: int(n) for p, n in enumerate(sizes.tolist()) if n}
        self._appends_since_snapshot += 1
        snapshot = None
        if self._appends_since_snapshot >= SNAPSHOT_EVERY:
            # offsets before this append: replaying from them re-observes this batch too, which
            # is harmless (observing is idempotent) and keeps the snapshot's position simple
            snapshot = _Snapshot(
                validator=self.normalizer.state(),
                log_offsets=self.log.end_offsets(TOPIC_STATION_STATUS),
            )
            self._appends_since_snapshot = 0
            self.resume.since_snapshot = rows
        elif self.resume.since_snapshot is not None:
            pending = self.resume.since_snapshot
            for partition, count in rows.items():
                pending[partition] = pending.get(partition, 0) + count
        states = [ProducerState(self.producer, msgspec.msgpack.encode(self.resume))]
        if snapshot is not None:
            states.append(ProducerState(self._snapshot_key, msgspec.msgpack.encode(snapshot)))
        return states

    def finish(self, started: float) -> IngestSummary:
        """Close the books: time, accounting, and a loud warning if most was rejected."""
        self.summary.seconds = time.perf_counter() - started
        self.summary.check_accounting()
        if self.summary.alarm:
            log.info("%s: %s", self.source, self.summary.alarm)
        return self.summary

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
    that was interrupted resumes after the last committed batch. A file whose content was
    imported completely before — under any path or source name, e.g. a renamed copy — is
    skipped (its records counted as skipped), so importing it again adds no rows.
    """
    root = Path(path)
    if not root.exists():
        raise SourceError("archive does not exist", where=str(root))
    name = source or f"archive:{root.resolve().name}"
    run = _open_run(platform, name)
    started = time.perf_counter()
    try:
        done = run.resume.batches_done
        for index, item in enumerate(_archive_items(root, run, mapping)):
            if index < done or run.file_imported(item.file):
                if item.topic == TOPIC_STATION_INFORMATION:
                    # not appended again, but its capacities still fill status records
                    run.normalizer.update_information(item.normalize().accepted)
                    continue
                run.skip(item.count())  # committed before an interruption, or imported before
                continue
            completes = item.file if item.last_of_file else None
            if item.topic == TOPIC_STATION_INFORMATION:
                run.commit_information(item.normalize(), completes_file=completes)
            else:
                run.commit_status(item.normalize(), completes_file=completes)
            if on_progress is not None:
                on_progress(run.summary)
        summary = run.finish(started)
        # -- lineage: an OpenLineage run event (never fails the ingest) --
        from dockline.pipeline.lineage import record_ingest

        record_ingest(platform, summary)
        # -- end lineage --
        return summary
    finally:
        run.close()


@dataclass(frozen=True)
class _Item:
    """One batch of an archive; normalized (or counted) only when asked."""

    topic: str
    file: str  # content digest of the file it comes from
    last_of_file: bool
    normalize: Callable[[], Batch]
    count: Callable[[], int]


def _archive_items(
    root: Path, run: IngestRun, mapping: Mapping[str, str] | None
) -> Iterator[_Item]:
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
                yield _Item(
                    TOPIC_STATION_INFORMATION,
                    doc.digest,
                    True,
                    lambda doc=doc: normalize_station_information(  # type: ignore[misc]
                        doc.payload,
                        source=run.source,
                        ingested_at=doc.ingested_at,
                        batch_id=doc.batch_id,
                    ),
                    lambda: 0,
                )
            else:
                yield _Item(
                    TOPIC_STATION_STATUS,
                    doc.digest,
                    True,
                    lambda doc=doc: normalizer.normalize_document(  # type: ignore[misc]
                        doc.payload, ingested_at=doc.ingested_at, batch_id=doc.batch_id
                    ),
                    lambda doc=doc: _count_records(doc.payload),  # type: ignore[misc]
                )
        return
    status_dir = root / "station_status"
    info_file = root / "station_information.parquet"
    identity = orjson.dumps(dict(sorted((mapping or DIVVY_MAPPING).items())))
    if status_dir.is_dir() and info_file.is_file():
        yield _Item(
            TOPIC_STATION_INFORMATION,
            _digest_file(info_file, identity),
            True,
            lambda: normalize_information_table(
                pq.read_table(info_file),
                source=run.source,
                batch_id=info_file.name,
                publication_delay=config.publication_delay,
            ),
            lambda: 0,
        )
    tables = status_dir if status_dir.is_dir() else root
    base = tables if tables.is_dir() else tables.parent
    digests: dict[str, str] = {}
    pending: tuple[str, str, pa.Table] | None = None  # one batch of lookahead: last of file?
    for batch_id, table in iter_table_archive(
        tables, mapping or DIVVY_MAPPING, batch_rows=config.batch_rows
    ):
        relative = batch_id.rsplit("#", 1)[0]
        if relative not in digests:
            digests[relative] = _digest_file(base / relative, identity)
        if pending is not None:
            yield _table_item(normalizer, *pending, last=pending[0] != relative, files=digests)
        pending = (relative, batch_id, table)
    if pending is not None:
        yield _table_item(normalizer, *pending, last=True, files=digests)


def _table_item(
    normalizer: StationStatusNormalizer,
    relative: str,
    batch_id: str,
    table: pa.Table,
    *,
    last: bool,
    files: Mapping[str, str],
) -> _Item:
    return _Item(
        TOPIC_STATION_STATUS,
        files[relative],
        last,
        lambda: normalizer.normalize_table(table, batch_id=batch_id),
        lambda: table.num_rows,
    )


def _digest_file(path: Path, extra: bytes = b"") -> str:
    """Content identity of an archive file (and of how it is read: the column mapping)."""
    digest = hashlib.blake2b(extra, digest_size=16)
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise SourceError(f"cannot read archive file: {exc}", where=str(path)) from exc
    return digest.hexdigest()


def _count_records(payload: bytes) -> int:
    """Station records in a document (1 for one that is not a readable GBFS document)."""
    try:
        stations = orjson.loads(payload)["data"]["stations"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return 1
    return len(stations) if isinstance(stations, list) else 1


def sink_offline(
    platform: Platform, *, progress: Callable[[int], None] | None = None
) -> dict[str, SinkReport]:
    """Run the offline sink once per topic: everything in the log lands in Parquet."""
    log = platform.open_log()
    try:
        store = platform.open_offline()
        reports: dict[str, SinkReport] = {}
        # confirmations land in their own table (offline/station_status.confirmed/), never in
        # the source's partitions
        for topic in (TOPIC_STATION_INFORMATION, TOPIC_STATION_STATUS, TOPIC_CONFIRMED):
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
    clock_source: ClockSource = "auto",
    sink_every: timedelta | None = timedelta(minutes=1),
    on_progress: ProgressFn | None = None,
) -> IngestSummary:
    """Follow a live GBFS feed (auto-discovery from ``url``) until ``duration`` or ``stop()``.

    ``clock_source="feed"`` stamps ``ingested_at`` with the feed's clock (our simulator's
    ``X-Dockline-Clock``) — for simulated cities running faster than real time; ``"auto"`` (the
    default) does so when the feed announces a simulated clock, else uses the local clock. The
    offline store is brought up to date every ``sink_every`` of real time.

    A document whose ``last_updated`` did not advance is skipped (its records counted as
    skipped). When most records went to the dead letters, the summary's ``alarm`` says so
    (also logged as a warning): callers exit non-zero on it.
    """
    deadline = None if duration is None else time.monotonic() + duration.total_seconds()

    def finished() -> bool:
        if stop is not None and stop():
            return True
        return deadline is not None and time.monotonic() >= deadline

    started = time.perf_counter()
    configure_tracing(platform, "ingest")
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
                    # already committed (a re-fetch, or a restart): its records are counted
                    if feed == TOPIC_STATION_STATUS:
                        run.skip(_count_records(fetched.payload))
                        if on_progress is not None:
                            on_progress(run.summary)
                    continue
                batch_id = (
                    f"{fetched.name}@{(fetched.last_updated or fetched.ingested_at).isoformat()}"
                )
                with tracing.span("ingest.document", {"feed": feed, "batch_id": batch_id}):
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
                                fetched.payload,
                                ingested_at=fetched.ingested_at,
                                batch_id=batch_id,
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
            summary = run.finish(started)
            # -- lineage: an OpenLineage run event (never fails the ingest) --
            from dockline.pipeline.lineage import record_ingest

            record_ingest(platform, summary)
            # -- end lineage --
            return summary
        finally:
            run.close()
