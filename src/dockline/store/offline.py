"""The offline store (Hive-partitioned Parquet) and the log consumer that fills it.

Layout under ``<data-dir>/offline``::

    <source>/date=YYYY-MM-DD/p{partition:03d}-{first:012d}-{last:012d}.parquet
    <source>/date=YYYY-MM-DD/_manifest.json                 DatasetMetadata of the date
    raw_station_metrics_1min/date=YYYY-MM-DD/part-0.parquet  1-minute aggregate of station_status
    raw_station_metrics_1min/date=YYYY-MM-DD/_manifest.json

A data file is named after the log offsets it holds, and its bytes depend only on those records
(sorted rows, fixed writer options, no timestamps), so replaying the same offsets rewrites
identical files. The sink commits an offset only after the files for it are in place, and at
start deletes files past the committed offsets: the store holds each log record exactly once.

>>> import tempfile
>>> store = OfflineStore(Path(tempfile.mkdtemp()))
>>> store.dates("station_status")
[]
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core.contracts import TOPIC_STATION_STATUS, TS_TYPE, DatasetMetadata, FileDigest
from dockline.core.errors import NotFoundError, StorageError, ValidationError
from dockline.core.files import sha256_file, write_parquet
from dockline.core.ports import OFFSET_COLUMN, EventLog
from dockline.core.time import EPOCH, Clock, SystemClock, from_micros

__all__ = [
    "AGGREGATE_1MIN",
    "AGGREGATE_1MIN_SCHEMA",
    "MANIFEST_NAME",
    "OfflineSink",
    "OfflineStore",
    "SinkReport",
]

AGGREGATE_1MIN = "raw_station_metrics_1min"
"""Name (and directory) of the one-minute aggregate of ``station_status``."""

MANIFEST_NAME = "_manifest.json"
_DIRTY_NAME = "_dirty_dates.json"
_LOCK_NAME = ".sink.lock"
_DAY_US = 86_400_000_000
_FILE_RE = re.compile(r"^p(\d{3,})-(\d{12,})-(\d{12,})\.parquet$")
_DATE_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SORT_KEYS = ("station_id", "event_ts", "ingested_at")

AGGREGATE_1MIN_SCHEMA = pa.schema(
    [
        pa.field("station_id", pa.string(), nullable=False),
        pa.field("minute", TS_TYPE, nullable=False),
        pa.field("bikes_last", pa.int32(), nullable=False),
        pa.field("bikes_min", pa.int32(), nullable=False),
        pa.field("bikes_max", pa.int32(), nullable=False),
        pa.field("docks_last", pa.int32(), nullable=False),
        pa.field("docks_min", pa.int32(), nullable=False),
        pa.field("docks_max", pa.int32(), nullable=False),
        pa.field("capacity_last", pa.int32()),
        pa.field("is_renting_last", pa.bool_(), nullable=False),
        pa.field("is_returning_last", pa.bool_(), nullable=False),
        pa.field("snapshot_count", pa.int64(), nullable=False),
        pa.field("last_event_ts", TS_TYPE, nullable=False),
        pa.field("max_ingested_at", TS_TYPE, nullable=False),
    ]
)
"""Columns of ``raw_station_metrics_1min``, one row per (station_id, minute)."""

# "last" is the snapshot with the greatest (event_ts, ingested_at, position in the log): a
# station lives in one log partition, data files are named p{partition}-{first offset} and passed
# to DuckDB in name order (file_index), and rows inside a file are stably sorted, so
# (file_index, file_row_number) is the log order of exact ties. One arg_max over a struct of all
# "last" columns is ~2x faster than one arg_max per column.
_AGGREGATE_SQL = """
WITH src AS (
    SELECT station_id, event_ts, ingested_at,
           num_bikes_available AS bikes, num_docks_available AS docks,
           date_trunc('minute', event_ts) AS minute,
           struct_pack(bikes := num_bikes_available, docks := num_docks_available,
                       capacity := capacity, renting := is_renting,
                       returns := is_returning) AS state,
           struct_pack(e := event_ts, i := ingested_at, f := file_index,
                       r := file_row_number) AS recency
    FROM read_parquet($files, file_row_number = true, hive_partitioning = false,
                      union_by_name = true)
), grouped AS (
    SELECT station_id, minute,
           arg_max_null(state, recency) AS latest,
           min(bikes) AS bikes_min, max(bikes) AS bikes_max,
           min(docks) AS docks_min, max(docks) AS docks_max,
           count(*) AS snapshot_count,
           max(event_ts) AS last_event_ts,
           max(ingested_at) AS max_ingested_at
    FROM src
    GROUP BY station_id, minute
)
SELECT station_id, minute,
       latest.bikes AS bikes_last, bikes_min, bikes_max,
       latest.docks AS docks_last, docks_min, docks_max,
       latest.capacity AS capacity_last,
       latest.renting AS is_renting_last,
       latest.returns AS is_returning_last,
       snapshot_count, last_event_ts, max_ingested_at
