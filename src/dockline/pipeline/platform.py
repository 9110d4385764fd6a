"""The platform value: one data directory, its config, a clock, and the backends they select.

A thin value, not a god object: it knows how to open the configured backends (through dicts of
factories keyed by the config's ``kind``) and nothing about what the stages do with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from dockline.core.config import DataDir, DocklineConfig, LogConfig, resolve_data_dir
from dockline.core.errors import ConfigError
from dockline.core.ports import DeadLetterStore, EventLog
from dockline.core.time import Clock, ScaledClock, SystemClock, ensure_utc
from dockline.store.deadletters import SqliteDeadLetterStore
from dockline.store.log.sqlite import SqliteEventLog
from dockline.store.offline import OfflineStore

__all__ = ["LOG_FACTORIES", "Platform", "configured_clock", "newest_ingestion"]


def _sqlite_log(data: DataDir, config: LogConfig) -> EventLog:
    return SqliteEventLog(
        data.log / "log.sqlite",
        synchronous=config.synchronous,
        default_partitions=config.partitions,
    )


def _kafka_log(data: DataDir, config: LogConfig) -> EventLog:
    from dockline.store.log.kafka import KafkaEventLog  # the kafka extra, only if chosen

    assert config.bootstrap_servers is not None  # LogConfig checks it for kind = "kafka"
    return KafkaEventLog(
        config.bootstrap_servers,
        topic_prefix=config.topic_prefix,
        default_partitions=config.partitions,
        retention_ms=config.retention_ms,
        timeout=config.timeout,
    )


LOG_FACTORIES: dict[str, Callable[[DataDir, LogConfig], EventLog]] = {
    "sqlite": _sqlite_log,
    "kafka": _kafka_log,
}
"""Event log implementations by ``LogConfig.kind``."""


def newest_ingestion(data: DataDir) -> datetime | None:
    """The newest ``ingested_at`` in the offline store (from Parquet statistics), or None."""
    files = sorted((data.root / "offline").glob("*/date=*/*.parquet"))
    newest: datetime | None = None
    for path in files:
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.names
        if "ingested_at" not in names:
            continue
        column = names.index("ingested_at")
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(column).statistics
            if stats is not None and stats.has_min_max:
                top = ensure_utc(stats.max)
                newest = top if newest is None or top > newest else newest
    return newest


def configured_clock(data: DataDir, config: DocklineConfig) -> Clock:
    """The clock ``[clock]`` selects; ``data`` on an empty offline store is the wall clock."""
    if config.clock.kind == "data":
        start = newest_ingestion(data)
        if start is not None:
            return ScaledClock(start, config.clock.speed)
    return SystemClock()


@dataclass(frozen=True)
class Platform:
    """Where state lives and how to reach it. Open backends with the ``open_*`` methods."""

    data: DataDir
    config: DocklineConfig
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def open(
        cls,
        data_dir: str | Path | None = None,
        *,
        clock: Clock | None = None,
        existing: bool = False,
    ) -> Platform:
        """The platform for ``data_dir`` (see :func:`resolve_data_dir`), creating the directory.

        With ``existing`` (commands that read state) the directory must exist and hold dockline
        state: a typo'd path is refused instead of silently becoming a new, empty data dir.
        """
        data = DataDir(resolve_data_dir(data_dir))
        if existing:
            if not data.root.is_dir():
                raise ConfigError(
                    "no such data dir; pass --data-dir DIR (or set DOCKLINE_DATA_DIR) to one"
                    " that `dockline ingest` or `dockline demo` has filled",
                    reason="no_data_dir",
                    where=str(data.root),
                )
            if not data.has_state():
                raise ConfigError(
                    "not a dockline data dir (it holds no dockline state); run `dockline ingest`"
                    " first (or `dockline demo`) with --data-dir pointing here",
                    reason="no_data_dir",
                    where=str(data.root),
                )
        else:
            data.root.mkdir(parents=True, exist_ok=True)
        config = data.config()
        return cls(data=data, config=config, clock=clock or configured_clock(data, config))

    def open_log(self) -> EventLog:
        """The configured event log."""
        return LOG_FACTORIES[self.config.log.kind](self.data, self.config.log)

    def open_deadletters(self) -> DeadLetterStore:
        """The dead-letter store; with the Kafka log, new letters also go to its dead-letter
        topic (the SQLite store stays the store of record: counts, examples, replay)."""
        store = SqliteDeadLetterStore(self.data.deadletters / "deadletters.sqlite")
        log = self.config.log
        if log.kind == "kafka" and log.bootstrap_servers:
            from dockline.store.log.kafka_deadletters import KafkaDeadLetterStore

            return KafkaDeadLetterStore(
                store,
                log.bootstrap_servers,
                topic_prefix=log.topic_prefix,
                retention_ms=log.retention_ms,
                timeout=log.timeout,
            )
        return store

    def open_offline(self) -> OfflineStore:
        """The offline (Parquet) store."""
        return OfflineStore(self.data.root / "offline", clock=self.clock)
