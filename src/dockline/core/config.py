"""Typed configuration and the data directory layout.

Configuration is frozen pydantic with ``extra="forbid"``, so a typo is an error at load, not a
silently ignored setting. Backends are chosen by a ``kind`` literal through a dict of factories
in the wiring layer, never from class names in strings.

One data directory holds all state; its layout is stable (DESIGN.md, "Names and places").
"""

from __future__ import annotations

# The code lives in private modules, one idea each; every name stays importable from here.
#   _sections.py      the data path's sections (log … clock), _Frozen and Duration
#   _sections_ops.py  the operations' sections (monitor … tracing)
#   _settings.py      DocklineConfig (the whole file) and the TOML helpers
#   _datadir.py       resolve_data_dir and DataDir
# A new section: a class in a _sections module (in its own block) and a field of DocklineConfig.
from dockline.core._datadir import DATA_DIR_ENV, DataDir, resolve_data_dir
from dockline.core._datadir import DEFAULT_DATA_DIR as DEFAULT_DATA_DIR
from dockline.core._sections import (
    COMPANION_PREFIX,
    FeaturesConfig,
    IngestConfig,
    LogConfig,
    OfflineConfig,
    OnlineConfig,
    ServeConfig,
    TrainConfig,
    TrainSlicesConfig,
)
from dockline.core._sections import ClockConfig as ClockConfig
from dockline.core._sections import Duration as Duration
from dockline.core._sections_ops import (
    CdcConfig,
    DecideConfig,
    LineageConfig,
    MonitorConfig,
    MonitorDriftConfig,
    MonitorFreshnessConfig,
    MonitorHealthConfig,
    RegistryConfig,
    TracingConfig,
)
from dockline.core._sections_ops import MonitorCanaryConfig as MonitorCanaryConfig
from dockline.core._sections_ops import MonitorLoopConfig as MonitorLoopConfig
from dockline.core._settings import DocklineConfig, config_errors, read_toml, record_project

__all__ = [
    "COMPANION_PREFIX",
    "DATA_DIR_ENV",
    "CdcConfig",
    "DataDir",
    "DecideConfig",
    "DocklineConfig",
    "FeaturesConfig",
    "IngestConfig",
    "LineageConfig",
    "LogConfig",
    "MonitorConfig",
    "MonitorDriftConfig",
    "MonitorFreshnessConfig",
    "MonitorHealthConfig",
    "OfflineConfig",
    "OnlineConfig",
    "RegistryConfig",
    "ServeConfig",
    "TracingConfig",
    "TrainConfig",
    "TrainSlicesConfig",
    "config_errors",
    "read_toml",
    "record_project",
    "resolve_data_dir",
]
