"""The settings sections of operations: monitor, decide, lineage, cdc, registry, tracing.

Import them from :mod:`dockline.core.config`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from dockline.core._sections import Duration, _Frozen

__all__ = [
    "CdcConfig",
    "DecideConfig",
    "LineageConfig",
    "MonitorCanaryConfig",
    "MonitorConfig",
    "MonitorDriftConfig",
    "MonitorFreshnessConfig",
    "MonitorHealthConfig",
    "MonitorLoopConfig",
    "RegistryConfig",
    "TracingConfig",
]


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
