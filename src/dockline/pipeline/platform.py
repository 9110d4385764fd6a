"""The platform value: one data directory, its config, a clock, and the backends they select.

A thin value, not a god object: it knows how to open the configured backends (through dicts of
factories keyed by the config's ``kind``) and nothing about what the stages do with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dockline.core.config import DataDir, DocklineConfig, LogConfig, resolve_data_dir
from dockline.core.errors import ConfigError
from dockline.core.ports import DeadLetterStore, EventLog
from dockline.core.time import Clock, SystemClock
from dockline.store.deadletters import SqliteDeadLetterStore
from dockline.store.log.sqlite import SqliteEventLog
from dockline.store.offline import OfflineStore

__all__ = ["LOG_FACTORIES", "Platform"]


def _sqlite_log(data: DataDir, config: LogConfig) -> EventLog:
    return SqliteEventLog(
        data.log / "log.sqlite",
        synchronous=config.synchronous,
        default_partitions=config.partitions,
    )


LOG_FACTORIES: dict[str, Callable[[DataDir, LogConfig], EventLog]] = {"sqlite": _sqlite_log}
"""Event log implementations by ``LogConfig.kind``."""


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
        return cls(data=data, config=data.config(), clock=clock or SystemClock())

    def open_log(self) -> EventLog:
        """The configured event log."""
        return LOG_FACTORIES[self.config.log.kind](self.data, self.config.log)

    def open_deadletters(self) -> DeadLetterStore:
        """The dead-letter store."""
        return SqliteDeadLetterStore(self.data.deadletters / "deadletters.sqlite")

    def open_offline(self) -> OfflineStore:
        """The offline (Parquet) store."""
        return OfflineStore(self.data.root / "offline", clock=self.clock)
