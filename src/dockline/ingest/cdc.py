"""Change data capture from PostgreSQL: a table's inserted and updated rows through logical
replication (the ``wal2json`` output plugin, format version 2), as raw station records.

Seed 000's path is GBFS → PostgreSQL → CDC → log: another system writes ``station_status`` rows
into a table; this reader follows them through a replication slot. Each row becomes one raw
record for :meth:`~dockline.ingest.StationStatusNormalizer.normalize_table` — the same validation
and dead letters as an archive batch. Deleted rows are counted, never records.

The resume point is the commit LSN of the last transaction appended to dockline's log (kept in
the log's producer state, atomically with the append): the server is told to release WAL up to it
(:meth:`CdcReader.confirm`) only after that append, and transactions at or below it that the
server sends again after a crash are skipped, so a restart neither loses nor duplicates rows.

Initial snapshot (:meth:`CdcReader.create_slot_exporting` + :meth:`CdcReader.snapshot_batches`,
like Debezium's ``snapshot.mode = initial``): the slot is created on a replication connection with
``EXPORT_SNAPSHOT``; a normal connection imports that snapshot (``SET TRANSACTION SNAPSHOT``) and
reads the table as it was at the slot's consistent point, in ``ctid`` order, while the exporting
connection stays idle (PostgreSQL: the exported snapshot is valid only until that connection
runs another command or closes). Changes after the consistent point then stream from the slot.
A snapshot redone after a crash skips the row versions an earlier snapshot already appended:
those at or below a recorded ``ctid`` whose inserting transaction the earlier snapshot saw.

``wal2json`` rather than ``pgoutput``: its JSON carries each value with its type, so no binary
protocol parser is needed, and it needs no publication (``add-tables`` filters the table).
``psycopg2`` is imported lazily (the ``postgres`` extra).
"""

from __future__ import annotations

import importlib
import re
import select
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from dockline.core.errors import ConfigError, SourceError

__all__ = [
    "CDC_MAPPING",
    "SNAPSHOT_MODES",
    "CdcReader",
    "CdcTransaction",
    "SnapshotBatch",
    "SnapshotMark",
    "format_lsn",
    "parse_lsn",
    "rows_to_table",
]

CDC_MAPPING: Mapping[str, str] = {"last_reported": "event_ts"}
"""Table column → normalized name (GBFS's ``last_reported`` is the event time)."""

REQUIRED_COLUMNS = ("station_id", "num_bikes_available", "num_docks_available")
PLUGIN = "wal2json"

INSTALL_HINT = "psycopg2 is not installed: pip install 'dockline[postgres]'"

SNAPSHOT_MODES = ("initial", "never")
"""``initial``: a new slot's first run reads the table's rows first; ``never``: it does not."""

_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")

SnapshotMark = tuple[int, int, int]
"""(ctid block, ctid offset, snapshot xmin): every row version at or below that ``ctid`` whose
inserting transaction precedes that snapshot's xmin was appended by an interrupted snapshot."""


def format_lsn(lsn: int) -> str:
    """PostgreSQL's ``X/Y`` text form of an LSN."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """An LSN from its ``X/Y`` text form."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass
class CdcTransaction:
    """The changes to the followed table in one committed transaction (or several in a row)."""

    lsn: int
    """Commit LSN of the (last) transaction: its changes are durable up to here."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """New row values of inserts and updates, column → JSON value, in commit order."""
    deletes: int = 0
    """Deleted rows seen (not station records: counted and logged, never appended)."""
    replayed: int = 0
    """Rows of transactions at or below ``after_lsn`` (appended before a restart): skipped."""
    types: dict[str, str] = field(default_factory=dict)
    """Column → PostgreSQL type name, as wal2json reports it."""


@dataclass
class SnapshotBatch:
    """Rows of the initial snapshot, in ``ctid`` order."""

    rows: list[dict[str, Any]]
    """Row values to ingest, column → JSON value."""
    skipped: int
    """Rows an interrupted earlier snapshot already appended (see :data:`SnapshotMark`)."""
    mark: SnapshotMark
    """The position read so far, with this snapshot's xmin: record it with the append."""


def _precedes(xid: int, horizon: int) -> bool:
    """Whether 32-bit transaction id ``xid`` is older than ``horizon`` (modulo-2^32 order).

    Ids below 3 (bootstrap, frozen) precede everything.
    """
    if xid < 3:
        return True
    return ((xid - (horizon & 0xFFFFFFFF)) & 0xFFFFFFFF) >= 1 << 31


def _ctid(text: str) -> tuple[int, int]:
    """A ``ctid``'s ``(block,offset)`` text as a pair."""
    block, offset = text.strip("()").split(",")
    return int(block), int(offset)


