"""The monitor's verdicts and metrics for the serving app (which may not import the monitor).

:class:`ServingMonitor` computes health, freshness, drift and live performance from the data
directory at most once per ``ttl`` (each is a scan of files; a scrape every 15 s must not
repeat it) and hands the serving app three endpoint callables (seed 002's
``/v1/monitoring/{health,drift,retraining_trigger}``) and a Prometheus collector:

* ``ml_dataset_build_duration_seconds``, ``ml_training_duration_seconds`` — histograms of the
  dataset builds and training runs recorded in ``lineage/`` (seed 003's names);
* ``ml_feature_freshness_seconds{kind,dataset}`` — each freshness result's age;
* ``ml_deployment_health{deployment,status}`` — a state set: 1 for the current status;
* ``ml_drift_score{feature}``, ``ml_drift_detected``, ``ml_drift_share`` — the most-served
  bundle's last-window scores and its dataset-level verdict;
* ``ml_live_performance{metric,model_version}`` — the latest labelled window per version.

No label names a station (``ml_prediction_total`` is counted by serving itself, per role).

>>> monitor = ServingMonitor(platform)  # doctest: +SKIP
>>> app = create_app(..., monitoring=monitor.providers(),  # doctest: +SKIP
...                  collectors=[monitor.collector()])
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from dockline.core.errors import DocklineError
from dockline.pipeline import lineage
from dockline.pipeline.platform import Platform

__all__ = ["DURATION_BUCKETS", "ServingMonitor", "retraining_trigger"]

DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
_STATUSES = ("healthy", "degraded", "unhealthy")

_log = logging.getLogger(__name__)


def retraining_trigger(
    drift: list[dict[str, Any]],
    freshness: list[dict[str, Any]],
    performance: list[dict[str, Any]],
    reference: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """Recommend retraining, and say why: the dataset-level drift verdict of the most-served
    bundle, the champion's training data gone stale, or a live PR-AUC whose whole 95 %
    interval lies below the bundle's test PR-AUC."""
    reasons: list[str] = []
    top = drift[0] if drift else None
    if top is not None and top.get("drift"):
        moved = top.get("dataset_window", {}).get("drifted", [])
        reasons.append(
            f"drift: {top['share']:.0%} of features drifted in bundle {top['bundle_id']}"
            f" ({', '.join(moved[:5])}{'…' if len(moved) > 5 else ''})"
        )
    stale = [f for f in freshness if f.get("kind") == "training_data" and f["status"] != "FRESH"]
    for f in stale:
        reasons.append(
            f"stale model: the champion's training data is {f['freshness_seconds'] / 86400:.1f}"
            f" days old (limit {float(f.get('threshold_seconds') or 0) / 86400:.1f})"
        )
    below = []
    for w in performance:
        ref = reference.get(w["bundle_id"], {}).get("pr_auc")
        live = w["metrics"].get("pr_auc", {})
        if ref is not None and live.get("high") is not None and live["high"] < ref:
            below.append(w)
    if below:
        w = below[-1]
        reasons.append(
            f"live performance: PR-AUC {w['metrics']['pr_auc']['value']:.3f} (95 % interval"
            f" below {w['metrics']['pr_auc']['high']:.3f}) under the test PR-AUC"
            f" {reference[w['bundle_id']]['pr_auc']:.3f} of bundle {w['bundle_id']}"
        )
    return {
        "retrain": bool(reasons),
        "reasons": reasons,
        "checks": {
            "drift": bool(top and top.get("drift")),
            "stale_model": bool(stale),
            "performance_below_reference": bool(below),
        },
    }


class _Cached:
    """One value recomputed at most every ``ttl_s`` seconds (errors are cached too, briefly)."""

    def __init__(self, compute: Callable[[], Any], ttl_s: float) -> None:
        self._compute = compute
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._value: Any = None
        self._error: Exception | None = None

    def get(self) -> Any:
        with self._lock:
            if time.monotonic() - self._at >= self._ttl:
                try:
                    with lineage.suppressed():  # a recomputation, not a monitor run of record
                        self._value, self._error = self._compute(), None
                except Exception as exc:  # kept for ttl too: a failing scan is not retried
                    self._value, self._error = None, exc  # on every scrape
                self._at = time.monotonic()
            if self._error is not None:
                raise self._error
            return self._value


