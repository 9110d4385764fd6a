"""The embedded online store: the latest vector per (entity, group) in one SQLite file.

One row per (entity, group) in a ``WITHOUT ROWID`` table clustered on ``(entity, grp)``, so all
groups of an entity sit on one B-tree page and a read is one index seek. Values are one msgpack
array per vector, in the group's registered column order; ``as_of_us`` and ``written_at_us`` are
plain integer columns.

Value columns may be int, float, str, bool (nulls read back as ``None``, NaN stays NaN) or
tz-aware timestamps, which are stored as integer microseconds since the epoch (UTC).

>>> import tempfile, pyarrow as pa
>>> from datetime import UTC, datetime
>>> store = SqliteOnlineStore(Path(tempfile.mkdtemp()) / "online.sqlite")
>>> store.register("bikes", ["num_bikes_available__last"])
>>> t = pa.array([datetime(2024, 5, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
>>> rows = pa.table({"station_id": ["s1"], "ts": t, "num_bikes_available__last": [7]})
>>> store.write("bikes", rows, key="station_id", as_of="ts", written_at_us=1)
1
>>> store.read("s1", ["bikes"])["bikes"].values
(7,)
>>> store.close()
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import msgspec
import pyarrow as pa

from dockline.core.errors import ConfigError, NotFoundError, StorageError
from dockline.core.ports import OnlineVector
from dockline.store._sqlite import SqliteDatabase
from dockline.store.online._rows import check_columns, check_group, check_written_at, table_rows

__all__ = ["SqliteOnlineStore"]

_FORMAT_VERSION = 1
# SQLite's historical limit on bound parameters was 999; stay under it on every build.
_MAX_PARAMS = 900

_SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS groups (grp TEXT PRIMARY KEY, columns BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS vectors (entity TEXT NOT NULL, grp TEXT NOT NULL,"
    " as_of_us INTEGER NOT NULL, written_at_us INTEGER NOT NULL, vals BLOB NOT NULL,"
    " PRIMARY KEY (entity, grp)) WITHOUT ROWID",
)
_READ_ONE = "SELECT grp, as_of_us, written_at_us, vals FROM vectors WHERE entity = ?"
_UPSERT = (
    "INSERT OR REPLACE INTO vectors (entity, grp, as_of_us, written_at_us, vals)"
    " VALUES (?, ?, ?, ?, ?)"
)
_SELECT_COLUMNS = "SELECT columns FROM groups WHERE grp = ?"

_encode = msgspec.msgpack.Encoder().encode
_columns_decoder = msgspec.msgpack.Decoder(tuple[str, ...])


@lru_cache(maxsize=256)
def _read_many_sql(entities: int, groups: int) -> str:
    """The ``IN (...)`` query for a chunk shape; cached so sqlite3 reuses its prepared statement."""
    return (
        "SELECT entity, grp, as_of_us, written_at_us, vals FROM vectors"
        f" WHERE entity IN ({', '.join('?' * entities)}) AND grp IN ({', '.join('?' * groups)})"
    )


def _init_schema(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, _FORMAT_VERSION):
        raise ConfigError(
            f"online store format version must be {_FORMAT_VERSION}; got {version}",
            reason="online_format",
        )
    for statement in _SCHEMA_SQL:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version={_FORMAT_VERSION}")


class SqliteOnlineStore:
    """:class:`~dockline.core.ports.OnlineStore` on one SQLite file (``<data-dir>/online.sqlite``).

    * ``register`` with the columns a group already has is a no-op; with other columns it
      replaces them and deletes that group's stored vectors (their layout no longer matches).
    * Registered columns are cached per handle for reads; ``write`` re-checks them inside its
      transaction, so a re-registration by another handle or process is never written past.
    * ``write`` upserts in one transaction; when ``rows`` holds an entity twice the last row
      wins. A vector always replaces the stored one, even when its ``as_of`` is older.
    * Safe for several threads (one connection per thread) and processes (WAL, busy timeout).
    """

    def __init__(self, path: Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        self.path = Path(path)
        self._db = SqliteDatabase(self.path, init=_init_schema, synchronous=synchronous)
        self._columns: dict[str, tuple[str, ...]] = {}
        self._cache_lock = threading.Lock()
        # untyped: msgspec's typed unions cannot mix str and bytes
        self._decode = msgspec.msgpack.Decoder(tuple).decode
        self._db.connection()  # fail fast on a bad path or a foreign file

    def _error(self, exc: Exception) -> StorageError:
        return StorageError(f"SQLite failed: {exc}", where=str(self.path))

    # -- groups -------------------------------------------------------------------------------

    def register(self, group: str, columns: Sequence[str]) -> None:
        """Declare (or re-declare, replacing) the ordered value columns of ``group``.

        Re-declaring other columns deletes the group's stored vectors.
        """
        check_group(group)
        wanted = check_columns(group, columns)
        blob = _encode(wanted)
        with self._db.write() as conn:
            row = conn.execute(_SELECT_COLUMNS, (group,)).fetchone()
            if row is None or bytes(row[0]) != blob:
                conn.execute(
                    "INSERT OR REPLACE INTO groups (grp, columns) VALUES (?, ?)", (group, blob)
                )
            if row is not None and bytes(row[0]) != blob:
                conn.execute("DELETE FROM vectors WHERE grp = ?", (group,))
        self._remember(group, wanted)

    def _remember(self, group: str, columns: tuple[str, ...]) -> tuple[str, ...]:
        with self._cache_lock:
            self._columns[group] = columns
        return columns

    def _stored_columns(self, conn: sqlite3.Connection, group: str) -> tuple[str, ...]:
        row = conn.execute(_SELECT_COLUMNS, (group,)).fetchone()
        if row is None:
            raise NotFoundError(
                "group is not registered; call register() first",
                reason="unknown_group",
                where=group,
            )
        try:
            return _columns_decoder.decode(row[0])
        except msgspec.DecodeError as exc:
            raise StorageError(
                f"the registered columns are unreadable: {exc}", where=group
            ) from exc

    def columns(self, group: str) -> tuple[str, ...]:
        """The registered columns of ``group`` (``NotFoundError`` if never registered)."""
        cached = self._columns.get(group)
        if cached is not None:
            return cached
        conn = self._db.connection()
        try:
            stored = self._stored_columns(conn, group)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return self._remember(group, stored)

    # -- writing ------------------------------------------------------------------------------

    def write(self, group: str, rows: pa.Table, *, key: str, as_of: str, written_at_us: int) -> int:
        """Upsert one vector per row of ``rows``: entity in column ``key``, event time in column
        ``as_of`` (timestamp), values in the group's registered columns; returns rows written.

        Columns of ``rows`` that are not registered are ignored; a missing registered column is
        a ``ValidationError`` naming it. Timestamp values are stored as integer microseconds.
        """
        written = check_written_at(written_at_us)
        columns = self.columns(group)
        params = self._params(group, rows, columns, key, as_of, written)
        with self._db.write() as conn:
            stored = self._stored_columns(conn, group)
            if stored != columns:  # re-registered by another handle since we cached it
                self._remember(group, stored)
                params = self._params(group, rows, stored, key, as_of, written)
            conn.executemany(_UPSERT, params)
        return len(params)

    @staticmethod
    def _params(
        group: str,
        rows: pa.Table,
        columns: tuple[str, ...],
        key: str,
        as_of: str,
        written: int,
    ) -> list[tuple[str, str, int, int, bytes]]:
        entities, as_of_us, values = table_rows(group, rows, columns, key=key, as_of=as_of)
        return [
            (entity, group, at, written, _encode(vals))
            for entity, at, vals in zip(entities, as_of_us, values, strict=True)
        ]

    # -- reading ------------------------------------------------------------------------------

    def read(self, entity: str, groups: Sequence[str]) -> dict[str, OnlineVector | None]:
        """The vectors of one entity for ``groups``, in one query (``None`` where absent)."""
        known = self._columns
        for group in groups:
            if group not in known:
                self.columns(group)  # NotFoundError for a group never registered
        result: dict[str, OnlineVector | None] = dict.fromkeys(groups)
        try:
            found = self._db.connection().execute(_READ_ONE, (entity,)).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if found:
            decode = self._decode
            try:
                for group, at, written, vals in found:
                    if group in result:
                        result[group] = OnlineVector(decode(vals), at, written)
            except msgspec.DecodeError as exc:
                raise StorageError(f"a stored vector is unreadable: {exc}", where=entity) from exc
        return result

    def read_many(
        self, entities: Sequence[str], groups: Sequence[str]
    ) -> list[dict[str, OnlineVector | None]]:
        """``read`` for many entities in one query per 900 parameters, in the order given.

        Duplicated entities get equal (but separate) dicts; several queries share one snapshot.
        """
        known = self._columns
        for group in groups:
            if group not in known:
                self.columns(group)
        wanted = list(dict.fromkeys(groups))
        if not entities or not wanted:
            return [{} for _ in entities]
        unique = list(dict.fromkeys(entities))
        chunk = max(1, _MAX_PARAMS - len(wanted))
        found: dict[tuple[str, str], OnlineVector] = {}
        try:
            if len(unique) <= chunk:
                sql = _read_many_sql(len(unique), len(wanted))
                rows = self._db.connection().execute(sql, (*unique, *wanted)).fetchall()
                self._collect(found, rows)
            else:
                with self._db.read() as conn:  # one snapshot across the chunks
                    for start in range(0, len(unique), chunk):
                        part = unique[start : start + chunk]
                        sql = _read_many_sql(len(part), len(wanted))
                        self._collect(found, conn.execute(sql, (*part, *wanted)).fetchall())
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        get = found.get
        return [{group: get((entity, group)) for group in groups} for entity in entities]

    def _collect(
        self,
        found: dict[tuple[str, str], OnlineVector],
        rows: list[tuple[str, str, int, int, bytes]],
    ) -> None:
        decode = self._decode
        try:
            for entity, group, at, written, vals in rows:
                found[entity, group] = OnlineVector(decode(vals), at, written)
        except msgspec.DecodeError as exc:
            raise StorageError(
                f"a stored vector is unreadable: {exc}", where=str(self.path)
            ) from exc

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; later calls raise ``StorageError``."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
