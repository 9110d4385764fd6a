"""Typed configuration and the data directory layout.

Configuration is frozen pydantic with ``extra="forbid"``, so a typo is an error at load, not a
silently ignored setting. Backends are chosen by a ``kind`` literal through a dict of factories
in the wiring layer, never from class names in strings.

One data directory holds all state; its layout is stable (DESIGN.md, "Names and places").
"""

from __future__ import annotations

import itertools
import json
import os
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from dockline.core.errors import ConfigError, ValidationError
from dockline.core.time import parse_duration

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


# -- monitor (P6) ------------------------------------------------------------------------------


class MonitorHealthConfig(_Frozen):
    """``[monitor.health]``: deployment health thresholds (seed 003's names and defaults).

    Every comparison is strict: a value exactly at its threshold passes.
    """

    latency_p95_ms: float = Field(default=500.0, gt=0)
    """Degraded when a window's p95 latency is over this (ms)."""
    latency_p99_ms: float = Field(default=1000.0, gt=0)
    """Degraded when a window's p99 latency is over this (ms)."""
    failure_rate_pct: float = Field(default=5.0, ge=0, le=100)
    """Degraded when failed requests over the lookback exceed this share (%)."""
    rejection_rate_pct: float = Field(default=5.0, ge=0, le=100)
    """Degraded when rejected requests over the lookback exceed this share (%)."""
    expected_window_seconds: float = Field(default=60.0, gt=0)
    """The metrics window length; keep it equal to ``serve.metrics_window``."""
    max_allowed_gap_factor: float = Field(default=2.0, ge=1)
    """Gaps over ``expected_window_seconds`` times this count as missing windows."""
    max_missing_windows: int = Field(default=3, ge=0)
    """Degraded when more windows than this are missing."""
    max_gap_minutes: float = Field(default=5.0, gt=0)
    """Degraded when the largest gap between window starts is over this (minutes)."""
    max_staleness_minutes: float = Field(default=10.0, gt=0)
    """Unhealthy when the newest window ended longer ago than this (minutes)."""
    lookback: Duration = timedelta(minutes=15)
    """Only windows ending in the last ``lookback`` are judged (staleness looks at all)."""
    min_requests: int = Field(default=20, ge=1)
    """Below this many requests in the lookback, the rate checks are inconclusive."""


