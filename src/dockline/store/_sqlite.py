"""Shared SQLite plumbing: one connection per thread, WAL, explicit transactions, error mapping.

SQLite connections must not be shared between threads mid-transaction, so each thread gets its
own connection; WAL lets readers run beside the single writer, and ``busy_timeout`` makes writers
from other threads or processes wait for the write lock instead of failing.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from dockline.core.errors import StorageError

__all__ = ["SqliteDatabase"]

Synchronous = Literal["NORMAL", "FULL"]

_BUSY_TIMEOUT_S = 60.0


class SqliteDatabase:
    """A SQLite file in WAL mode, opened lazily once per thread.

    ``init`` runs once (in a write transaction) when the first connection opens, so several
    processes opening the same file concurrently create the schema exactly once.
    """

    def __init__(
        self,
        path: Path,
        *,
        init: Callable[[sqlite3.Connection], None],
        synchronous: Synchronous = "NORMAL",
        page_size: int = 4096,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise StorageError(
                f"synchronous must be NORMAL or FULL; got {synchronous!r}", where=str(path)
            )
        self.path = Path(path)
        self._init = init
        self._synchronous = synchronous
        self._page_size = page_size
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._initialized = False

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with self._lock:
            if self._closed:
                raise StorageError("the store is closed", reason="closed", where=str(self.path))
            with self.errors():
                conn = self._open()
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE for writers).
        # check_same_thread=False only so close() can close other threads' connections.
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            # page_size only takes effect before the file has content; large pages make the
            # multi-megabyte record-batch blobs cheap to write and read.
            conn.execute(f"PRAGMA page_size={int(self._page_size)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            if not self._initialized:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._init(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                self._initialized = True
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Translate ``sqlite3`` errors into :class:`StorageError`."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite failed: {exc}", where=str(self.path)) from exc

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: take the write lock up front)."""
        conn = self.connection()
        with self.errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back on its own
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several statements."""
        conn = self.connection()
        with self.errors():
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection; later calls raise ``StorageError``."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                conn.close()