FROM grouped
ORDER BY station_id, minute
"""


def _date_of(path: Path) -> date | None:
    match = _DATE_RE.match(path.parent.name)
    return date.fromisoformat(match.group(1)) if match else None


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValidationError(
            f"{kind} must be a plain name (letters, digits, _ . -); got {name!r}",
            reason="bad_value",
        )
    return name


@dataclass(frozen=True, slots=True)
class SinkReport:
    """What one :meth:`OfflineSink.run_once` did."""

    source: str
    records: int = 0
    files: int = 0
    discarded: int = 0
    dates: tuple[date, ...] = ()
    committed: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0


class OfflineStore:
    """Hive-partitioned Parquet per source and UTC date, with manifests and a 1-minute aggregate.

    ``clock`` stamps only the manifests' ``built_at``; data files never contain a timestamp of
    when they were written.
    """

    def __init__(self, root: Path, *, clock: Clock = SystemClock()) -> None:
        self.root = Path(root)
        self.clock = clock

    # -- layout ---------------------------------------------------------------------------------

    def _dir(self, source: str) -> Path:
        return self.root / _check_name("source", source)

    @staticmethod
    def _date_dir(base: Path, day: date) -> Path:
        return base / f"date={day.isoformat()}"

    def _data_files(self, source: str) -> list[Path]:
        return sorted(self._dir(source).glob("date=*/*.parquet"))

    def dates(self, source: str) -> list[date]:
        """UTC dates that hold data for ``source``, ascending."""
        found = {_date_of(path) for path in self._data_files(source)}
        return sorted(day for day in found if day is not None)

    def files(self, source: str, day: date) -> list[Path]:
        """The data files of ``source`` for ``day``, in name order."""
        return sorted(self._date_dir(self._dir(source), day).glob("*.parquet"))

    def manifest(self, source: str, day: date) -> DatasetMetadata:
        """The manifest of ``source`` for ``day`` (``NotFoundError`` if there is none)."""
        path = self._date_dir(self._dir(source), day) / MANIFEST_NAME
        if not path.exists():
            raise NotFoundError(
                f"no manifest for {day.isoformat()}", reason="unknown_partition", where=str(path)
            )
        return DatasetMetadata.read(path)

    def scan(self, source: str) -> str:
        """A DuckDB relation over all of ``source`` (adds a ``date`` column from the path).

        >>> # duckdb.sql(f"SELECT count(*) FROM {store.scan('station_status')}")
        """
        base = self._dir(source)
        if not self._data_files(source):
            raise NotFoundError("the offline store has no data", reason="no_data", where=str(base))
        pattern = str(base / "date=*" / "*.parquet").replace("'", "''")
        return f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"

    # -- writing --------------------------------------------------------------------------------

    def write(
        self, source: str, partition: int, first_offset: int, last_offset: int, records: pa.Table
    ) -> list[Path]:
        """Write the records of log offsets ``first..last`` of ``partition``: one file per UTC date.

        Rows are sorted by (station_id, event_ts, ingested_at) — stably, so exact ties keep log
        order — and the ``_offset`` column is dropped. Rewriting the same offsets replaces the
        same files with identical bytes; files of other offset ranges are left alone, so a
        consumer that rewinds calls :meth:`discard_uncommitted` first (:class:`OfflineSink` does).
        Returns the files written.
        """
        if _check_name("source", source) == AGGREGATE_1MIN:
            raise ValidationError(f"source must not be {AGGREGATE_1MIN!r}; it is derived")
        if partition < 0 or not 0 <= first_offset <= last_offset:
            raise ValidationError(
                "offsets must satisfy partition >= 0 and 0 <= first <= last;"
                f" got {partition}, {first_offset}, {last_offset}",
                reason="bad_value",
            )
        if OFFSET_COLUMN in records.column_names:
            records = records.drop_columns([OFFSET_COLUMN])
        if records.num_rows == 0:
            return []
        if records.num_rows > last_offset - first_offset + 1:
            raise ValidationError(
                f"offsets {first_offset}..{last_offset} cannot hold {records.num_rows} records",
                reason="bad_value",
            )
        days = self._days(records)
        name = f"p{partition:03d}-{first_offset:012d}-{last_offset:012d}.parquet"
        sort_keys = [(k, "ascending") for k in _SORT_KEYS if k in records.column_names]
        written: list[Path] = []
        unique_days = np.unique(days).tolist()
        for day in unique_days:
            subset = records if len(unique_days) == 1 else records.filter(pa.array(days == day))
            subset = subset.take(pc.sort_indices(subset, sort_keys=sort_keys))
            path = self._date_dir(self._dir(source), EPOCH.date() + timedelta(days=day)) / name
            write_parquet(subset, path)
            written.append(path)
        return written

    @staticmethod
    def _days(records: pa.Table) -> np.ndarray:
        if "event_ts" not in records.column_names:
            raise ValidationError("records must have an event_ts column", reason="missing_field")
        column = records["event_ts"]
        if column.null_count:
            raise ValidationError("event_ts must not be null", reason="missing_field")
        try:
            micros = column.cast(TS_TYPE).cast(pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValidationError(
                f"event_ts must be a timestamp; got {column.type}", reason="bad_type"
            ) from exc
        days: np.ndarray = micros // _DAY_US
        return days

    @staticmethod
    def _parse(path: Path) -> tuple[int, int, int] | None:
        match = _FILE_RE.match(path.name)
        if match is None:
            return None
        return int(match.group(1)), int(match.group(2)), int(match.group(3))

    def resume_offsets(self, source: str, committed: Mapping[int, int]) -> dict[int, int]:
        """Per partition, where a consumer must resume so no file is half committed.

        Normally ``committed`` itself; when a group was rewound to an offset inside a file
        (``first < committed <= last``), that file's first offset, so the file is rewritten whole.
        """
        resume = dict(committed)
        for path in self._data_files(source):
            parsed = self._parse(path)
            if parsed is None:
                continue
            partition, first, last = parsed
            offset = resume.get(partition, 0)
            if first < offset <= last:
                resume[partition] = first
        return resume

    def discard_uncommitted(self, source: str, committed: Mapping[int, int]) -> list[Path]:
        """Delete files whose first offset is at or past their partition's committed offset.

        Those are a crashed consumer's writes past its checkpoint (a partition missing from
        ``committed`` counts as committed at 0). Also removes leftover temporary files.
        Returns the data files deleted.
        """
        base = self._dir(source)
        removed: list[Path] = []
        try:
            for tmp in base.glob("date=*/*.tmp"):
                tmp.unlink(missing_ok=True)
            for path in self._data_files(source):
                parsed = self._parse(path)
                if parsed is not None and parsed[1] >= committed.get(parsed[0], 0):
                    path.unlink()
                    removed.append(path)
        except OSError as exc:
            raise StorageError(f"cannot discard files: {exc}", where=str(base)) from exc
        return removed

    # -- manifests and the aggregate ------------------------------------------------------------

    def refresh(self, source: str, dates: Iterable[date]) -> None:
        """Rewrite the manifest of each date, and for ``station_status`` its 1-minute aggregate.

        A date without data files loses its manifest (and aggregate).
        """
        base = self._dir(source)
        for day in sorted(set(dates)):
            files = self.files(source, day)
            targets = [self._date_dir(base, day)]
            if source == TOPIC_STATION_STATUS:
                targets.append(self._date_dir(self.root / AGGREGATE_1MIN, day))
            if not files:
                for directory in targets:
                    for stale in (directory / MANIFEST_NAME, directory / "part-0.parquet"):
                        stale.unlink(missing_ok=True)
                continue
            source_manifest = self._write_manifest(source, day, files, time_column="event_ts")
            if source == TOPIC_STATION_STATUS:
                aggregate = self._aggregate(files)
                agg_path = targets[1] / "part-0.parquet"
                write_parquet(aggregate, agg_path)
                self._write_manifest(
                    AGGREGATE_1MIN,
                    day,
                    [agg_path],
                    time_column="minute",
                    extra={"source": source, "source_content_hash": source_manifest.content_hash},
                )

    def aggregate_1min(self, day: date) -> pa.Table:
        """The stored 1-minute aggregate of ``station_status`` for ``day``."""
        path = self._date_dir(self.root / AGGREGATE_1MIN, day) / "part-0.parquet"
        if not path.exists():
            raise NotFoundError("no aggregate for this date", where=str(path))
        table: pa.Table = pq.ParquetFile(path).read()
        return table

    @staticmethod
    def _aggregate(files: list[Path]) -> pa.Table:
        con = duckdb.connect()
        try:
            # date_trunc on TIMESTAMPTZ follows the session time zone; minutes are UTC minutes.
            con.execute("SET TimeZone = 'UTC'")
            names = [str(f) for f in sorted(files)]  # file_index follows this order
            table = con.sql(_AGGREGATE_SQL, params={"files": names})
            result = table.to_arrow_table() if table is not None else None
        except duckdb.Error as exc:
            raise StorageError(f"aggregation failed: {exc}", where=str(files[0].parent)) from exc
        finally:
            con.close()
        if result is None:  # pragma: no cover - a SELECT always returns a relation
            raise StorageError("aggregation returned nothing", where=str(files[0].parent))
        return result.cast(AGGREGATE_1MIN_SCHEMA)

    def _write_manifest(
        self,
        name: str,
        day: date,
        files: list[Path],
        *,
        time_column: str,
        extra: dict[str, str | int | float | bool | None] | None = None,
    ) -> DatasetMetadata:
        digests: list[FileDigest] = []
        columns: list[str] = []
        low: int | None = None
        high: int | None = None
        for path in files:
            parquet = pq.ParquetFile(path)
            for column in parquet.schema_arrow.names:
                if column not in columns:
                    columns.append(column)
            digests.append(
                FileDigest(
                    path=path.name,
                    rows=parquet.metadata.num_rows,
                    bytes=path.stat().st_size,
                    sha256=sha256_file(path),
                )
            )
            if time_column in parquet.schema_arrow.names and parquet.metadata.num_rows:
                micros = parquet.read(columns=[time_column])[time_column]
                bounds = pc.min_max(micros.cast(TS_TYPE).cast(pa.int64()))
                lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
                low = lo if low is None else min(low, lo)
                high = hi if high is None else max(high, hi)
        content_hash = hashlib.sha256(
            "\n".join(sorted(d.sha256 for d in digests)).encode()
        ).hexdigest()
        directory = files[0].parent
        metadata = DatasetMetadata(
            dataset_name=name,
            dataset_version=content_hash[:16],
            path=f"{name}/{directory.name}",
            built_at=self.clock.now(),
            row_count=sum(d.rows for d in digests),
            event_ts=time_column,
            partition=directory.name,
            time_range_start=None if low is None else from_micros(low),
            time_range_end=None if high is None else from_micros(high),
            columns=columns,
            files=digests,
            content_hash=content_hash,
            extra=extra or {},
        )
        try:
            metadata.write(directory / MANIFEST_NAME)
        except OSError as exc:
            raise StorageError(f"cannot write manifest: {exc}", where=str(directory)) from exc
        return metadata

    # -- sink support ---------------------------------------------------------------------------

    @contextmanager
    def exclusive(self, source: str) -> Iterator[None]:
        """Hold the source's sink lock (released by the OS even on ``kill -9``)."""
        base = self._dir(source)
        base.mkdir(parents=True, exist_ok=True)
        with (base / _LOCK_NAME).open("a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StorageError(
                    "another offline sink is writing this source", reason="locked", where=str(base)
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def dirty_dates(self, source: str) -> set[date]:
        """Dates written but not yet refreshed (recorded by the sink for crash recovery)."""
        path = self._dir(source) / _DIRTY_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            raise StorageError(f"unreadable dirty-dates file: {exc}", where=str(path)) from exc
        return {date.fromisoformat(day) for day in raw["dates"]}

    def set_dirty_dates(self, source: str, dates: Iterable[date]) -> None:
        """Record ``dates`` as written but not refreshed (atomically; empty clears the record)."""
        base = self._dir(source)
        path = base / _DIRTY_NAME
        days = sorted(set(dates))
        try:
            if not days:
                path.unlink(missing_ok=True)
                return
            base.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"dates": [d.isoformat() for d in days]}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot record dirty dates: {exc}", where=str(path)) from exc