class ServingMonitor:
    """Monitor verdicts over ``platform``'s data directory, cached for ``ttl_s`` seconds."""

    def __init__(self, platform: Platform, *, ttl_s: float = 30.0) -> None:
        from dockline.pipeline import monitor

        self.platform = platform

        def health() -> dict[str, Any]:
            run = monitor.health(platform)
            return {"deployments": [s.model_dump(mode="json") for s in run.states]}

        def freshness() -> list[dict[str, Any]]:
            return [r.model_dump(mode="json") for r in monitor.freshness(platform).results]

        def drift() -> list[dict[str, Any]]:
            return [r.to_dict() for r in monitor.drift_live(platform)]

        def performance() -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
            run = monitor.performance(platform)
            windows = [{"bundle_id": b, **w.to_dict()} for b, w in run.windows]
            return windows, run.reference

        self._health = _Cached(health, ttl_s)
        self._freshness = _Cached(freshness, ttl_s)
        self._drift = _Cached(drift, ttl_s)
        self._performance = _Cached(performance, ttl_s)
        self._durations: dict[str, list[float]] = {}
        self._durations_key: tuple[tuple[str, int], ...] = ()

    # -- the endpoints ------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"deployments": [DeploymentHealthState, ...]}`` (as ``dockline monitor health``)."""
        value: dict[str, Any] = self._health.get()
        return value

    def drift(self) -> dict[str, Any]:
        """The most-served bundle's drift at the top level, every bundle under ``bundles``
        (as ``dockline monitor drift --json``)."""
        runs: list[dict[str, Any]] = self._drift.get()
        top = runs[0] if runs else {"drift": False, "features": {}}
        return {**top, "bundles": runs}

    def retraining_trigger(self) -> dict[str, Any]:
        """Whether to retrain and why (see :func:`retraining_trigger`)."""
        windows, reference = self._performance_or_empty()
        return retraining_trigger(self._drift.get(), self._freshness.get(), windows, reference)

    def providers(self) -> dict[str, Callable[[], Mapping[str, Any]]]:
        """The serving app's ``monitoring=`` argument."""
        return {
            "health": self.health,
            "drift": self.drift,
            "retraining_trigger": self.retraining_trigger,
        }

    def _performance_or_empty(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
        try:
            value: tuple[list[dict[str, Any]], dict[str, dict[str, float]]] = (
                self._performance.get()
            )
        except (DocklineError, OSError, ValueError) as exc:  # no labels yet is not an outage
            _log.info("live performance unavailable: %s", exc)
            return [], {}
        return value

    # -- the metrics --------------------------------------------------------------------------

    def _job_durations(self) -> dict[str, list[float]]:
        """Durations of completed runs per job from ``lineage/`` (re-read when a file grew)."""
        files = lineage.lineage_files(self.platform)
        key = tuple((str(p), p.stat().st_size) for p in files)
        if key != self._durations_key:
            durations: dict[str, list[float]] = {}
            for event in lineage.read_events(self.platform):
                if event.get("eventType") != "COMPLETE":
                    continue
                facet = event.get("run", {}).get("facets", {}).get("dockline", {})
                seconds = facet.get("durationSeconds")
                if isinstance(seconds, int | float):
                    durations.setdefault(event["job"]["name"], []).append(float(seconds))
            self._durations, self._durations_key = durations, key
        return self._durations

    def collector(self) -> Collector:
        """A Prometheus collector of the monitor's metrics (see the module docstring)."""
        return _MonitorCollector(self)


def _histogram(name: str, doc: str, values: list[float]) -> HistogramMetricFamily:
    buckets = [(str(b), float(sum(v <= b for v in values))) for b in DURATION_BUCKETS]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sum(values)))


class _MonitorCollector(Collector):
    def __init__(self, monitor: ServingMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # collected on scrape only (never at registration)

    def collect(self) -> Iterator[Metric]:
        yield from self._durations()
        for part in (self._freshness, self._health, self._drift, self._performance):
            try:
                yield from part()
            except Exception as exc:  # a scrape never fails because one verdict could not
                _log.warning("monitor metrics %s skipped: %s", part.__name__, exc)

    def _durations(self) -> Iterator[Metric]:
        try:
            durations = self.monitor._job_durations()
        except OSError as exc:
            _log.warning("lineage durations unreadable: %s", exc)
            durations = {}
        yield _histogram(
            "ml_dataset_build_duration_seconds",
            "Duration of the dataset builds recorded in lineage/.",
            durations.get("dataset_build", []),
        )
        yield _histogram(
            "ml_training_duration_seconds",
            "Duration of the training runs recorded in lineage/.",
            durations.get("training", []),
        )

    def _freshness(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "ml_feature_freshness_seconds",
            "Age of datasets, of the served vectors (p95) and of the champion's training data.",
            labels=["kind", "dataset"],
        )
        for r in self.monitor._freshness.get():
            gauge.add_metric([r["kind"], r["dataset_name"]], float(r["freshness_seconds"]))
        yield gauge

    def _health(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "ml_deployment_health",
            "Deployment health as a state set: 1 for the current status, 0 for the others.",
            labels=["deployment", "status"],
        )
        for s in self.monitor.health()["deployments"]:
            for status in _STATUSES:
                gauge.add_metric([s["deployment_id"], status], float(s["status"] == status))
        yield gauge

    def _drift(self) -> Iterator[Metric]:
        runs: list[dict[str, Any]] = self.monitor._drift.get()
        score = GaugeMetricFamily(
            "ml_drift_score",
            "Last window's drift score per feature of the most-served bundle (its method's).",
            labels=["feature", "method"],
        )
        detected = GaugeMetricFamily(
            "ml_drift_detected",
            "Dataset-level drift verdict (1 drifted) of the most-served bundle.",
        )
        share = GaugeMetricFamily("ml_drift_share", "Share of features drifted (dataset window).")
        if runs:
            top = runs[0]
            for name, f in sorted(top["features"].items()):
                score.add_metric([name, f["method"]], float(f["score"]))
            detected.add_metric([], float(bool(top["drift"])))
            share.add_metric([], float(top["share"]))
        yield from (score, detected, share)

    def _performance(self) -> Iterator[Metric]:
        windows, _ = self.monitor._performance_or_empty()
        gauge = GaugeMetricFamily(
            "ml_live_performance",
            "Live metrics of the latest window with labels, per model version.",
            labels=["metric", "model_version"],
        )
        latest: dict[int, dict[str, Any]] = {}
        for w in windows:
            if (
                w["labelled"]
                and w["window_start_us"] >= latest.get(w["model_version"], w)["window_start_us"]
            ):
                latest[w["model_version"]] = w
        for version, w in sorted(latest.items()):
            for metric, value in sorted(w["metrics"].items()):
                if value.get("value") is not None:
                    gauge.add_metric([metric, str(version)], float(value["value"]))
        yield gauge
