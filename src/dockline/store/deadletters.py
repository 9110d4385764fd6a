"""The embedded dead-letter store: every rejected record, with its reason, in one SQLite file.

``add`` is idempotent on :attr:`DeadLetter.id` (``INSERT OR IGNORE``), so re-ingesting the same
feed document after a crash stores each rejection once. ``pending`` pages through the store with
a keyset cursor, so replaying millions of dead letters needs bounded memory.

>>> import tempfile
>>> store = SqliteDeadLetterStore(Path(tempfile.mkdtemp()) / "deadletters.sqlite")
>>> store.counts()
{}
>>> store.close()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from dockline.core.contracts import DeadLetter, RejectReason
from dockline.core.errors import ValidationError
from dockline.core.time import from_micros, to_micros
from dockline.store._sqlite import SqliteDatabase

__all__ = ["SqliteDeadLetterStore"]

_PAGE = 1000

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw BLOB NOT NULL,
    ingested_at INTEGER NOT NULL,
    key TEXT,
    event_ts INTEGER,
    replayed_at INTEGER
);
CREATE INDEX IF NOT EXISTS dead_letters_order ON dead_letters (ingested_at, seq);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, ingested_at, seq);
CREATE INDEX IF NOT EXISTS dead_letters_pending ON dead_letters (ingested_at, seq)
    WHERE replayed_at IS NULL;
"""

_COLUMNS = "id, source, topic, reason, detail, raw, ingested_at, key, event_ts"


def _init_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_SQL.split(";"):
        if statement.strip():
            conn.execute(statement)


def _to_row(letter: DeadLetter) -> tuple[Any, ...]:
    return (
        letter.id,
        letter.source,
        letter.topic,
        str(letter.reason),
        letter.detail,
        bytes(letter.raw),
        to_micros(letter.ingested_at),
        letter.key,
        None if letter.event_ts is None else to_micros(letter.event_ts),
    )


def _from_row(row: Sequence[Any]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        source=row[1],
        topic=row[2],
        reason=RejectReason(row[3]),
        detail=row[4],
        raw=bytes(row[5]),
        ingested_at=from_micros(row[6]),
        key=row[7],
        event_ts=None if row[8] is None else from_micros(row[8]),
    )


class SqliteDeadLetterStore:
    """:class:`~dockline.core.ports.DeadLetterStore` on SQLite
    (``<data-dir>/deadletters/deadletters.sqlite``).

    "Oldest first" means by ``ingested_at``, then by arrival order. Safe for several threads and
    processes (WAL, one connection per thread).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = SqliteDatabase(self.path, init=_init_schema)
        self._db.connection()  # fail fast on a bad path

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Store ``letters`` (idempotent on ``id``); return how many were new."""
        if not letters:
            return 0
        rows = [_to_row(letter) for letter in letters]
        with self._db.write() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO dead_letters ({_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return conn.total_changes - before

    def counts(self, *, source: str | None = None, pending_only: bool = False) -> dict[str, int]:
        """Number of dead letters by reason, optionally for one ``source`` / only pending ones."""
        where, params = self._filters(source=source, pending_only=pending_only)
        with self._db.errors():
            rows = (
                self._db.connection()
                .execute(
                    f"SELECT reason, count(*) FROM dead_letters{where}"
                    " GROUP BY reason ORDER BY reason",
                    params,
                )
                .fetchall()
            )
        return {str(reason): int(n) for reason, n in rows}

    def examples(self, reason: str, limit: int = 3) -> list[DeadLetter]:
        """A few dead letters with ``reason``, oldest first."""
        if limit < 0:
            raise ValidationError(f"limit must be >= 0; got {limit}", reason="bad_value")
        with self._db.errors():
            rows = (
                self._db.connection()
                .execute(
                    f"SELECT {_COLUMNS} FROM dead_letters WHERE reason = ?"
                    " ORDER BY ingested_at, seq LIMIT ?",
                    (str(reason), limit),
                )
                .fetchall()
            )
        return [_from_row(row) for row in rows]

    def pending(
        self, *, reason: str | None = None, source: str | None = None
    ) -> Iterator[DeadLetter]:
        """Dead letters not yet replayed successfully, oldest first.

        Reads pages of 1,000 with a keyset cursor, so memory stays bounded and marking letters
        replayed while iterating is safe.
        """
        where, params = self._filters(source=source, pending_only=True, reason=reason)
        cursor: tuple[int, int] = (-(2**63), -1)
        while True:
            with self._db.errors():
                rows = (
                    self._db.connection()
                    .execute(
                        f"SELECT {_COLUMNS}, seq FROM dead_letters{where}"
                        " AND (ingested_at, seq) > (?, ?) ORDER BY ingested_at, seq LIMIT ?",
                        (*params, *cursor, _PAGE),
                    )
                    .fetchall()
                )
            for row in rows:
                yield _from_row(row)
            if len(rows) < _PAGE:
                return
            cursor = (int(rows[-1][6]), int(rows[-1][9]))

    def mark_replayed(self, ids: Sequence[str], at: datetime) -> None:
        """Mark dead letters as re-ingested successfully at ``at``; unknown ids are ignored."""
        micros = to_micros(at)
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE dead_letters SET replayed_at = ? WHERE id = ?",
                [(micros, letter_id) for letter_id in ids],
            )

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

    @staticmethod
    def _filters(
        *, source: str | None, pending_only: bool, reason: str | None = None
    ) -> tuple[str, tuple[Any, ...]]:
        clauses = ["1 = 1"]
        params: list[Any] = []
        if pending_only:
            clauses.append("replayed_at IS NULL")
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        if reason is not None:
            clauses.append("reason = ?")
            params.append(str(reason))
        return " WHERE " + " AND ".join(clauses), tuple(params)
