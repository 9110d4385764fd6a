"""SqliteOnlineStore: the shared OnlineStore contract plus SQLite specifics."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from contract_online import (
    BIKES,
    OnlineStoreContract,
    OpenAgain,
    bikes_rows,
    expected_bikes,
    write_bikes,
)

from dockline.core.errors import StorageError
from dockline.core.ports import OnlineStore
from dockline.store import SqliteOnlineStore


class TestSqliteOnlineStore(OnlineStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[OnlineStore]:
        handle = SqliteOnlineStore(tmp_path / "online.sqlite")
        yield handle
        handle.close()

    @pytest.fixture
    def open_again(self, tmp_path: Path) -> OpenAgain:
        return lambda: SqliteOnlineStore(tmp_path / "online.sqlite")


def test_layout_is_one_msgpack_row_per_entity_and_group(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    with SqliteOnlineStore(path) as store:
        write_bikes(store, ["s0", "s1"])
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT entity, grp, as_of_us, written_at_us, vals FROM vectors ORDER BY entity"
        ).fetchall()
        groups = conn.execute("SELECT grp, columns FROM groups").fetchall()
    finally:
        conn.close()
    assert [(e, g) for e, g, *_ in rows] == [("s0", "bikes"), ("s1", "bikes")]
    _, _, as_of_us, written_at_us, vals = rows[1]
    vector = expected_bikes(1)
    assert (as_of_us, written_at_us) == (vector.as_of_us, vector.written_at_us)
    assert tuple(msgspec.msgpack.decode(vals)) == vector.values
    assert groups == [("bikes", msgspec.msgpack.encode(list(BIKES)))]


def test_read_many_spans_the_parameter_limit_in_one_snapshot(tmp_path: Path) -> None:
    with SqliteOnlineStore(tmp_path / "online.sqlite") as store:
        entities = [f"e{i}" for i in range(2500)]
        write_bikes(store, entities)
        got = store.read_many(entities[::-1], ["bikes", "bikes"])
        assert [row["bikes"] for row in got] == [expected_bikes(i) for i in range(2499, -1, -1)]


def test_a_stale_handle_writes_with_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    with SqliteOnlineStore(path) as first, SqliteOnlineStore(path) as second:
        write_bikes(first, ["s0"])
        second.register("bikes", ["ratio", "bikes"])  # first's cache still says BIKES
        first.write("bikes", bikes_rows(["s0"]), key="station_id", as_of="ts", written_at_us=1)
        assert first.columns("bikes") == ("ratio", "bikes")
        vector = second.read("s0", ["bikes"])["bikes"]
        assert vector is not None and vector.values == (0.0, 0)


def test_a_corrupt_vector_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    with SqliteOnlineStore(path) as store:
        write_bikes(store, ["s0"])
        conn = sqlite3.connect(path)
        conn.execute("UPDATE vectors SET vals = x'c1'")  # 0xc1 is never valid msgpack
        conn.commit()
        conn.close()
        with pytest.raises(StorageError, match="unreadable"):
            store.read("s0", ["bikes"])
        with pytest.raises(StorageError, match="unreadable"):
            store.read_many(["s0"], ["bikes"])


def test_sqlite_errors_become_storage_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StorageError):
        SqliteOnlineStore(tmp_path / "dir.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        SqliteOnlineStore(junk)
