"""The settings sections of the data path: log, ingest, offline, online, features, train, serve,
clock; and what every section is built from (``_Frozen``, ``Duration``).

Import them from :mod:`dockline.core.config`. Configuration is frozen pydantic with
``extra="forbid"``, so a typo is an error at load, not a silently ignored setting.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from dockline.core.errors import ValidationError
from dockline.core.time import parse_duration

__all__ = [
    "COMPANION_PREFIX",
    "ClockConfig",
    "Duration",
    "FeaturesConfig",
    "IngestConfig",
    "LogConfig",
    "OfflineConfig",
    "OnlineConfig",
    "ServeConfig",
    "TrainConfig",
    "TrainSlicesConfig",
]


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
    # Attribute docstrings become field descriptions: the reference page (docs/reference/config.md)
    # is generated from them.
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class LogConfig(_Frozen):
    """Which event log, and how it is laid out."""

    kind: Literal["sqlite", "kafka"] = "sqlite"
    """The event log: ``sqlite`` (embedded, ``log/log.sqlite``) or ``kafka`` (a Kafka-protocol
    broker at ``bootstrap_servers``; nothing is then written to the embedded log)."""
    partitions: int = Field(default=4, ge=1, le=256)
    """Partitions of a new topic; events are keyed by station, so order holds per station."""
    # FULL survives power loss; NORMAL (WAL) survives process crashes, which is what kill -9 needs.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    """SQLite's durability: NORMAL survives a crashed process, FULL a power loss (slower)."""

    # -- log: the Kafka-protocol log (issue 17) ------------------------------------------------
    bootstrap_servers: str | None = None
    """For ``kind = "kafka"``: the broker(s), ``"host:port[,host:port…]"``."""
    topic_prefix: str = Field(default="dockline.", pattern=r"^[A-Za-z0-9._-]*$")
    """For ``kind = "kafka"``: prefix of every topic and consumer group, so deployments can
    share a cluster (``dockline.station_status``, ``dockline.__commits``, …)."""
    retention_ms: int = Field(default=-1, ge=-1)
    """For ``kind = "kafka"``: ``retention.ms`` set on the topics dockline creates (-1: keep
    forever; the log is the source of truth the offline store is rebuilt from)."""
    timeout: float = Field(default=15.0, gt=0)
    """For ``kind = "kafka"``: seconds to wait for the broker before an operation fails."""

    @model_validator(mode="after")
    def _kafka_needs_servers(self) -> Self:
        if self.kind == "kafka" and not self.bootstrap_servers:
            raise ValueError('kind = "kafka" needs bootstrap_servers = "host:port"')
        return self

    # -- end log: Kafka --------------------------------------------------------------------------


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
    # -- ingest: plausible event times (issue 12) ------------------------------------------
    plausible_from: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    """Events before this are ``stale`` wherever they come from (archives included)."""
    plausible_until: datetime = datetime(2100, 1, 1, tzinfo=UTC)
    """Events after this are ``future`` wherever they come from (archives included)."""

    @model_validator(mode="after")
    def _plausible_range(self) -> Self:
        for name in ("plausible_from", "plausible_until"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"{name} must have a time zone (e.g. 2000-01-01T00:00:00Z)")
        if self.plausible_from >= self.plausible_until:
            raise ValueError("plausible_from must be before plausible_until")
        return self


class OfflineConfig(_Frozen):
    """The offline store sink."""

    read_batch: int = Field(default=500_000, ge=1)
    """Records the sink reads from one partition of the log per step."""


class OnlineConfig(_Frozen):
    """Which online store serves the latest feature vectors."""

    kind: Literal["sqlite", "redis"] = "sqlite"
    """The online store: ``online.sqlite`` in the data dir, or a Redis server at ``url``."""
    url: str = "redis://127.0.0.1:6379/0"
    """For ``kind = "redis"``."""
    namespace: str = "dockline"
    """Prefix of every Redis key, so several deployments can share one server."""


class FeaturesConfig(_Frozen):
    """The project whose features are materialized and served."""

    project: str | None = None
    """Path of the project (a directory with ``project.py``, or the file); a relative path is
    relative to the data dir. None: the bike-share example shipped with dockline. Recorded here
    the first time a command is given ``--project`` (env ``DOCKLINE_PROJECT`` overrides)."""
    memory_limit: str = "2GB"
    """DuckDB's memory limit for offline feature computation (it spills beyond)."""
    # -- offline engine (issue 17) --
    engine: Literal["duckdb", "spark"] = "duckdb"
    """Engine of ``dockline dataset build`` (``--engine`` overrides): ``duckdb`` (embedded) or
    ``spark`` (pyspark local mode, ``pip install 'dockline[spark]'`` and Java); same plan, same
    rows."""
    # -- end offline engine --


# -- train slices (issue 16) --------------------------------------------------------------------


