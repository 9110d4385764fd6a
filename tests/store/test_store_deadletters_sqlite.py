"""SqliteDeadLetterStore: the shared contract plus SQLite specifics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from contract_deadletters import DeadLetterStoreContract, MakeStore, letter

from dockline.core.errors import StorageError
from dockline.store import SqliteDeadLetterStore


class TestSqliteDeadLetterStore(DeadLetterStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        return lambda: SqliteDeadLetterStore(tmp_path / "deadletters" / "deadletters.sqlite")


def test_bulk_add_with_many_duplicates_is_fast(tmp_path: Path) -> None:
    store = SqliteDeadLetterStore(tmp_path / "dl.sqlite")
    letters = [letter(i % 5000) for i in range(20_000)]
    started = time.perf_counter()
    assert store.add(letters) == 5000
    assert store.add(letters) == 0
    elapsed = time.perf_counter() - started
    store.close()
    assert elapsed < 2.0, elapsed


def test_closed_store_raises_storage_error(tmp_path: Path) -> None:
    store = SqliteDeadLetterStore(tmp_path / "dl.sqlite")
    store.close()
    with pytest.raises(StorageError):
        store.counts()


def test_unusable_path_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StorageError):
        SqliteDeadLetterStore(tmp_path / "dir.sqlite")
