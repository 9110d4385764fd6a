"""The prediction log: every served (and shadow) prediction as append-only Parquet files.

Requests append a tuple to a bounded in-memory queue (no I/O, no lock beyond the deque's);
a daemon thread drains it every ``flush_interval`` or when ``flush_rows`` are waiting and writes
one new file ``<root>/date=YYYY-MM-DD/part-<first_us>-<pid>-<log>-<seq>.parquet`` per flush
(written to ``.tmp`` and renamed: a file is whole or absent; ``<log>`` tells apart the logs of
one process, a serving app's companions or a restarted app on a fixed clock).

A row leaves memory only once its file is written: when a write fails (disk full, directory
gone or read-only) the rows are kept and the next flush retries them. Rows queued plus rows
kept are bounded by ``max_queue``; past it a new row is dropped and counted, never waited for,
and so are the rows still unwritten when :meth:`close` gives up.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from dockline.core.contracts import TS_TYPE
from dockline.core.errors import StorageError
from dockline.core.files import write_parquet
from dockline.core.time import from_micros
from dockline.core.tracing import current_trace_id

__all__ = ["PREDICTION_LOG_SCHEMA", "LogRow", "PredictionLog"]

PREDICTION_LOG_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("logged_at", TS_TYPE, nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("entity", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),  # champion | canary | shadow
        pa.field("served", pa.bool_(), nullable=False),  # False: shadow, scored but not answered
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.int32(), nullable=False),
        pa.field("bundle_id", pa.string(), nullable=False),
        pa.field("probability", pa.float64()),
        pa.field("label", pa.bool_()),
        pa.field("status", pa.string(), nullable=False),  # ok | degraded
        pa.field("reason", pa.string()),
        pa.field("source", pa.string(), nullable=False),  # model | baseline
        pa.field("as_of", TS_TYPE),
        pa.field("feature_age_s", pa.float64()),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("features", pa.list_(pa.float32())),  # model input, in manifest.features order
        # the served vector: the feature reader's values at logged_at, in its column order, as
        # float64 (what `features consistency --served` recomputes offline), and the reader's
        # knowledge watermark (every event ingested by then was in)
        pa.field("known_at", TS_TYPE),
        pa.field("vector", pa.list_(pa.float64())),
        # the request's OpenTelemetry trace (32 hex digits), when [tracing] is on
        pa.field("trace_id", pa.string()),
    ]
)
"""Columns of the prediction log files."""

LogRow = tuple[
    str,  # request_id
    int,  # logged_at (µs)
    str,  # endpoint
    str,  # entity
    str,  # role
    bool,  # served
    str,  # model_name
    int,  # model_version
    str,  # bundle_id
    float | None,  # probability
    bool | None,  # label
    str,  # status
    str | None,  # reason
    str,  # source
    int | None,  # as_of (µs)
    float | None,  # feature_age_s
    float,  # latency_ms
    list[float] | None,  # features
    int | None,  # known_at (µs)
    list[float | None] | None,  # vector
]
"""One prediction, in :data:`PREDICTION_LOG_SCHEMA` order (times as µs); the log adds the
request's trace id (the current span's) when the row is appended."""

_log = logging.getLogger(__name__)


class PredictionLog:
    """Bounded queue + background Parquet writer. ``root=None`` keeps nothing (counts only)."""

    def __init__(
        self,
        root: Path | None,
        *,
        flush_rows: int,
        flush_interval_s: float,
        max_queue: int,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_write_failed: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.dropped = 0
        self.written = 0
        self.accepted = 0
        self.write_failures = 0
        self._queue: deque[tuple[Any, ...]] = deque()  # LogRow + (trace_id,)
        self._pending: list[tuple[Any, ...]] = []  # taken from the queue, not yet written
        self._failing = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._seq = 0
        self._token = uuid.uuid4().hex[:8]
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._on_write_failed = on_write_failed
        self._thread: threading.Thread | None = None

    def append(self, row: LogRow) -> bool:
        """Queue one row; False (and counted) when the queue is full."""
        queue = self._queue
        if self.root is None:
            return False
        if len(queue) + len(self._pending) >= self.max_queue:
            self._drop(1)
            return False
        self.accepted += 1
        queue.append((*row, current_trace_id()))
        if len(queue) >= self.flush_rows:
            self._wake.set()
        return True

    @property
    def unwritten(self) -> int:
        """Rows accepted and not written yet (queued, or kept after a failed write)."""
        return len(self._queue) + len(self._pending)

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self._on_dropped is not None:
            self._on_dropped(n)

    def flush(self) -> int:
        """Write everything queued now (on the caller's thread); returns rows written.

        A failed write keeps the rows for the next flush and raises :class:`StorageError`.
        """
        with self._write_lock:
            queue = self._queue
            rows = self._pending
            while queue:
                try:
                    rows.append(queue.popleft())
                except IndexError:
                    break
            if not rows or self.root is None:
                return 0
            try:
                table = self._table(rows)
            except (pa.ArrowException, TypeError, ValueError):  # never retry a poisoned batch
                _log.exception("prediction log rows could not be encoded; dropping %d", len(rows))
                self._pending = []
                self._drop(len(rows))
                return 0
            first = rows[0][1]
            day = from_micros(first).strftime("%Y-%m-%d")
            self._seq += 1
            name = f"part-{first}-{os.getpid()}-{self._token}-{self._seq:06d}.parquet"
            try:
                write_parquet(table, self.root / f"date={day}" / name)
            except (StorageError, OSError) as exc:  # OSError: mkdir of the day's directory
                self.write_failures += 1
                if self._on_write_failed is not None:
                    self._on_write_failed()
                if not self._failing:  # one line per outage, not one per retry
                    _log.warning(
                        "writing the prediction log failed; keeping %d rows to retry: %s",
                        len(rows),
                        exc,
                    )
                self._failing = True
                raise StorageError(f"{exc}", where=str(self.root)) from exc
            if self._failing:
                _log.warning("the prediction log is written again (%d rows kept)", len(rows))
                self._failing = False
            self._pending = []
            self.written += len(rows)
            if self._on_written is not None:
                self._on_written(len(rows))
            return len(rows)

    @staticmethod
    def _table(rows: list[tuple[Any, ...]]) -> pa.Table:
        columns = list(zip(*rows, strict=True))
        arrays = [
            pa.array(column, type=f.type)
            for column, f in zip(columns, PREDICTION_LOG_SCHEMA, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=PREDICTION_LOG_SCHEMA)

    def start(self) -> None:
        """Flush on a daemon thread every ``flush_interval_s`` or at ``flush_rows`` rows."""
        if self._thread is not None or self.root is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="dockline-serve-predlog", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except StorageError:  # logged by flush; the rows are kept for the next interval
                pass
            except Exception:  # nothing must kill the writer
                _log.exception("writing the prediction log failed")

    def close(self) -> None:
        """Stop the thread and write what is left; rows that still cannot be written are
        dropped and counted."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
        try:
            self.flush()
        except StorageError:
            with self._write_lock:
                lost = self.unwritten
                self._pending = []
                self._queue.clear()
            self._drop(lost)
            _log.error("the prediction log lost %d rows at shutdown: the disk refused them", lost)
