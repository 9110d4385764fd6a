"""The distributed online store: the latest vector per (entity, group) in Redis hashes.

Layout under a namespace ``ns`` (several stores can share one Redis database):

* ``{ns}:v:{entity}`` — a hash per entity: field = group, value = msgpack
  ``[as_of_us, written_at_us, *values]`` (values in the group's registered column order);
* ``{ns}:schema`` — a hash: field = group, value = msgpack list of its columns.

A ``read`` is one ``HMGET``; a ``read_many`` is one pipelined round trip of ``HMGET``\\ s; a
``write`` sends pipelined ``HSET``\\ s in chunks (not a transaction: a failed write may leave
earlier chunks written, and retrying it is safe because writes are upserts).

Registered columns are cached per client after ``register`` or the first ``columns``; a client
does not see another client's re-registration until it calls ``register`` itself (or is
reopened). Re-registering other columns deletes the group's stored vectors (a ``SCAN`` over the
namespace): run it while no writer is writing that group.

This module needs the ``redis`` extra (``pip install 'dockline[redis]'``); nothing else in
dockline imports it eagerly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Self, cast
from urllib.parse import urlsplit

import msgspec
import pyarrow as pa

from dockline.core.errors import ConfigError, NotFoundError, StorageError
from dockline.core.ports import OnlineValue, OnlineVector
from dockline.store.online._rows import check_columns, check_group, check_written_at, table_rows

try:
    import redis
    from redis.exceptions import RedisError
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "RedisOnlineStore needs the redis package: pip install 'dockline[redis]'"
    ) from _exc

__all__ = ["RedisOnlineStore"]

_WRITE_CHUNK = 2000
_DELETE_CHUNK = 500

_encode = msgspec.msgpack.Encoder().encode
_columns_decoder = msgspec.msgpack.Decoder(tuple[str, ...])
_GLOB_SPECIALS = re.compile(r"([*?\[\]\\])")


def _safe_url(url: str) -> str:
    """``url`` without credentials, for error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisOnlineStore:
    """:class:`~dockline.core.ports.OnlineStore` on Redis (≥ 6), through redis-py.

    The client is thread-safe (a connection pool; each call takes a connection), so one store
    can serve many threads. Values follow :class:`~dockline.store.online.SqliteOnlineStore`:
    int, float (NaN kept), str, bool, ``None``; tz-aware timestamps become integer
    microseconds since the epoch.
    """

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, namespace: str = "dockline"
    ) -> None:
        if not namespace or ":" in namespace:
            raise ConfigError(
                f"namespace must be a non-empty string without ':'; got {namespace!r}",
                reason="bad_value",
            )
        self.namespace = namespace
        self._where = _safe_url(url)
        try:
            self._client = redis.Redis.from_url(url)
        except ValueError as exc:
            raise ConfigError(
                f"url must be a redis:// URL; got {self._where!r}", reason="bad_value"
            ) from exc
        self._prefix = f"{namespace}:v:"
        self._schema_key = f"{namespace}:schema"
        self._columns: dict[str, tuple[str, ...]] = {}
        self._decode: Callable[[bytes], tuple[OnlineValue, ...]] = msgspec.msgpack.Decoder(
            tuple  # msgspec's typed unions cannot mix str and bytes
        ).decode
        self._closed = False
        with self._errors():
            self._client.ping()  # fail fast when the server is unreachable

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate redis-py and decoding errors into :class:`StorageError`."""
        if self._closed:
            raise StorageError("the store is closed", reason="closed", where=self._where)
        try:
            yield
        except RedisError as exc:
            raise StorageError(f"Redis failed: {exc}", where=self._where) from exc
        except msgspec.DecodeError as exc:
            raise StorageError(f"a stored value is unreadable: {exc}", where=self._where) from exc

    # -- groups -------------------------------------------------------------------------------

    def register(self, group: str, columns: Sequence[str]) -> None:
        """Declare (or re-declare, replacing) the ordered value columns of ``group``.

        Re-declaring other columns deletes the group's stored vectors (see the module notes).
        """
        check_group(group)
        wanted = check_columns(group, columns)
        blob = _encode(wanted)
        with self._errors():
            old = self._client.hget(self._schema_key, group)
            if old != blob:
                self._client.hset(self._schema_key, group, blob)
            if old is not None and old != blob:
                self._delete_group(group)
        self._columns[group] = wanted

    def _delete_group(self, group: str) -> None:
        pattern = _GLOB_SPECIALS.sub(r"\\\1", self._prefix) + "*"
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        for key in self._client.scan_iter(match=pattern, count=1000):
            pipe.hdel(key, group)
            pending += 1
            if pending >= _DELETE_CHUNK:
                pipe.execute()
                pending = 0
        if pending:
            pipe.execute()

    def columns(self, group: str) -> tuple[str, ...]:
        """The registered columns of ``group`` (``NotFoundError`` if never registered)."""
        cached = self._columns.get(group)
        if cached is not None:
            return cached
        with self._errors():
            blob = self._client.hget(self._schema_key, group)
            if blob is None:
                raise NotFoundError(
                    "group is not registered; call register() first",
                    reason="unknown_group",
                    where=group,
                )
            stored = _columns_decoder.decode(cast(bytes, blob))
        self._columns[group] = stored
        return stored

    # -- writing ------------------------------------------------------------------------------

    def write(self, group: str, rows: pa.Table, *, key: str, as_of: str, written_at_us: int) -> int:
        """Upsert one vector per row of ``rows``: entity in column ``key``, event time in column
        ``as_of`` (timestamp), values in the group's registered columns; returns rows written.

        Columns of ``rows`` that are not registered are ignored; a missing registered column is
        a ``ValidationError`` naming it. When ``rows`` holds an entity twice the last row wins.
        """
        written = check_written_at(written_at_us)
        columns = self.columns(group)
        entities, as_of_us, values = table_rows(group, rows, columns, key=key, as_of=as_of)
        prefix = self._prefix
        count = 0
        with self._errors():
            pipe = self._client.pipeline(transaction=False)
            # execute_command skips hset()'s argument handling; untyped in redis-py, hence cast.
            hset = cast(Callable[..., object], pipe.execute_command)
            for entity, at, vals in zip(entities, as_of_us, values, strict=True):
                hset("HSET", prefix + entity, group, _encode((at, written, *vals)))
                count += 1
                if count % _WRITE_CHUNK == 0:
                    pipe.execute()
            if count % _WRITE_CHUNK:
                pipe.execute()
        return count

    # -- reading ------------------------------------------------------------------------------

    def _vector(self, blob: bytes) -> OnlineVector:
        stored = self._decode(blob)
        at = stored[0]
        written = stored[1]
        if type(at) is int and type(written) is int:
            return OnlineVector(stored[2:], at, written)
        raise StorageError("a stored vector has no integer times", where=self._where)

    def read(self, entity: str, groups: Sequence[str]) -> dict[str, OnlineVector | None]:
        """The vectors of one entity for ``groups``, in one ``HMGET`` (``None`` where absent)."""
        known = self._columns
        for group in groups:
            if group not in known:
                self.columns(group)  # NotFoundError for a group never registered
        if not groups:
            return {}
        with self._errors():
            blobs = self._client.hmget(self._prefix + entity, groups)
            vector = self._vector
            return {
                group: None if blob is None else vector(blob)  # type: ignore[arg-type]
                for group, blob in zip(groups, blobs, strict=True)
            }

    def read_many(
        self, entities: Sequence[str], groups: Sequence[str]
    ) -> list[dict[str, OnlineVector | None]]:
        """``read`` for many entities in one pipelined round trip, in the order given.

        Duplicated entities are fetched once and get equal (but separate) dicts.
        """
        known = self._columns
        for group in groups:
            if group not in known:
                self.columns(group)
        wanted = list(dict.fromkeys(groups))
        if not entities or not wanted:
            return [{} for _ in entities]
        unique = list(dict.fromkeys(entities))
        prefix = self._prefix
        with self._errors():
            pipe = self._client.pipeline(transaction=False)
            hmget = cast(Callable[..., object], pipe.execute_command)
            for entity in unique:
                hmget("HMGET", prefix + entity, *wanted)
            replies: list[list[bytes | None]] = pipe.execute()
            vector = self._vector
            by_entity = {
                entity: {
                    group: None if blob is None else vector(blob)
                    for group, blob in zip(wanted, blobs, strict=True)
                }
                for entity, blobs in zip(unique, replies, strict=True)
            }
        return [by_entity[entity].copy() for entity in entities]

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool; later calls raise ``StorageError``."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
