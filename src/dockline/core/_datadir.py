"""The data directory: where it is (:func:`resolve_data_dir`) and its stable layout
(:class:`DataDir`; DESIGN.md, "Names and places"). One data directory holds all state.

Import these from :mod:`dockline.core.config`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dockline.core._settings import DocklineConfig

__all__ = ["DATA_DIR_ENV", "DEFAULT_DATA_DIR", "DataDir", "resolve_data_dir"]

DATA_DIR_ENV = "DOCKLINE_DATA_DIR"
DEFAULT_DATA_DIR = Path(".dockline")


def resolve_data_dir(value: str | Path | None = None) -> Path:
    """The data directory: the argument, else ``$DOCKLINE_DATA_DIR``, else ``./.dockline``."""
    if value is not None:
        return Path(value)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else DEFAULT_DATA_DIR


class DataDir:
    """Paths inside the data directory. Creating the object touches nothing on disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_file(self) -> Path:
        return self.root / "dockline.toml"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def deadletters(self) -> Path:
        return self.root / "deadletters"

    def offline(self, source: str) -> Path:
        """``offline/<source>/``: Hive-partitioned Parquet (``date=YYYY-MM-DD``)."""
        return self.root / "offline" / source

    @property
    def online_sqlite(self) -> Path:
        return self.root / "online.sqlite"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def mlflow_db(self) -> Path:
        """MLflow's tracking and registry database (artifacts go under ``mlruns/``)."""
        return self.mlruns / "mlflow.db"

    @property
    def tuning_db(self) -> Path:
        """Optuna's study storage."""
        return self.mlruns / "optuna.db"

    @property
    def registry_history(self) -> Path:
        """The append-only alias history (JSON lines), beside MLflow's store."""
        return self.mlruns / "alias_history.jsonl"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def serving_metrics(self) -> Path:
        return self.root / "serving" / "metrics"

    @property
    def serving_predictions(self) -> Path:
        return self.root / "serving" / "predictions"

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    @property
    def lineage(self) -> Path:
        return self.root / "lineage"

    STATE_ENTRIES = (
        "dockline.toml",
        "log",
        "offline",
        "deadletters",
        "online.sqlite",
        "mlruns",
        "bundles",
        "datasets",
    )
    """What makes a directory a dockline data dir: any one of these."""

    def has_state(self) -> bool:
        """Whether this directory holds any dockline state (or configuration)."""
        return any((self.root / entry).exists() for entry in self.STATE_ENTRIES)

    def config(self) -> DocklineConfig:
        """The configuration stored in this data directory (defaults when absent)."""
        return DocklineConfig.load(self.config_file)
