"""CDC ingest: a PostgreSQL table's station_status rows → validation → dead letters + log.

The same :class:`~dockline.pipeline.ingest.IngestRun` as the feed and the archive import: every
row is appended, counted unchanged, or a dead letter with its reason. The commit LSN of the last
appended transaction is committed with each append (the run's resume point); the server is told
(replication feedback) only afterwards, so a crash in between makes it resend transactions the
reader then skips by LSN: nothing lost, nothing duplicated.

Initial snapshot (``snapshot="initial"``, the default): a source with no resume point yet
creates the slot with an exported snapshot and ingests the table's rows as of the slot's
consistent point first, batch by batch through the same path; each append commits how far the
snapshot got (:data:`~dockline.ingest.cdc.SnapshotMark`), and only a completed snapshot sets the
resume point to the consistent point. A slot found while the resume point is still 0 is an
interrupted snapshot's: it is dropped and the snapshot redone, skipping the rows appended before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

from dockline.core.contracts import IngestSummary
from dockline.core.errors import ConfigError
from dockline.ingest.cdc import (
    SNAPSHOT_MODES,
    CdcReader,
    format_lsn,
    merge_marks,
    rows_to_table,
)
from dockline.pipeline.ingest import IngestRun, ProgressFn, sink_offline
from dockline.pipeline.platform import Platform

__all__ = ["CdcSummary", "ingest_cdc"]

log = logging.getLogger(__name__)


class CdcSummary(IngestSummary, kw_only=True):
    """An :class:`IngestSummary` that also says how many rows came from the initial snapshot."""

    snapshot_rows: int = 0
    """Rows read from the initial snapshot (received; skipped ones of a redo included)."""

    def to_dict(self) -> dict[str, object]:
        """The summary's JSON, plus ``snapshot_rows``."""
        return {**super().to_dict(), "snapshot_rows": self.snapshot_rows}


def ingest_cdc(
    platform: Platform,
    dsn: str,
    *,
    table: str = "station_status",
    slot: str = "dockline",
    source: str | None = None,
    once: bool = False,
    snapshot: Literal["initial", "never"] = "initial",
    stop: Callable[[], bool] | None = None,
    idle_timeout: float | None = None,
    sink_every: timedelta | None = None,
    on_progress: ProgressFn | None = None,
) -> CdcSummary:
    """Follow ``table`` through the logical replication slot ``slot`` (created when missing).

    ``once`` stops when everything committed before the call is ingested; otherwise it runs
    until ``stop()`` or ``idle_timeout`` seconds without a change. The source is named
    ``cdc:<slot>`` unless ``source`` is given. ``snapshot="initial"``: a source without a
    resume point first ingests the table's rows as of the new slot's consistent point;
    ``"never"``: rows committed before the slot existed are not seen. The offline store is
    brought up to date every ``sink_every`` of real time (None: the caller sinks).
    """
    if snapshot not in SNAPSHOT_MODES:
        raise ConfigError(
            f"snapshot must be one of {list(SNAPSHOT_MODES)}; got {snapshot!r}", reason="bad_value"
        )
    reader = CdcReader(dsn, table=table, slot=slot)
    run = IngestRun(
        platform, source or f"cdc:{slot}", platform.open_log(), platform.open_deadletters()
    )
    summary = CdcSummary(source=run.source)
    run.summary = summary
    started = time.perf_counter()
    deletes = 0
    last_sink = time.monotonic()
    try:
        take_snapshot = snapshot == "initial" and run.resume.source_lsn == 0
        current = reader.prepare(create=not take_snapshot)
        if take_snapshot:
            if reader.slot_existed:
                # the resume point is 0: an interrupted snapshot's slot (or one made by
                # snapshot="never" that never streamed a row); redo the snapshot from a new slot
                log.info("%s: slot %s has no completed snapshot: redoing it", run.source, slot)
                reader.drop_slot()
            _snapshot(platform, reader, run, summary, on_progress)
            current = max(current, run.resume.source_lsn)
        elif not reader.slot_existed and run.resume.source_lsn:
            log.warning(
                "%s: slot %s was missing and is created anew: changes committed while it did"
                " not exist are not seen",
                run.source,
                slot,
            )
        reader.start()
        # a crash after an append but before its feedback: tell the server now
        reader.confirm(run.resume.source_lsn)
        for batch in reader.batches(
            after_lsn=run.resume.source_lsn,
            stop=stop,
            until_lsn=current if once else None,
            max_rows=platform.config.ingest.batch_rows,
            idle_timeout=idle_timeout,
        ):
            if batch.replayed:
                run.skip(batch.replayed)
            deletes += batch.deletes
            if batch.rows:
                records = rows_to_table(
                    batch.rows, ingested_at=platform.clock.now(), types=batch.types
                )
                run.resume.source_lsn = batch.lsn
                run.commit_status(
                    run.normalizer.normalize_table(
                        records, batch_id=f"{run.source}@{format_lsn(batch.lsn)}"
                    )
                )
            # only now is the batch durable in the log
            reader.confirm(max(batch.lsn, run.resume.source_lsn))
            if on_progress is not None:
                on_progress(run.summary)
            if (
                sink_every is not None
                and time.monotonic() - last_sink >= sink_every.total_seconds()
            ):
                sink_offline(platform)
                last_sink = time.monotonic()
        if deletes:
            log.info("%s: %d deleted row(s) seen (not station records)", run.source, deletes)
        run.finish(started)
        return summary
    finally:
        reader.close()
        run.close()


def _snapshot(
    platform: Platform,
    reader: CdcReader,
    run: IngestRun,
    summary: CdcSummary,
    on_progress: ProgressFn | None,
) -> None:
    """Create the slot with an exported snapshot and ingest the table's rows as of it."""
    consistent, name = reader.create_slot_exporting()
    marks = list(run.resume.snapshot_marks)
    began = time.perf_counter()
    for batch in reader.snapshot_batches(
        name, done=marks, batch_rows=platform.config.ingest.batch_rows
    ):
        summary.snapshot_rows += len(batch.rows) + batch.skipped
        if batch.skipped:
            run.skip(batch.skipped)  # appended by the interrupted snapshot
        if batch.rows:
            records = rows_to_table(
                batch.rows, ingested_at=platform.clock.now(), types=reader.types
            )
            run.resume.snapshot_marks = merge_marks(run.resume.snapshot_marks, batch.mark)
            block, offset, _ = batch.mark
            run.commit_status(
                run.normalizer.normalize_table(
                    records,
                    batch_id=f"{run.source}@snapshot:{format_lsn(consistent)}:{block}.{offset}",
                )
            )
        if on_progress is not None:
            on_progress(summary)
    # complete: streaming resumes after the consistent point
    run.resume.source_lsn = consistent
    run.resume.snapshot_marks = []
    run.commit_resume()
    seconds = time.perf_counter() - began
    log.info(
        "%s: initial snapshot of %d row(s) at %s in %.1f s",
        run.source,
        summary.snapshot_rows,
        format_lsn(consistent),
        seconds,
    )
