"""CDC ingest: a PostgreSQL table's station_status rows → validation → dead letters + log.

The same :class:`~dockline.pipeline.ingest.IngestRun` as the feed and the archive import: every
row is appended, counted unchanged, or a dead letter with its reason. The commit LSN of the last
appended transaction is committed with each append (the run's resume point); the server is told
(replication feedback) only afterwards, so a crash in between makes it resend transactions the
reader then skips by LSN: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from dockline.core.contracts import IngestSummary
from dockline.ingest.cdc import CdcReader, format_lsn, rows_to_table
from dockline.pipeline.ingest import IngestRun, ProgressFn, sink_offline
from dockline.pipeline.platform import Platform

__all__ = ["ingest_cdc"]

log = logging.getLogger(__name__)


def ingest_cdc(
    platform: Platform,
    dsn: str,
    *,
    table: str = "station_status",
    slot: str = "dockline",
    source: str | None = None,
    once: bool = False,
    stop: Callable[[], bool] | None = None,
    idle_timeout: float | None = None,
    sink_every: timedelta | None = None,
    on_progress: ProgressFn | None = None,
) -> IngestSummary:
    """Follow ``table`` through the logical replication slot ``slot`` (created when missing).

    ``once`` stops when everything committed before the call is ingested; otherwise it runs
    until ``stop()`` or ``idle_timeout`` seconds without a change. The source is named
    ``cdc:<slot>`` unless ``source`` is given. Rows committed before the slot existed are not
    seen: create the slot (a first ``--once`` run) before the writer starts. The offline store
    is brought up to date every ``sink_every`` of real time (None: the caller sinks).
    """
    reader = CdcReader(dsn, table=table, slot=slot)
    current = reader.prepare()
    run = IngestRun(
        platform, source or f"cdc:{slot}", platform.open_log(), platform.open_deadletters()
    )
    started = time.perf_counter()
    deletes = 0
    last_sink = time.monotonic()
    try:
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
        return run.finish(started)
    finally:
        reader.close()
        run.close()
