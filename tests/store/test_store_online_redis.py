"""RedisOnlineStore against a real redis-server: the shared contract plus Redis specifics."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
from contract_online import BIKES, OnlineStoreContract, OpenAgain, expected_bikes, write_bikes

from dockline.core.errors import ConfigError, StorageError
from dockline.core.ports import OnlineStore
from dockline.store.online.redis import RedisOnlineStore


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test, so tests share one server without flushing it."""
    return f"t{uuid.uuid4().hex[:12]}"


class TestRedisOnlineStore(OnlineStoreContract):
    @pytest.fixture
    def store(self, redis_url: str, namespace: str) -> Iterator[OnlineStore]:
        handle = RedisOnlineStore(redis_url, namespace=namespace)
        yield handle
        handle.close()

    @pytest.fixture
    def open_again(self, redis_url: str, namespace: str) -> OpenAgain:
        return lambda: RedisOnlineStore(redis_url, namespace=namespace)


def test_layout_is_one_hash_per_entity(redis_url: str, namespace: str) -> None:
    with RedisOnlineStore(redis_url, namespace=namespace) as store:
        write_bikes(store, ["s0", "s1"])
    raw = redis.Redis.from_url(redis_url)
    try:
        assert sorted(raw.scan_iter(match=f"{namespace}:*")) == [
            f"{namespace}:schema".encode(),
            f"{namespace}:v:s0".encode(),
            f"{namespace}:v:s1".encode(),
        ]
        stored = msgspec.msgpack.decode(raw.hget(f"{namespace}:v:s1", "bikes"))
        vector = expected_bikes(1)
        assert stored == [vector.as_of_us, vector.written_at_us, *vector.values]
        schema = msgspec.msgpack.decode(raw.hget(f"{namespace}:schema", "bikes"))
        assert schema == list(BIKES)
    finally:
        raw.close()


def test_namespaces_are_isolated(redis_url: str, namespace: str) -> None:
    with (
        RedisOnlineStore(redis_url, namespace=namespace) as one,
        RedisOnlineStore(redis_url, namespace=namespace + "x") as two,
    ):
        write_bikes(one, ["s0"])
        two.register("bikes", ["other"])
        assert one.read("s0", ["bikes"]) == {"bikes": expected_bikes(0)}
        assert two.read("s0", ["bikes"]) == {"bikes": None}


def test_a_corrupt_vector_is_a_storage_error(redis_url: str, namespace: str) -> None:
    with RedisOnlineStore(redis_url, namespace=namespace) as store:
        write_bikes(store, ["s0"])
        raw = redis.Redis.from_url(redis_url)
        raw.hset(f"{namespace}:v:s0", "bikes", b"\xc1")
        raw.close()
        with pytest.raises(StorageError, match="unreadable"):
            store.read("s0", ["bikes"])


def test_an_unreachable_server_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        RedisOnlineStore("redis://127.0.0.1:1/0")  # nothing listens on port 1


def test_a_server_that_goes_away_is_a_storage_error(redis_url: str, tmp_path: Path) -> None:
    # A server of its own (redis_url only proves redis-server is there), stopped mid-test.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                store = RedisOnlineStore(url)
                break
            except StorageError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        write_bikes(store, ["s0"])
        assert store.read("s0", ["bikes"]) == {"bikes": expected_bikes(0)}
    finally:
        server.terminate()
        server.wait(timeout=10)
    with pytest.raises(StorageError, match="Redis failed"):
        store.read("s0", ["bikes"])
    with pytest.raises(StorageError, match="Redis failed"):
        store.read_many(["s0"], ["bikes"])
    with pytest.raises(StorageError, match="Redis failed"):
        write_bikes(store, ["s0"])
    store.close()


@pytest.mark.parametrize(
    ("url", "namespace"),
    [("http://example.invalid", "ns"), ("redis://127.0.0.1:6379/0", ""), ("redis://x", "a:b")],
)
def test_bad_configuration_is_a_config_error(url: str, namespace: str) -> None:
    with pytest.raises(ConfigError):
        RedisOnlineStore(url, namespace=namespace)


def test_importing_dockline_store_does_not_import_redis() -> None:
    code = (
        "import sys, dockline.store, dockline.store.online;"
        "assert 'redis' not in sys.modules, 'redis imported eagerly';"
        "cls = dockline.store.RedisOnlineStore;"
        "assert cls is dockline.store.online.RedisOnlineStore;"
        "assert 'redis' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