def already_appended(marks: Sequence[SnapshotMark], ctid: tuple[int, int], xmin: int) -> bool:
    """Whether a row version (its ``ctid`` and 32-bit ``xmin``) is covered by ``marks``.

    Conservative: a transaction not older than the earlier snapshot's xmin counts as unseen,
    so at worst a row is validated again (a repeat: unchanged or a dead letter), never lost.
    """
    return any(
        ctid <= (block, offset) and _precedes(xmin, horizon) for block, offset, horizon in marks
    )


def merge_marks(marks: Sequence[SnapshotMark], mark: SnapshotMark) -> list[SnapshotMark]:
    """``marks`` plus ``mark``, without those it covers (a later snapshot sees what they saw)."""
    kept = [m for m in marks if (m[0], m[1]) > (mark[0], mark[1])]
    return [*kept, mark]


class CdcReader:
    """Follows one table through one logical replication slot (created when missing)."""

    def __init__(self, dsn: str, *, table: str, slot: str) -> None:
        schema, _, name = table.rpartition(".")
        self.schema = schema or "public"
        self.table = name
        self.slot = slot
        self.dsn = dsn
        self.where = f"postgres table {self.schema}.{self.table} (slot {slot})"
        if not _SLOT_NAME.fullmatch(slot):
            # PostgreSQL's rule; checked here as the name is spliced into a replication command
            raise ConfigError(
                "a slot name is 1-63 lower-case letters, digits or underscores",
                where=self.where,
                reason="bad_value",
            )
        self._psycopg2 = _import_psycopg2()
        self._repl: Any = None
        self._cursor: Any = None
        self.types: dict[str, str] = {}
        """Column → PostgreSQL type name (after :meth:`prepare`)."""
        self.slot_existed = False

    # -- setup (a normal connection) --

    def _connect(self, **kwargs: Any) -> Any:
        try:
            return self._psycopg2.connect(self.dsn, **kwargs)
        except self._psycopg2.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"cannot connect to PostgreSQL: {first}", where=self.where) from exc

    def prepare(self, *, create: bool = True) -> int:
        """Check the table's columns, create the slot if missing (``create``); the server's
        current LSN. :attr:`slot_existed` says whether the slot was there before.

        A missing table or a missing required column is a :class:`ConfigError`; a slot made by
        another output plugin too.
        """
        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s",
                    (self.schema, self.table),
                )
                self.types = {str(row[0]): str(row[1]) for row in cur.fetchall()}
                columns = set(self.types)
                if not columns:
                    raise ConfigError("table does not exist", where=self.where)
                missing = [c for c in (*REQUIRED_COLUMNS, "last_reported") if c not in columns]
                if "last_reported" in missing and "event_ts" in columns:
                    missing.remove("last_reported")
                if missing:
                    raise ConfigError(
                        f"table lacks column(s) {missing}; has {sorted(columns)}",
                        where=self.where,
                    )
                cur.execute(
                    "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                )
                found = cur.fetchone()
                self.slot_existed = found is not None
                if found is None and create:
                    try:
                        cur.execute(
                            "SELECT pg_create_logical_replication_slot(%s, %s)",
                            (self.slot, PLUGIN),
                        )
                    except self._psycopg2.Error as exc:
                        message = str(exc).strip().splitlines()[0]
                        raise SourceError(
                            f"cannot create replication slot: {message}"
                            " (needs wal_level=logical and the wal2json plugin)",
                            where=self.where,
                        ) from exc
                elif found is not None and found[0] != PLUGIN:
                    raise ConfigError(
                        f"slot uses plugin {found[0]!r}; dockline reads {PLUGIN!r}",
                        where=self.where,
                    )
                cur.execute("SELECT pg_current_wal_lsn()")
                row = cur.fetchone()
                return parse_lsn(row[0]) if row else 0
        finally:
            conn.close()

    # -- initial snapshot --

    def drop_slot(self, *, wait: float = 10.0) -> None:
        """Drop the slot (an interrupted snapshot's); waits up to ``wait`` s for a crashed
        reader's server process to let go of it."""
        conn = self._connect()
        try:
            conn.autocommit = True
            deadline = time.monotonic() + wait
            with conn.cursor() as cur:
                while True:
                    try:
                        cur.execute(
                            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                            " WHERE slot_name = %s",
                            (self.slot,),
                        )
                        return
                    except self._psycopg2.Error as exc:
                        # "replication slot ... is active for PID ...": the old walsender exits
                        if time.monotonic() >= deadline:
                            message = str(exc).strip().splitlines()[0]
                            raise SourceError(
                                f"cannot drop replication slot: {message}", where=self.where
                            ) from exc
                        time.sleep(0.1)
        finally:
            conn.close()

    def create_slot_exporting(self) -> tuple[int, str]:
        """Create the slot with ``EXPORT_SNAPSHOT``: its consistent point and snapshot name.

        The replication connection stays open and idle: the snapshot is valid only until it
        runs another command (:meth:`start` reuses it once the snapshot is read) or closes.
        """
        extras = self._psycopg2.extras
        self._repl = self._connect(connection_factory=extras.LogicalReplicationConnection)
        cursor = self._repl.cursor()
        try:
            cursor.execute(f"CREATE_REPLICATION_SLOT {self.slot} LOGICAL {PLUGIN} EXPORT_SNAPSHOT")
            row = cursor.fetchone()
        except self._psycopg2.Error as exc:
            message = str(exc).strip().splitlines()[0]
            self.close()
            raise SourceError(
                f"cannot create replication slot: {message}"
                " (needs wal_level=logical and the wal2json plugin)",
                where=self.where,
            ) from exc
        self._cursor = cursor
        # slot_name, consistent_point, snapshot_name, output_plugin
        return parse_lsn(str(row[1])), str(row[2])

    def snapshot_batches(
        self, snapshot: str, *, done: Sequence[SnapshotMark] = (), batch_rows: int = 10_000
    ) -> Iterator[SnapshotBatch]:
        """The table's rows as of the exported ``snapshot``, ``batch_rows`` at a time, in
        ``ctid`` order; rows ``done`` marks cover are counted as skipped, not returned."""
        try:
            yield from self._snapshot_batches(snapshot, done, batch_rows)
        except self._psycopg2.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"snapshot read failed: {first}", where=self.where) from exc

    def _snapshot_batches(
        self, snapshot: str, done: Sequence[SnapshotMark], batch_rows: int
    ) -> Iterator[SnapshotBatch]:
        sql = self._psycopg2.sql
        conn = self._connect()
        try:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                # the first statement of the transaction: psycopg2 has sent BEGIN ISOLATION
                # LEVEL REPEATABLE READ READ ONLY before it
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                row = cur.fetchone()
                horizon = int(row[0]) if row else 0
            # row_to_json: each value as JSON (numbers, booleans, ISO timestamps), like
            # wal2json's, and a third cheaper on the server than to_jsonb
            query = sql.SQL(
                "SELECT t.ctid::text, t.xmin::text::bigint, row_to_json(t)::text"
                " FROM {}.{} AS t ORDER BY t.ctid"
            ).format(sql.Identifier(self.schema), sql.Identifier(self.table))
            with conn.cursor(name="dockline_snapshot") as cur:
                cur.itersize = batch_rows
                cur.execute(query)
                while True:
                    fetched = cur.fetchmany(batch_rows)
                    if not fetched:
                        break
                    if done:
                        rows: list[dict[str, Any]] = []
                        for ctid_text, xmin, values in fetched:
                            if already_appended(done, _ctid(ctid_text), int(xmin)):
                                continue
                            rows.append(orjson.loads(values))
                    else:
                        rows = [orjson.loads(values) for _, _, values in fetched]
                    position = _ctid(fetched[-1][0])
                    skipped = len(fetched) - len(rows)
                    yield SnapshotBatch(rows, skipped, (*position, horizon))
            conn.rollback()
        finally:
            conn.close()

    # -- streaming (a replication connection) --

    def start(self) -> None:
        """Start streaming from the slot's confirmed LSN (on the connection that created the
        slot, if this reader did; else a new replication connection)."""
        if self._repl is None:
            extras = self._psycopg2.extras
            self._repl = self._connect(connection_factory=extras.LogicalReplicationConnection)
            self._cursor = self._repl.cursor()
        try:
            self._cursor.start_replication(
                slot_name=self.slot,
                decode=True,
                options={
                    "format-version": "2",
                    "include-transaction": "1",
                    "include-types": "1",
                    "add-tables": f"{self.schema}.{self.table}",
                },
            )
        except self._psycopg2.Error as exc:
            message = str(exc).strip().splitlines()[0]
            raise SourceError(f"cannot start replication: {message}", where=self.where) from exc

    def confirm(self, lsn: int) -> None:
        """Tell the server everything up to ``lsn`` is durable downstream (WAL may be recycled).

        Call only after the rows up to ``lsn`` are appended to the log.
        """
        if self._cursor is not None and lsn > 0:
            self._cursor.send_feedback(flush_lsn=lsn, reply=True)

    def batches(
        self,
        *,
        after_lsn: int = 0,
        stop: Callable[[], bool] | None = None,
        until_lsn: int | None = None,
        max_rows: int = 10_000,
        poll: float = 0.2,
        idle_timeout: float | None = None,
    ) -> Iterator[CdcTransaction]:
        """Committed changes, several transactions per batch while they arrive back to back.

        Transactions committed at or below ``after_lsn`` (the log's resume point: the server may
        send them again when it had not yet been told they were appended) are only counted.
        A batch ends when no message is waiting, or at ``max_rows``. Ends when ``stop()`` is
        true, when ``until_lsn`` is reached with nothing pending (``--once``: what was
        committed when the run began), or after ``idle_timeout`` seconds without a message.
        """
        try:
            yield from self._batches(
                after_lsn=after_lsn,
                stop=stop,
                until_lsn=until_lsn,
                max_rows=max_rows,
                poll=poll,
                idle_timeout=idle_timeout,
            )
        except self._psycopg2.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"replication stream failed: {first}", where=self.where) from exc

    def _batches(
        self,
        *,
        after_lsn: int,
        stop: Callable[[], bool] | None,
        until_lsn: int | None,
        max_rows: int,
        poll: float,
        idle_timeout: float | None,
    ) -> Iterator[CdcTransaction]:
        if self._cursor is None:
            self.start()
        cursor = self._cursor
        pending = CdcTransaction(lsn=0)
        open_rows: list[dict[str, Any]] = []
        open_deletes = 0
        last_message = time.monotonic()
        last_commit = 0
        while True:
            message = cursor.read_message()
            if message is not None:
                last_message = time.monotonic()
                change = orjson.loads(message.payload)
                action = change.get("action")
                if action == "B":
                    open_rows, open_deletes = [], 0
                elif action in ("I", "U"):
                    columns = change.get("columns", [])
                    open_rows.append({c["name"]: c.get("value") for c in columns})
                    pending.types.update({c["name"]: c.get("type", "") for c in columns})
                elif action == "D":
                    open_deletes += 1
                elif action == "C":
                    last_commit = int(message.data_start)
                    if last_commit <= after_lsn:
                        pending.replayed += len(open_rows)
                    else:
                        pending.rows.extend(open_rows)
                        pending.deletes += open_deletes
                    pending.lsn = last_commit
                    open_rows, open_deletes = [], 0
                    if len(pending.rows) >= max_rows:
                        yield pending
                        pending = CdcTransaction(lsn=0, types=dict(pending.types))
                continue
            # nothing waiting: hand over what is committed, then decide whether to go on
            if pending.lsn:
                yield pending
                pending = CdcTransaction(lsn=0, types=dict(pending.types))
            if stop is not None and stop():
                return
            if until_lsn is not None and not open_rows:
                reached = max(last_commit, int(getattr(cursor, "wal_end", 0) or 0))
                if reached >= until_lsn:
                    return
            if idle_timeout is not None and time.monotonic() - last_message > idle_timeout:
                return
            # ask for a keepalive so wal_end advances past transactions of other tables
            cursor.send_feedback(reply=True)
            select.select([cursor], [], [], poll)

    def close(self) -> None:
        """Close the replication connection (the slot stays, with its confirmed LSN)."""
        if self._repl is not None:
            self._repl.close()
            self._repl = None
            self._cursor = None


