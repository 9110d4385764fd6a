"""Typed configuration and the data directory layout.

Configuration is frozen pydantic with ``extra="forbid"``, so a typo is an error at load, not a
silently ignored setting. Backends are chosen by a ``kind`` literal through a dict of factories
in the wiring layer, never from class names in strings.

One data directory holds all state; its layout is stable (DESIGN.md, "Names and places").
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from dockline.core.errors import ConfigError, ValidationError
from dockline.core.time import parse_duration

__all__ = [
    "DATA_DIR_ENV",
    "DataDir",
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
    "ServeConfig",
    "TrainConfig",
    "resolve_data_dir",
]

DATA_DIR_ENV = "DOCKLINE_DATA_DIR"
DEFAULT_DATA_DIR = Path(".dockline")


def _duration(value: Any) -> Any:
    """Accept ``"10m"``-style durations besides ISO 8601 (``"PT10M"``) and seconds."""
    if isinstance(value, str) and not value.upper().startswith("P"):
        try:
            return parse_duration(value)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
"""A duration setting: ``"90s"``, ``"10m"``, ``"1d"``, ISO 8601 ``"PT10M"`` or seconds."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogConfig(_Frozen):
    """Which event log, and how it is laid out."""

    kind: Literal["sqlite"] = "sqlite"
    partitions: int = Field(default=4, ge=1, le=256)
    # FULL survives power loss; NORMAL (WAL) survives process crashes, which is what kill -9 needs.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"


class IngestConfig(_Frozen):
    """Validation policy at the edge."""

    allowed_lateness: Duration = timedelta(minutes=10)
    """Events older than the station's newest event minus this go to dead letters as ``late``."""
    stale_after: Duration = timedelta(days=1)
    """Events whose time is further than this behind ``ingested_at`` are ``stale``."""
    future_tolerance: Duration = timedelta(minutes=5)
    """Events whose time is ahead of ``ingested_at`` by more than this are ``future``."""
    publication_delay: Duration = timedelta(seconds=0)
    """For archives without ``ingested_at``: ``ingested_at = event_ts + publication_delay``."""
    batch_rows: int = Field(default=200_000, ge=1)
    """Rows per batch when reading tabular archives."""


class OfflineConfig(_Frozen):
    """The offline store sink."""

    read_batch: int = Field(default=500_000, ge=1)
    """Records the sink reads from one partition of the log per step."""


class OnlineConfig(_Frozen):
    """Which online store serves the latest feature vectors."""

    kind: Literal["sqlite", "redis"] = "sqlite"
    url: str = "redis://127.0.0.1:6379/0"
    """For ``kind = "redis"``."""
    namespace: str = "dockline"


class FeaturesConfig(_Frozen):
    """The project whose features are materialized and served."""

    project: str = "examples/bikeshare"
    """Path of the project (a directory with ``project.py``, or the file)."""
    memory_limit: str = "2GB"
    """DuckDB's memory limit for offline feature computation (it spills beyond)."""


class TrainConfig(_Frozen):
    """How ``dockline train`` splits, tunes, calibrates, thresholds and gates."""

    label: str = "empty_next_hour"
    model_name: str | None = None
    """Registered model name; defaults to ``<project>-<label>``."""
    candidates: tuple[str, ...] = ("logistic", "lightgbm", "extra_trees")
    """Trained candidates; the baselines ``persistence`` and ``hour_of_week`` always run."""
    seed: int = 0
    split: tuple[float, float, float, float] = (0.6, 0.1, 0.1, 0.2)
    """Fractions of the time range for train, validation, calibration and test, in time order."""
    embargo: Duration | None = None
    """Gap between consecutive splits; at least the label horizon (None: exactly the horizon)."""
    cv_folds: int = Field(default=3, ge=2)
    n_trials: int = Field(default=12, ge=0)
    """Optuna trials per tuned candidate (0: defaults only)."""
    tuning_storage: str | None = None
    """Optuna storage URL; None: SQLite in the data directory."""
    primary_metric: Literal["pr_auc", "roc_auc", "brier", "log_loss"] = "pr_auc"
    threshold_policy: Literal["target_precision", "expected_cost"] = "target_precision"
    target_precision: float = Field(default=0.5, gt=0, le=1)
    cost_false_alarm: float = Field(default=1.0, gt=0)
    cost_miss: float = Field(default=5.0, gt=0)
    gate_margin: float = Field(default=0.0, ge=0)
    """The primary metric must beat baselines and the champion by at least this (absolute)."""
    max_ece: float = Field(default=0.05, gt=0)
    parity_tolerance: float = Field(default=1e-5, gt=0)
    max_rows: int | None = Field(default=None, ge=1000)
    """Subsample training rows (by entity-hash, deterministic) beyond this; None: all."""


class ServeConfig(_Frozen):
    """How ``dockline serve`` answers, gates freshness and reports."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    model_name: str | None = None
    """Defaults to the train section's model name."""
    max_feature_age: Duration = timedelta(minutes=10)
    stale_policy: Literal["flag", "baseline", "reject"] = "flag"
    max_batch: int = Field(default=256, ge=1)
    admin_token: str | None = None
    """Bearer token for ``/v1/admin/*`` (env ``DOCKLINE_ADMIN_TOKEN`` overrides); unset: 401."""
    reload_poll: Duration = timedelta(seconds=5)
    routing: Literal["champion", "shadow", "canary"] = "champion"
    canary_share: float = Field(default=0.1, ge=0, le=1)
    metrics_window: Duration = timedelta(seconds=60)
    prediction_flush_rows: int = Field(default=2000, ge=1)
    prediction_flush_interval: Duration = timedelta(seconds=2)
    deployment_id: str = "local"
    environment: str = "development"
    # -- serving under hostile clients and write failures (issue 12 §3, §5) -----------------
    request_timeout: Duration = timedelta(seconds=10)
    """A request's headers, and then its body, must each arrive within this (else 408)."""
    keep_alive_timeout: Duration = timedelta(seconds=5)
    """An idle keep-alive connection is closed after this."""
    max_connections: int = Field(default=2000, ge=1)
    """Open connections at most (also capped below the process's file limit)."""
    write_buffer_rows: int = Field(default=50_000, ge=1)
    """Prediction-log rows kept in memory while the disk refuses writes; beyond, dropped
    and counted (``dockline_serving_rows_dropped_total``)."""


