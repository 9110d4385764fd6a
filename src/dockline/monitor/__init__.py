"""dockline.monitor: what watches the predictions (P6).

Pure functions over the artifacts the other layers write — serving metrics windows, the
prediction log, dataset metadata, bundles' drift baselines — to seed 003's outputs:
:func:`deployment_health` (healthy / degraded / unhealthy per deployment), freshness
(:func:`dataset_freshness`, :func:`vector_freshness`), :func:`run_checks` (a
:class:`~dockline.core.monitoring.CheckReport`), drift (:func:`compare` over mergeable
:class:`Sketch` es), live performance (:func:`live_performance`), canary analysis
(:func:`analyze_window`, :func:`decide`) and retraining triggers (:func:`evaluate_triggers`).
Reading files is at the edges (:func:`read_windows`, :func:`read_prediction_log`); the wiring
lives in ``dockline.pipeline.monitor`` and ``dockline.pipeline.loop``. Imports only
``dockline.core`` and third-party libraries.
"""

from dockline.monitor.adapters import adapt_p4_bundle
from dockline.monitor.canary import (
    CANARY_METRICS,
    CanaryDecision,
    MetricResult,
    Side,
    WindowAnalysis,
    analyze_window,
    decide,
)
from dockline.monitor.checks import run_checks
from dockline.monitor.drift import (
    DatasetDrift,
    FeatureDrift,
    Reference,
    Sketch,
    compare,
    drift_frames,
    drift_of,
    reference_from_baseline,
    reference_from_values,
    sketch_many,
    window_ids,
)
from dockline.monitor.freshness import dataset_freshness, since_freshness, vector_freshness
from dockline.monitor.health import (
    classify_deployment,
    count_missing_windows,
    deployment_health,
    max_gap,
)
from dockline.monitor.performance import METRICS, MetricValue, PerformanceWindow, live_performance
from dockline.monitor.predictions import feature_matrix, numeric_columns, read_prediction_log
from dockline.monitor.triggers import Signals, Trigger, TriggerDecision, evaluate_triggers
from dockline.monitor.windows import BadLine, WindowScan, dedupe_key, parse_window, read_windows

__all__ = [
    "CANARY_METRICS",
    "METRICS",
    "BadLine",
    "CanaryDecision",
    "DatasetDrift",
    "FeatureDrift",
    "MetricResult",
    "MetricValue",
    "PerformanceWindow",
    "Reference",
    "Side",
    "Signals",
    "Sketch",
    "Trigger",
    "TriggerDecision",
    "WindowAnalysis",
    "WindowScan",
    "adapt_p4_bundle",
    "analyze_window",
    "classify_deployment",
    "compare",
    "count_missing_windows",
    "dataset_freshness",
    "decide",
    "dedupe_key",
    "deployment_health",
    "drift_frames",
    "drift_of",
    "evaluate_triggers",
    "feature_matrix",
    "live_performance",
    "max_gap",
    "numeric_columns",
    "parse_window",
    "read_prediction_log",
    "read_windows",
    "reference_from_baseline",
    "reference_from_values",
    "run_checks",
    "since_freshness",
    "sketch_many",
    "vector_freshness",
    "window_ids",
]
