"""Telemetry: Prometheus metrics and the 60 s serving metrics windows (JSONL, for monitoring).

Requests update in-memory counters only; a background thread closes windows by the injected
clock and appends them as :class:`~dockline.core.contracts.ServingMetricsWindow` lines under
``serving/metrics/{date}/{hour}/``, so no request ever waits for a file.
"""

from __future__ import annotations

import logging
import re
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dockline.core.contracts import ServingMetricsWindow
from dockline.core.time import Clock, from_micros, to_micros

__all__ = ["ENDPOINTS", "ModelStamp", "ServiceIdentity", "Telemetry", "WindowCounts"]

ENDPOINTS = ("/v1/predict", "/v1/predict/batch")
"""The endpoints that get a metrics window each."""

_log = logging.getLogger(__name__)

# Which ServingMetricsWindow counters an error reason adds to (besides failure_count).
_REASON_FIELDS: dict[str, tuple[str, ...]] = {
    "invalid_json": ("validation_error_count", "input_schema_failure_count"),
    "missing_field": (
        "validation_error_count",
        "input_schema_failure_count",
        "missing_required_field_count",
    ),
    "invalid_type": ("validation_error_count", "input_schema_failure_count", "invalid_type_count"),
    "unknown_field": ("validation_error_count", "input_schema_failure_count"),
    "unknown_feature": ("validation_error_count", "domain_violation_count"),
    "invalid_value": ("validation_error_count", "domain_violation_count"),
    "unknown_entity": ("feature_lookup_error_count",),
    "store_unavailable": ("feature_lookup_error_count", "dependency_error_count"),
    "registry_unavailable": ("dependency_error_count",),
    "feature_schema_mismatch": ("feature_lookup_error_count",),
    "body_timeout": ("timeout_count",),
    "stale_features": ("rejected_count",),
    "batch_too_large": ("rejected_count",),
    "body_too_large": ("rejected_count",),
    "no_model": ("model_load_error_count",),
    "inference_error": ("inference_runtime_error_count",),
    "internal_error": ("internal_error_count",),
}

_COUNT_FIELDS = (
    "request_count",
    "success_count",
    "failure_count",
    "rejected_count",
    "timeout_count",
    "validation_error_count",
    "feature_lookup_error_count",
    "model_load_error_count",
    "inference_runtime_error_count",
    "dependency_error_count",
    "internal_error_count",
    "input_schema_failure_count",
    "missing_required_field_count",
    "invalid_type_count",
    "domain_violation_count",
    "prediction_count",
    "prediction_null_count",
    "prediction_non_finite_count",
    "prediction_out_of_range_count",
    "fallback_prediction_count",
)


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """Who emits the windows."""

    service_name: str
    service_version: str
    environment: str
    deployment_id: str


@dataclass(frozen=True, slots=True)
class ModelStamp:
    """The champion a window is attributed to (empty strings before any model loaded)."""

    model_name: str
    model_version: str
    bundle_id: str
    input_dataset_name: str
    input_dataset_version: str


class WindowCounts:
    """Counters and latencies of one endpoint over one window."""

    __slots__ = ("counts", "end_us", "latencies_ms", "start_us")

    def __init__(self, start_us: int, end_us: int) -> None:
        self.start_us = start_us
        self.end_us = end_us
        self.counts = dict.fromkeys(_COUNT_FIELDS, 0)
        self.latencies_ms = array("d")

    def to_window(
        self, endpoint: str, identity: ServiceIdentity, model: ModelStamp, emitted_us: int
    ) -> ServingMetricsWindow:
        """The contract record for this window."""
        p50 = p95 = p99 = None
        if self.latencies_ms:
            q = np.percentile(np.frombuffer(self.latencies_ms, dtype=np.float64), [50, 95, 99])
            p50, p95, p99 = (round(float(v), 4) for v in q)
        return ServingMetricsWindow.model_validate(
            dict(
                window_start=from_micros(self.start_us),
                window_end=from_micros(self.end_us),
                service_name=identity.service_name,
                service_version=identity.service_version,
                environment=identity.environment,
                deployment_id=identity.deployment_id,
                endpoint_name=endpoint,
                model_name=model.model_name,
                model_version=model.model_version,
                bundle_id=model.bundle_id,
                input_dataset_name=model.input_dataset_name,
                input_dataset_version=model.input_dataset_version,
                latency_p50_ms=p50,
                latency_p95_ms=p95,
                latency_p99_ms=p99,
                heartbeat_emitted_at=from_micros(emitted_us),
                **self.counts,
            )
        )