class TrainSlicesConfig(_Frozen):
    """``[train.slices]``: performance per slice in the report and the promotion gate.

    Slice families: ``geography`` (k-means of station positions), ``capacity`` and ``activity``
    bands (station terciles unless edges are given), ``hour`` bands and ``day_type``. A slice
    is judged only with at least ``min_rows`` rows and ``min_positives`` positives (else
    *inconclusive*); it is *worse* when the candidate trails persistence on ``metric`` by more
    than ``tolerance`` and the station-bootstrap interval of the difference excludes zero.
    """

    metric: Literal["pr_auc", "brier"] = "pr_auc"
    """The metric a slice is judged on (candidate against persistence)."""
    tolerance: float = Field(default=0.02, ge=0)
    """How much worse than persistence (absolute, on ``metric``) a slice may be unflagged."""
    min_rows: int = Field(default=200, ge=1)
    """Fewer test rows in a slice: inconclusive, never judged."""
    min_positives: int = Field(default=20, ge=1)
    """Fewer positive labels in a slice: inconclusive, never judged."""
    bootstrap: int = Field(default=200, ge=0)
    """Station-block bootstrap replicates for the difference's interval (0: point estimate
    only, so ``tolerance`` alone decides)."""
    confidence: float = Field(default=0.9, gt=0, lt=1)
    """Coverage of that interval."""
    on_flag: Literal["warn", "fail"] = "warn"
    """``warn``: a flagged slice is a warning in the gate's verdict; ``fail``: it fails the gate."""
    geo_clusters: int = Field(default=4, ge=0)
    """k of the k-means over station positions (``lat__static``/``lon__static``); 0: no
    geography slices."""
    capacity_edges: tuple[float, ...] = ()
    """Capacity band edges (e.g. ``[15, 25]``); empty: the stations' capacity terciles."""
    activity_feature: str | None = None
    """The station's median of this feature over the train split is its activity; None: its
    historical turnover, the mean absolute change of ``num_bikes_available__last`` between
    consecutive snapshots in the train split."""
    activity_edges: tuple[float, ...] = ()
    """Activity band edges; empty: the stations' activity terciles."""
    hour_bands: tuple[tuple[str, int], ...] = (
        ("night", 0),
        ("morning peak", 6),
        ("midday", 10),
        ("evening peak", 16),
        ("evening", 19),
    )
    """(name, first hour) of each hour band, hours ascending from 0; a band lasts until the next."""
    tz: str | None = None
    """Time zone of the hour bands; None: the dataset's ``hour_of_day`` feature (the project
    calendar's zone), or UTC when it has none."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        starts = [h for _, h in self.hour_bands]
        ascending = all(b > a for a, b in itertools.pairwise(starts))
        if starts and (starts[0] != 0 or not ascending or starts[-1] > 23):
            raise ValueError("hour_bands must start at hour 0 and ascend strictly within 0-23")
        edges = {"capacity_edges": self.capacity_edges, "activity_edges": self.activity_edges}
        for name, values in edges.items():
            if any(b <= a for a, b in itertools.pairwise(values)):
                raise ValueError(f"{name} must ascend strictly")
        if self.tz is not None:
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(self.tz)
            except (ValueError, KeyError):
                raise ValueError(f"tz must be an IANA time zone; got {self.tz!r}") from None
        return self


# -- end train slices ---------------------------------------------------------------------------


class TrainConfig(_Frozen):
    """How ``dockline train`` splits, tunes, calibrates, thresholds and gates."""

    label: str = "empty_next_hour"
    """The project's label ``dockline train`` trains for (``--label`` overrides)."""
    model_name: str | None = None
    """Registered model name; defaults to ``<project>-<label>``."""
    candidates: tuple[str, ...] = ("logistic", "lightgbm", "extra_trees")
    """Trained candidates; the baselines ``persistence`` and ``hour_of_week`` always run."""
    seed: int = 0
    """Seed of every random choice in training: same data, config and seed, same bundle."""
    split: tuple[float, float, float, float] = (0.6, 0.1, 0.1, 0.2)
    """Fractions of the time range for train, validation, calibration and test, in time order."""
    embargo: Duration | None = None
    """Gap between consecutive splits; at least the label horizon (None: exactly the horizon)."""
    cv_folds: int = Field(default=3, ge=2)
    """Rolling-origin cross-validation folds inside the train split, for tuning."""
    n_trials: int = Field(default=12, ge=0)
    """Optuna trials per tuned candidate (0: defaults only)."""
    tuning_storage: str | None = None
    """Optuna storage URL, e.g. ``postgresql://dockline@db/optuna`` so several training
    workers share one study (each runs trials until the study has ``n_trials``); None: SQLite
    in the data directory."""
    primary_metric: Literal["pr_auc", "roc_auc", "brier", "log_loss"] = "pr_auc"
    """The metric that selects the candidate and that the promotion gate compares."""
    threshold_policy: Literal["target_precision", "expected_cost"] = "target_precision"
    """How the decision threshold is chosen on the calibration split."""
    target_precision: float = Field(default=0.5, gt=0, le=1)
    """With ``target_precision``: the lowest threshold reaching this precision."""
    cost_false_alarm: float = Field(default=1.0, gt=0)
    """With ``expected_cost``: the cost of flagging a station that stays fine."""
    cost_miss: float = Field(default=5.0, gt=0)
    """With ``expected_cost``: the cost of missing a station that runs empty."""
    gate_margin: float = Field(default=0.0, ge=0)
    """The primary metric must beat baselines and the champion by at least this (absolute)."""
    max_ece: float = Field(default=0.05, gt=0)
    """The gate refuses a model whose expected calibration error on test exceeds this."""
    parity_tolerance: float = Field(default=1e-5, gt=0)
    """Largest |ONNX - native| probability on the test rows before the bundle is refused."""
    max_rows: int | None = Field(default=None, ge=1000)
    """Subsample training rows (by entity-hash, deterministic) beyond this; None: all."""
    slices: TrainSlicesConfig = TrainSlicesConfig()
    """Slice checks in the report and the gate (``[train.slices]``)."""
    # -- INT8 variant (issue 16 §4); left out of the config hash while off, so bundle ids of
    # configs that never set it do not change --
    quantize: Literal["off", "int8"] = "off"
    """``int8``: add an ONNX Runtime INT8 variant to the bundle, with its parity gate."""
    int8_max_abs_diff: float = Field(default=0.04, gt=0, le=1)
    """The INT8 gate: largest per-row |Δp| (calibrated) against FP32 on the test rows."""
    int8_mean_abs_diff: float = Field(default=0.01, gt=0, le=1)
    """The INT8 gate: largest mean |Δp| against FP32 on the test rows."""
    # -- end INT8 variant --