class OfflineSink:
    """The log consumer that fills the offline store (consumer group ``offline-sink``).

    >>> # OfflineSink(log, OfflineStore(data_dir / "offline"), topic="station_status").run_once()
    """

    def __init__(
        self,
        log: EventLog,
        store: OfflineStore,
        *,
        topic: str,
        source_name: str | None = None,
        group: str = "offline-sink",
        read_batch: int = 500_000,
    ) -> None:
        if read_batch < 1:
            raise ValidationError(f"read_batch must be >= 1; got {read_batch}", reason="bad_value")
        self.log = log
        self.store = store
        self.topic = topic
        self.source = source_name or topic
        self.group = group
        self.read_batch = read_batch

    def run_once(self, progress: Callable[[int], None] | None = None) -> SinkReport:
        """Copy every record from the committed offsets to the current end, then refresh.

        Per partition, reads ``read_batch`` records at a time, writes them, records the touched
        dates as dirty, then commits the next offset. A crash at any point leaves files past the
        checkpoint (deleted at the next start) and dirty dates (refreshed at the next start).
        ``progress`` is called with the number of records of each step.
        """
        started = time.perf_counter()
        with self.store.exclusive(self.source):
            try:
                ends = self.log.end_offsets(self.topic)
            except NotFoundError:
                return SinkReport(source=self.source, seconds=time.perf_counter() - started)
            committed = self.log.committed(self.group, self.topic)
            resume = self.store.resume_offsets(self.source, committed)
            if resume != committed:
                # Rewound into the middle of a file: commit the rewind before deleting that file.
                self.log.commit(self.group, self.topic, resume)
            removed = self.store.discard_uncommitted(self.source, resume)
            dirty = self.store.dirty_dates(self.source)
            dirty |= {day for day in map(_date_of, removed) if day is not None}
            refreshed: set[date] = set()
            if dirty:
                self.store.set_dirty_dates(self.source, dirty)
                self.store.refresh(self.source, dirty)
                self.store.set_dirty_dates(self.source, ())
                refreshed |= dirty
                dirty = set()

            records = files = 0
            for partition, end in sorted(ends.items()):
                offset = resume.get(partition, 0)
                while offset < end:
                    batch = self.log.read(
                        self.topic, partition, offset, min(self.read_batch, end - offset)
                    )
                    if batch.num_rows == 0:  # pragma: no cover - the log shrank under us
                        break
                    last = offset + batch.num_rows - 1
                    written = self.store.write(self.source, partition, offset, last, batch)
                    days = {day for day in map(_date_of, written) if day is not None}
                    if not days <= dirty:
                        dirty |= days
                        self.store.set_dirty_dates(self.source, dirty)
                    self.log.commit(self.group, self.topic, {partition: last + 1})
                    records += batch.num_rows
                    files += len(written)
                    offset = last + 1
                    if progress is not None:
                        progress(batch.num_rows)
            if dirty:
                self.store.refresh(self.source, dirty)
                self.store.set_dirty_dates(self.source, ())
                refreshed |= dirty
            return SinkReport(
                source=self.source,
                records=records,
                files=files,
                discarded=len(removed),
                dates=tuple(sorted(refreshed)),
                committed=self.log.committed(self.group, self.topic),
                seconds=time.perf_counter() - started,
            )