class ClockConfig(_Frozen):
    """Which clock "now" is read from (serving's request times and feature ages).

    ``system``: the wall clock. ``data``: simulated or replayed data — the clock starts, when a
    command opens the data dir, at the newest ingestion time in the offline store and runs at
    ``speed``; ``dockline demo`` sets it, so serving its data later answers fresh, not years old.
    """

    kind: Literal["system", "data"] = "system"
    speed: float = Field(default=1.0, gt=0)


# -- monitor (P6) ------------------------------------------------------------------------------


class MonitorHealthConfig(_Frozen):
    """``[monitor.health]``: deployment health thresholds (seed 003's names and defaults).

    Every comparison is strict: a value exactly at its threshold passes.
    """

    latency_p95_ms: float = Field(default=500.0, gt=0)
    latency_p99_ms: float = Field(default=1000.0, gt=0)
    failure_rate_pct: float = Field(default=5.0, ge=0, le=100)
    rejection_rate_pct: float = Field(default=5.0, ge=0, le=100)
    expected_window_seconds: float = Field(default=60.0, gt=0)
    max_allowed_gap_factor: float = Field(default=2.0, ge=1)
    max_missing_windows: int = Field(default=3, ge=0)
    max_gap_minutes: float = Field(default=5.0, gt=0)
    max_staleness_minutes: float = Field(default=10.0, gt=0)
    lookback: Duration = timedelta(minutes=15)
    """Only windows ending in the last ``lookback`` are judged (staleness looks at all)."""
    min_requests: int = Field(default=20, ge=1)
    """Below this many requests in the lookback, the rate checks are inconclusive."""


class MonitorFreshnessConfig(_Frozen):
    """``[monitor.freshness]``: a dataset or vector is FRESH iff its age < threshold."""

    threshold_seconds: float = Field(default=1800.0, gt=0)
    online_lookback: Duration = timedelta(hours=1)
    """Served vectors of this last period make the online-vector age distribution."""
    training_max_age: Duration = timedelta(days=7)
    """The champion's training data is FRESH iff its newest row is younger than this."""


class MonitorDriftConfig(_Frozen):
    """``[monitor.drift]``: effect-size thresholds, and when a classical test decides instead."""

    window: Duration = timedelta(hours=1)
    """Per-feature verdicts on the prediction log's last ``window``."""
    dataset_window: Duration = timedelta(hours=24)
    """The dataset-level verdict (the retraining trigger) on the merged sketches of this
    trailing period: a whole daily cycle has the training data's mix of hours, one hour of a
    diurnal process never does."""
    psi_threshold: float = Field(default=0.2, gt=0)
    wasserstein_threshold: float = Field(default=0.1, gt=0)
    """Wasserstein-1 distance divided by the reference standard deviation."""
    jensenshannon_threshold: float = Field(default=0.1, gt=0, le=1)
    small_sample: int = Field(default=1000, ge=10)
    """Below this many current values, a chi-square test (``alpha``) decides instead."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """Dataset-level drift when at least this share of the features drifted."""
    categorical_max_values: int = Field(default=12, ge=2)
    """A reference with at most this many distinct integer values is treated as categorical."""
    exclude: tuple[str, ...] = ()
    """Features left out of drift (e.g. ones that grow without bound by design)."""


class MonitorConfig(_Frozen):
    """``[monitor]``: health, freshness and drift settings."""

    health: MonitorHealthConfig = MonitorHealthConfig()
    freshness: MonitorFreshnessConfig = MonitorFreshnessConfig()
    drift: MonitorDriftConfig = MonitorDriftConfig()


# -- end monitor ---------------------------------------------------------------------------------


# -- lineage -------------------------------------------------------------------------------------


class LineageConfig(_Frozen):
    """``[lineage]``: OpenLineage events always go to ``<data-dir>/lineage/`` (NDJSON, one file
    per day); with ``url`` they are also POSTed there (Marquez: ``http://host:5000``)."""

    url: str | None = None
    endpoint: str = "api/v1/lineage"
    timeout: Duration = timedelta(seconds=5)
    api_key: str | None = None


# -- end lineage ---------------------------------------------------------------------------------


class DocklineConfig(_Frozen):
    """All of dockline's settings, loaded from ``<data-dir>/dockline.toml`` when present."""

    log: LogConfig = LogConfig()
    ingest: IngestConfig = IngestConfig()
    offline: OfflineConfig = OfflineConfig()
    online: OnlineConfig = OnlineConfig()
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig = TrainConfig()
    serve: ServeConfig = ServeConfig()
    clock: ClockConfig = ClockConfig()
    monitor: MonitorConfig = MonitorConfig()
    lineage: LineageConfig = LineageConfig()

    @classmethod
    def load(cls, path: Path | None) -> Self:
        """Read ``path`` (TOML); a missing ``path`` gives the defaults."""
        if path is None or not path.exists():
            return cls()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
            return cls.model_validate(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", where=str(path)) from exc
        except PydanticValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{loc}: {err['msg']}", where=str(path)) from exc


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

    def config(self) -> DocklineConfig:
        """The configuration stored in this data directory (defaults when absent)."""
        return DocklineConfig.load(self.config_file)