COMPANION_PREFIX = "/models/"
"""A companion model's API (``[serve] companions``): the main routes under ``/models/<label>``."""


class ServeConfig(_Frozen):
    """How ``dockline serve`` answers, gates freshness and reports."""

    host: str = "127.0.0.1"
    """Interface ``dockline serve`` binds (``--host`` overrides)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port ``dockline serve`` binds (``--port`` overrides)."""
    workers: int = Field(default=1, ge=1)
    """Worker processes (``--workers`` overrides)."""
    model_name: str | None = None
    """Defaults to the train section's model name."""
    max_feature_age: Duration = timedelta(minutes=10)
    """Features older than this (on the serving clock) are stale; see ``stale_policy``."""
    stale_policy: Literal["flag", "baseline", "reject"] = "flag"
    """On stale features: answer and flag it, answer the baseline, or refuse (503)."""
    max_batch: int = Field(default=256, ge=1)
    """Most entities in one ``/v1/predict/batch`` request."""
    admin_token: str | None = None
    """Bearer token for ``/v1/admin/*`` (env ``DOCKLINE_ADMIN_TOKEN`` overrides); unset: 401."""
    reload_poll: Duration = timedelta(seconds=5)
    """How often the server checks the registry for a new champion (hot reload)."""
    routing: Literal["champion", "shadow", "canary"] = "champion"
    """champion: it answers alone; shadow: the challenger also scores, unseen; canary: a share."""
    canary_share: float = Field(default=0.1, ge=0, le=1)
    """With ``routing = "canary"``: the share of entities the challenger answers."""
    metrics_window: Duration = timedelta(seconds=60)
    """Length of a serving metrics window (``serving/metrics/``)."""
    prediction_flush_rows: int = Field(default=2000, ge=1)
    """The prediction log writes a file after this many predictions…"""
    prediction_flush_interval: Duration = timedelta(seconds=2)
    """…or after this long, whichever comes first."""
    deployment_id: str = "local"
    """Names this deployment in metrics windows and the prediction log."""
    environment: str = "development"
    """Free-form label recorded with metrics (development, staging, production)."""
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
    companions: tuple[str, ...] = ()
    """Labels whose models are served beside the main one, each under ``/models/<label>/``
    with the same routes, its own champion, metrics windows (deployment ``<id>-<label>``) and
    prediction-log rows (e.g. ``["full_next_hour"]`` beside ``empty_next_hour``)."""
    # -- INT8 variant (issue 16 §4) --
    precision: Literal["fp32", "int8"] = "fp32"
    """``int8`` scores with the bundle's INT8 variant; a bundle without one whose parity gate
    passed is refused (reason ``int8_unavailable``)."""
    # -- end INT8 variant --


class ClockConfig(_Frozen):
    """Which clock "now" is read from (serving's request times and feature ages).

    ``system``: the wall clock. ``data``: simulated or replayed data — the clock starts, when a
    command opens the data dir, at the newest ingestion time in the offline store and runs at
    ``speed``; ``dockline demo`` sets it, so serving its data later answers fresh, not years old.
    """

    kind: Literal["system", "data"] = "system"
    """``system``: the wall clock; ``data``: the data's own time (see the section above)."""
    speed: float = Field(default=1.0, gt=0)
    """With ``kind = "data"``: simulated seconds per real second."""