def window_path(root: Path, window: ServingMetricsWindow) -> Path:
    """``<root>/{date}/{hour}/<deployment>.jsonl`` for the window's start (UTC)."""
    start = window.window_start
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", window.deployment_id) or "default"
    return root / start.strftime("%Y-%m-%d") / start.strftime("%H") / f"{safe}.jsonl"


class Telemetry:
    """Prometheus metrics (own registry per app) plus the metrics-window writer.

    ``record`` is called once per predict request, on the request's thread; it only touches
    memory. A daemon thread rolls windows by ``clock`` and appends finished ones to
    ``metrics_dir`` (None: windows are kept in :attr:`written` only).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        window_s: float,
        identity: ServiceIdentity,
        model_stamp: Callable[[], ModelStamp],
        metrics_dir: Path | None,
        keep_written: int = 64,
    ) -> None:
        self.clock = clock
        self.identity = identity
        self.metrics_dir = metrics_dir
        self._window_us = max(1, round(window_s * 1_000_000))
        self._model_stamp = model_stamp
        self._lock = threading.Lock()
        start = self._window_start(to_micros(clock.now()))
        self._current = {e: WindowCounts(start, start + self._window_us) for e in ENDPOINTS}
        self._closed: deque[tuple[str, WindowCounts]] = deque()
        self.written: deque[ServingMetricsWindow] = deque(maxlen=keep_written)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dockline_serve_requests",
            "Predict requests by endpoint and outcome (ok, degraded, or the error reason).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dockline_serve_request_duration_seconds",
            "Time spent handling a predict request inside the app.",
            ["endpoint"],
            buckets=(
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                1.0,
            ),
            registry=self.registry,
        )
        self.probability = Histogram(
            "dockline_serve_prediction_probability",
            "Distribution of served probabilities by role (champion, canary, shadow, baseline).",
            ["role"],
            buckets=tuple(round(0.05 * i, 2) for i in range(1, 21)),
            registry=self.registry,
        )
        self.feature_age = Histogram(
            "dockline_serve_feature_age_seconds",
            "Age of the online feature vectors served (now - as_of).",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "dockline_serve_model_info",
            "The loaded models (value 1), by role.",
            ["role", "model", "version", "bundle_id"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "dockline_serve_model_reloads",
            "Model loads by role and outcome (loaded, or the refusal reason).",
            ["role", "outcome"],
            registry=self.registry,
        )
        self.log_rows = Counter(
            "dockline_serve_prediction_log_rows",
            "Prediction log rows written to Parquet.",
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "dockline_serve_prediction_log_dropped",
            "Prediction log rows dropped because the write queue was full.",
            registry=self.registry,
        )
        self.windows_written = Counter(
            "dockline_serve_metrics_windows",
            "Serving metrics windows written.",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], Counter] = {}
        self._latency = {e: self.latency.labels(e) for e in ENDPOINTS}
        self._probability = {
            r: self.probability.labels(r) for r in ("champion", "canary", "shadow", "baseline")
        }

    def _window_start(self, now_us: int) -> int:
        return now_us - now_us % self._window_us

    # -- the request path ---------------------------------------------------------------------

    def record(
        self,
        endpoint: str,
        now_us: int,
        latency_s: float,
        *,
        outcome: str,
        ok: bool,
        probabilities: Iterable[float] = (),
        fallbacks: int = 0,
    ) -> None:
        """Count one request: ``outcome`` is ``ok``, ``degraded`` or the error reason."""
        child = self._children.get((endpoint, outcome))
        if child is None:
            child = self.requests.labels(endpoint, outcome)
            self._children[endpoint, outcome] = child
        child.inc()
        self._latency[endpoint].observe(latency_s)
        n = nulls = non_finite = out_of_range = 0
        for p in probabilities:
            n += 1
            if p != p or p in (float("inf"), float("-inf")):
                non_finite += 1
            elif p < 0.0 or p > 1.0:
                out_of_range += 1
        with self._lock:
            window = self._current[endpoint]
            if now_us >= window.end_us:
                self._roll_locked(now_us)
                window = self._current[endpoint]
            c = window.counts
            c["request_count"] += 1
            if ok:
                c["success_count"] += 1
            else:
                c["failure_count"] += 1
                for name in _REASON_FIELDS.get(outcome, ("internal_error_count",)):
                    c[name] += 1
            if n:
                c["prediction_count"] += n
                c["prediction_null_count"] += nulls
                c["prediction_non_finite_count"] += non_finite
                c["prediction_out_of_range_count"] += out_of_range
                c["fallback_prediction_count"] += fallbacks
            window.latencies_ms.append(latency_s * 1000.0)

    def observe_prediction(self, role: str, probability: float) -> None:
        """Add one probability to the distribution of ``role``."""
        self._probability[role].observe(probability)

    def model_load_error(self, role: str, reason: str) -> None:
        """Count a refused bundle (in Prometheus and the current predict window)."""
        self.reloads.labels(role, reason).inc()
        with self._lock:
            self._current[ENDPOINTS[0]].counts["model_load_error_count"] += 1

    # -- windows ------------------------------------------------------------------------------

    def _roll_locked(self, now_us: int) -> None:
        start = self._window_start(now_us)
        for endpoint, window in self._current.items():
            if now_us >= window.end_us:
                self._closed.append((endpoint, window))
                self._current[endpoint] = WindowCounts(start, start + self._window_us)

    def tick(self) -> list[ServingMetricsWindow]:
        """Close windows the clock has passed and write every closed window; returns them."""
        now_us = to_micros(self.clock.now())
        with self._lock:
            if any(now_us >= w.end_us for w in self._current.values()):
                self._roll_locked(now_us)
            closed = list(self._closed)
            self._closed.clear()
        return self._write(closed, now_us)

    def flush(self) -> list[ServingMetricsWindow]:
        """Write closed windows and the current (partial) ones, e.g. at shutdown."""
        now_us = to_micros(self.clock.now())
        with self._lock:
            closed = list(self._closed)
            self._closed.clear()
            for endpoint, window in self._current.items():
                if window.counts["request_count"] or window.counts["model_load_error_count"]:
                    closed.append((endpoint, window))
                    fresh = WindowCounts(window.start_us, window.end_us)
                    self._current[endpoint] = fresh
        return self._write(closed, now_us)

    def _write(
        self, closed: list[tuple[str, WindowCounts]], now_us: int
    ) -> list[ServingMetricsWindow]:
        if not closed:
            return []
        stamp = self._model_stamp()
        windows = [w.to_window(e, self.identity, stamp, now_us) for e, w in closed]
        if self.metrics_dir is not None:
            by_file: dict[Path, list[bytes]] = {}
            for window in windows:
                line = window.model_dump_json().encode() + b"\n"
                by_file.setdefault(window_path(self.metrics_dir, window), []).append(line)
            for path, lines in by_file.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("ab") as fh:  # one write per file: whole lines, append-only
                    fh.write(b"".join(lines))
        self.written.extend(windows)
        self.windows_written.inc(len(windows))
        return windows

    def start(self, interval_s: float = 1.0) -> None:
        """Roll and write windows every ``interval_s`` seconds on a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="dockline-serve-metrics", daemon=True
        )
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.tick()
            except Exception:  # keep emitting windows after a transient file error
                _log.exception("writing serving metrics windows failed")

    def stop(self) -> None:
        """Stop the thread and write everything still in memory."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
        self.tick()
        self.flush()