class MonitorFreshnessConfig(_Frozen):
    """``[monitor.freshness]``: a dataset or vector is FRESH iff its age < threshold."""

    threshold_seconds: float = Field(default=1800.0, gt=0)
    """A dataset or vector is FRESH iff its age is below this (seconds)."""
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
    """A feature drifted when its population stability index is over this."""
    wasserstein_threshold: float = Field(default=0.1, gt=0)
    """Wasserstein-1 distance divided by the reference standard deviation."""
    jensenshannon_threshold: float = Field(default=0.1, gt=0, le=1)
    """A categorical feature drifted when its Jensen-Shannon distance is over this."""
    small_sample: int = Field(default=1000, ge=10)
    """Below this many current values, a chi-square test (``alpha``) decides instead."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level of the chi-square test used on small samples."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """Dataset-level drift when at least this share of the features drifted."""
    categorical_max_values: int = Field(default=12, ge=2)
    """A reference with at most this many distinct integer values is treated as categorical."""
    exclude: tuple[str, ...] = ()
    """Features left out of drift (e.g. ones that grow without bound by design)."""


# -- monitor: canary analysis and the loop (issue 14 item 8) ------------------------------------


class MonitorCanaryConfig(_Frozen):
    """``[monitor.canary]``: judging a challenger against the concurrently running champion.

    Each analysis window gives every metric a verdict: ``pass``, ``marginal`` (past its
    ``*_warn`` limit), ``fail`` (past its ``*_fail`` limit) or ``inconclusive`` (too few
    samples). A metric named in ``dry_run`` is measured and recorded but never decides.
    """

    analysis_window: Duration = timedelta(minutes=5)
    """Each analysis window judges the challenger against the champion of the same window."""
    min_requests: int = Field(default=50, ge=1)
    """Fewer requests than this on either side: the window is inconclusive (never a pass)."""
    min_labels: int = Field(default=50, ge=1)
    """Fewer labelled predictions on either side: the live-performance metric is inconclusive."""
    failure_limit: int = Field(default=1, ge=0)
    """Failed windows tolerated: one more rolls the challenger back (Argo's failureLimit)."""
    inconclusive_limit: int = Field(default=2, ge=0)
    """Consecutive inconclusive windows tolerated: one more pauses the canary."""
    success_windows: int = Field(default=3, ge=1)
    """Passing windows (marginal ones do not count) before the challenger is promoted."""
    max_windows: int = Field(default=12, ge=1)
    """Conclusive windows after which a challenger that has not proven itself is rolled back."""
    shadow_windows: int = Field(default=1, ge=0)
    """Analysis windows in shadow (both score every request, the champion answers) first."""
    canary_share: float = Field(default=0.5, gt=0, le=1)
    """Share of the entities (by a stable hash) the challenger answers in canary."""
    error_rate_warn: float = Field(default=0.005, ge=0)
    """Challenger's error rate minus the champion's (a share, 0.005 = 0.5 points)."""
    error_rate_fail: float = Field(default=0.02, ge=0)
    """Error-rate difference over which a window fails."""
    latency_ratio_warn: float = Field(default=1.25, ge=1)
    """Challenger's p95 latency over the champion's (plus ``latency_slack_ms``)."""
    latency_ratio_fail: float = Field(default=2.0, ge=1)
    """Latency ratio over which a window fails."""
    latency_slack_ms: float = Field(default=2.0, ge=0)
    """Added to the champion's p95: sub-millisecond jitter is not a regression."""
    shift_warn: float = Field(default=0.05, ge=0)
    """Prediction shift: Wasserstein-1 distance between the two sides' probabilities."""
    shift_fail: float = Field(default=0.15, ge=0)
    """Prediction shift over which a window fails (probability units)."""
    spread_warn: float = Field(default=0.405, ge=0)
    """Prediction spread: |ln(challenger's std ÷ champion's)|; 0.405 = 1.5×, 1.099 = 3×."""
    spread_fail: float = Field(default=1.099, ge=0)
    """Spread score over which a window fails (∞ for a constant model)."""
    brier_warn: float = Field(default=0.01, ge=0)
    """Live Brier score of the challenger minus the champion's, once labels land."""
    brier_fail: float = Field(default=0.03, ge=0)
    """Brier difference over which a window fails."""
    dry_run: tuple[str, ...] = ()
    """Metrics recorded but never deciding (a new metric on probation)."""


class MonitorLoopConfig(_Frozen):
    """``[monitor.loop]``: the retraining loop's triggers and its serving endpoint."""

    serve_url: str = "http://127.0.0.1:8000"
    """The serving app whose routing the loop moves (admin token: ``serve.admin_token``)."""
    schedule: Duration | None = None
    """Retrain at least this often (None: only on the other triggers)."""
    stale_model: Duration = timedelta(days=7)
    """Retrain when the champion's training data is older than this."""
    performance_margin: float = Field(default=0.0, ge=0)
    """Retrain when live PR-AUC falls below the champion's test PR-AUC minus this (the gate's
    bar), measured on at least ``min_labels`` labelled predictions."""
    min_labels: int = Field(default=200, ge=1)
    """Labelled predictions the performance trigger needs before it can fire."""
    train_window: Duration = timedelta(days=7)
    """Fresh data: the training set spans this long, ending where labels are known."""
    train_every: Duration = timedelta(minutes=15)
    """The training set's spine step."""
    retrain_cooldown: Duration = timedelta(hours=6)
    """After a loop training, triggers wait this long before training again (a trigger that
    stays fired — a stale model whose retrain was rolled back — must not retrain every cycle)."""
    follow_interval: Duration = timedelta(minutes=1)
    """``monitor run --follow``: the pause between cycles."""


class MonitorConfig(_Frozen):
    """``[monitor]``: health, freshness, drift, canary and loop settings."""

    health: MonitorHealthConfig = MonitorHealthConfig()
    freshness: MonitorFreshnessConfig = MonitorFreshnessConfig()
    drift: MonitorDriftConfig = MonitorDriftConfig()
    canary: MonitorCanaryConfig = MonitorCanaryConfig()
    loop: MonitorLoopConfig = MonitorLoopConfig()


# -- end monitor ---------------------------------------------------------------------------------


# -- decide (P7) ------------------------------------------------------------------------------


class DecideConfig(_Frozen):
    """The ``[decide]`` section: the policy, its gates, the fleet and the move budget."""

    policy: Literal["none", "reactive", "predictive", "oracle"] = "predictive"
    """The rebalancing policy ``dockline decide run`` applies."""
    cycle: Duration = timedelta(minutes=15)
    """One decision cycle every this much (simulated) time."""
    horizon: Duration = timedelta(hours=1)
    """The predictions' horizon; no move is planned to arrive later than this."""
    # The budget: about one truck per 40 stations of the 300-station simulated city (operators
    # run roughly one van per 25-40 stations) and 24 moves per truck-day (1.5 an hour, 16 hours).
    trucks: int = Field(default=8, ge=0)
    """Trucks in the fleet."""
    truck_capacity: int = Field(default=20, ge=1)
    """Bikes one truck carries."""
    moves_per_cycle: int = Field(default=8, ge=0)
    """Most moves planned in one cycle."""
    moves_per_day: int = Field(default=192, ge=0)
    """Most moves in one service day (the budget)."""
    truck_speed_kmh: float = Field(default=20.0, gt=0)
    """Truck speed, for travel times and what can arrive within the horizon."""
    handling_minutes: float = Field(default=5.0, ge=0)
    """Minutes to load or unload at a station."""
    service_start_hour: int = Field(default=6, ge=0, le=24)
    """Trucks work from this local hour…"""
    service_end_hour: int = Field(default=22, ge=0, le=24)
    """…until this local hour."""
    tz: str = "America/Chicago"
    """Time zone of the service hours (IANA name)."""
    healthy_verdicts: tuple[Literal["healthy", "degraded", "unhealthy"], ...] = ("healthy",)
    """Verdicts under which the predictive policy acts on the model."""
    max_feature_age: Duration = timedelta(minutes=10)
    """The freshness gate: the median station's feature age must be at most this."""
    act_threshold: float = Field(default=0.5, gt=0, le=1)
    """A station with p(empty) or p(full) at least this wants a move."""
    max_ambiguous_share: float = Field(default=0.5, ge=0, le=1)
    """The confidence gate: at most this share of at-risk predictions may be near 0.5."""
    min_coverage: float = Field(default=0.9, ge=0, le=1)
    """The coverage gate: predictions for at least this share of the stations."""
    target_fill: float = Field(default=0.5, gt=0, lt=1)
    """The fill ratio a move aims a station at."""
    km_cost: float = Field(default=0.05, ge=0)
    """Cost of one truck-km, against the value of a move."""
    serve_url: str = "http://127.0.0.1:8000"
    """``dockline decide run`` reads predictions from this serving API."""
    full_label: str = "full_next_hour"
    """The label giving ``p_full``: its companion deployment (``[serve] companions``) is read
    at ``<serve_url>/models/<full_label>``; where none runs, ``p_full`` is 0 (``full:none``)."""
    sim_url: str = "http://127.0.0.1:8080"
    """… and sends the actions to this simulated city's truck API."""


# -- end decide -------------------------------------------------------------------------------


# -- lineage -------------------------------------------------------------------------------------


class LineageConfig(_Frozen):
    """``[lineage]``: OpenLineage events always go to ``<data-dir>/lineage/`` (NDJSON, one file
    per day); with ``url`` they are also POSTed there (Marquez: ``http://host:5000``)."""

    url: str | None = None
    """Base URL of an OpenLineage server (Marquez: ``http://host:5000``); unset: files only."""
    endpoint: str = "api/v1/lineage"
    """Path the events are POSTed to, under ``url``."""
    timeout: Duration = timedelta(seconds=5)
    """How long one POST may take; a server that does not answer fails no job."""
    api_key: str | None = None
    """Bearer token for the server, if it wants one."""


# -- end lineage ---------------------------------------------------------------------------------

# -- cdc -----------------------------------------------------------------------------------------


class CdcConfig(_Frozen):
    """``[cdc]``: follow a PostgreSQL table of station_status rows by logical replication
    (``dockline cdc ingest``; the server needs ``wal_level=logical`` and wal2json)."""

    dsn: str | None = None
    """libpq connection string or URL, e.g. ``postgresql://dockline@db:5432/bikes``; a password
    is better kept in ``PGPASSWORD`` or ``~/.pgpass`` than here."""
    table: str = "station_status"
    """The table (``schema.table``; default schema ``public``) another system writes rows to."""
    slot: str = "dockline"
    """Logical replication slot (created when missing); it names the source ``cdc:<slot>``."""
    sink_every: Duration = timedelta(minutes=1)
    """While following: bring the offline store up to date this often."""
    snapshot: Literal["initial", "never"] = "initial"
    """``initial``: a source's first run reads the table's existing rows through the new
    slot's exported snapshot, then streams what follows; ``never``: rows committed before the
    slot existed are not seen."""


# -- end cdc -------------------------------------------------------------------------------------

# -- registry ------------------------------------------------------------------------------------


class RegistryConfig(_Frozen):
    """``[registry]``: where MLflow keeps runs and registered models.

    Unset: a SQLite file in the data directory. A server database (``postgresql://user@host/db``)
    lets several machines share one registry; artifacts stay under ``<data-dir>/mlruns/``.
    """

    tracking_uri: str | None = None
    """MLflow tracking and registry store URI, e.g. ``postgresql://dockline@db:5432/mlflow``."""


# -- end registry --------------------------------------------------------------------------------


# -- tracing -------------------------------------------------------------------------------------


class TracingConfig(_Frozen):
    """``[tracing]``: OpenTelemetry spans across ingest → materialize → serve → decide. With
    ``endpoint`` they go to an OTLP/HTTP collector (``http://host:4318``); without, to
    ``<data-dir>/traces/spans-YYYY-MM-DD.jsonl``. A served prediction's trace id is in its
    prediction-log row (``trace_id``)."""

    enabled: bool = False
    """Record spans (off: one attribute check per request on the serving path)."""
    endpoint: str | None = None
    """OTLP/HTTP collector base URL (spans are POSTed to ``<endpoint>/v1/traces``)."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces recorded; a request that arrives with a sampled parent is kept."""
    service_name: str = "dockline"
    """The ``service.name`` resource attribute (each process adds its role)."""


# -- end tracing ---------------------------------------------------------------------------------


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
    decide: DecideConfig = DecideConfig()
    lineage: LineageConfig = LineageConfig()
    tracing: TracingConfig = TracingConfig()
    cdc: CdcConfig = CdcConfig()
    registry: RegistryConfig = RegistryConfig()

    @classmethod
    def load(cls, path: Path | None) -> Self:
        """Read ``path`` (TOML); a missing ``path`` gives the defaults."""
        if path is None or not path.exists():
            return cls()
        raw = read_toml(path)
        try:
            return cls.model_validate(raw)
        except PydanticValidationError as exc:
            problems = "; ".join(f"{loc}: {msg}" for loc, msg in config_errors(exc))
            raise ConfigError(problems, where=str(path)) from exc


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path`` (``{}`` when absent)."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=str(path)) from exc


def config_errors(exc: PydanticValidationError) -> list[tuple[str, str]]:
    """Every problem in a validation error as ``(dotted.key, message)``, not just the first."""
    return [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]


def record_project(config_file: Path, project: Path) -> bool:
    """Write ``[features] project = "<project>"`` into ``config_file`` unless a project is set.

    The data dir then knows its project, so later commands run from any directory find it. The
    file is edited as text (other settings and comments are kept); returns whether it wrote.
    """
    raw = read_toml(config_file)
    features = raw.get("features", {})
    if isinstance(features, dict) and features.get("project"):
        return False
    line = f"project = {json.dumps(str(project))}\n"  # a JSON string is a TOML basic string
    text = config_file.read_text(encoding="utf-8") if config_file.exists() else ""
    lines = text.splitlines(keepends=True)
    for number, existing in enumerate(lines):
        if existing.split("#")[0].strip() == "[features]":
            lines.insert(number + 1, line)
            break
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(("\n" if lines else "") + "[features]\n" + line)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_file.with_suffix(".toml.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(config_file)
    return True


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