_ARROW_TYPES: Mapping[str, pa.DataType] = {
    "smallint": pa.int64(),
    "integer": pa.int64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "real": pa.float64(),
    "double precision": pa.float64(),
    "numeric": pa.float64(),
}


def rows_to_table(
    rows: list[dict[str, Any]],
    *,
    ingested_at: datetime,
    types: Mapping[str, str] | None = None,
    mapping: Mapping[str, str] = CDC_MAPPING,
) -> pa.Table:
    """Raw CDC rows as an Arrow table with normalized column names, for ``normalize_table``.

    ``types`` (column → PostgreSQL type) types columns that hold only NULLs. A column whose
    values do not share one type becomes text (timestamps stay text: the validator parses them).
    """
    names: list[str] = []
    for row in rows:
        for name in row:
            if name not in names:
                names.append(name)
    arrays: dict[str, pa.Array] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            array = pa.array([None if v is None else _text(v) for v in values], pa.string())
        if pa.types.is_null(array.type):
            array = array.cast(_ARROW_TYPES.get((types or {}).get(name, ""), pa.string()))
        arrays[mapping.get(name, name)] = array
    arrays["ingested_at"] = pa.array([ingested_at] * len(rows), pa.timestamp("us", tz="UTC"))
    return pa.table(arrays)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _import_psycopg2() -> Any:
    try:
        psycopg2 = importlib.import_module("psycopg2")
        importlib.import_module("psycopg2.extras")
        importlib.import_module("psycopg2.sql")
    except ImportError as exc:  # pragma: no cover - the postgres extra is installed in dev
        raise ConfigError(INSTALL_HINT) from exc
    return psycopg2
