"""Telemetry: Prometheus metrics and the 60 s serving metrics windows (JSONL, for monitoring).

Requests update in-memory counters only; a background thread closes windows by the injected
clock and appends them as :class:`~dockline.core.contracts.ServingMetricsWindow` lines under
``serving/metrics/{date}/{hour}/``, so no request ever waits for a file.

Every window is written, busy or idle: an idle minute is a heartbeat window with
``request_count`` 0, so monitoring tells an idle service from a missing one. A window whose
file cannot be written is kept and retried on the next tick (at most ``max_unwritten``; beyond,
the oldest is dropped and counted in ``dockline_serving_rows_dropped_total{sink=...}``).
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

__all__ = [
    "ENDPOINTS",
    "METRICS_SINK",
    "PREDICTION_LOG_SINK",
    "ModelStamp",
    "ServiceIdentity",
    "Telemetry",
    "WindowCounts",
    "append_lines",
]

ENDPOINTS = ("/v1/predict", "/v1/predict/batch")
"""The endpoints that get a metrics window each."""

PREDICTION_LOG_SINK = "prediction_log"
METRICS_SINK = "metrics_windows"
# Heartbeats written for one gap at most (a day of windows): a clock that jumps years must not
# write a window per minute of them.
_MAX_HEARTBEATS = 1440

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
    "explain_unavailable": ("rejected_count",),
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


def append_lines(path: Path, data: bytes) -> bool:
    """Append whole lines to ``path`` in one write; True when the file ended in a torn line.

    A line cut short (a crash or a failed write in the middle of it) is closed with a newline
    first, so it stays one bad line that readers report, never glued to the next good one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab+") as fh:
        torn = False
        if fh.tell() > 0:
            fh.seek(-1, 2)
            torn = fh.read(1) != b"\n"
        fh.write(b"\n" + data if torn else data)
    return torn


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
        max_unwritten: int = 10_000,
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
        self._unwritten: list[ServingMetricsWindow] = []  # failed writes, retried next tick
        self._max_unwritten = max_unwritten
        self._emit_lock = threading.Lock()
        self._failing = False
        self._last_files: list[Path] = []
        self.generation = 0
        """Bumped by every change a checkpoint would save (requests, rolls, writes)."""
        self.after_tick: Callable[[], None] | None = None
        """Called on the writer thread after each tick (the crash checkpoint)."""
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
        self.windows_written = Counter(
            "dockline_serve_metrics_windows",
            "Serving metrics windows written.",
            registry=self.registry,
        )
        self.rows_dropped = Counter(
            "dockline_serving_rows_dropped",
            "Rows accepted but never written (queue or retry buffer full, or the disk still"
            " refused them at shutdown), by sink: prediction_log rows, metrics_windows windows.",
            ["sink"],
            registry=self.registry,
        )
        self.write_failures = Counter(
            "dockline_serving_write_failures",
            "Failed writes of the prediction log or the metrics windows (retried), by sink.",
            ["sink"],
            registry=self.registry,
        )
        self.partial_files = Counter(
            "dockline_serving_partial_files",
            "Torn or partial files found: a metrics line cut short, a prediction-log .tmp left"
            " by a killed writer, an unreadable crash checkpoint; by sink.",
            ["sink"],
            registry=self.registry,
        )
        self.restart_missing = Counter(
            "dockline_serving_restart_missing",
            "Rows a restart found lost by a killed predecessor (accepted, never written), by"
            " sink. Rows of its last checkpoint interval are not known, so not counted.",
            ["sink"],
            registry=self.registry,
        )
        self.restart_recovered = Counter(
            "dockline_serving_restart_recovered",
            "Metrics windows a restart recovered from a killed predecessor's checkpoint.",
            ["sink"],
            registry=self.registry,
        )
        for sink in (PREDICTION_LOG_SINK, METRICS_SINK):  # exported at 0 from the start
            for counter in (
                self.rows_dropped,
                self.write_failures,
                self.partial_files,
                self.restart_missing,
                self.restart_recovered,
            ):
                counter.labels(sink)
        # seed 003's prediction counter; roles only (no entity label: cardinality)
        self.ml_predictions = Counter(
            "ml_prediction",
            "Predictions made, by role (champion, canary, shadow, baseline).",
            ["role"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], Counter] = {}
        self._latency = {e: self.latency.labels(e) for e in ENDPOINTS}
        self._probability = {
            r: self.probability.labels(r) for r in ("champion", "canary", "shadow", "baseline")
        }
        self._ml_predictions = {
            r: self.ml_predictions.labels(r) for r in ("champion", "canary", "shadow", "baseline")
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
            self.generation += 1
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
        """Add one probability to the distribution of ``role`` (and count the prediction)."""
        self._probability[role].observe(probability)
        self._ml_predictions[role].inc()

    def model_load_error(self, role: str, reason: str) -> None:
        """Count a refused bundle (in Prometheus and the current predict window)."""
        self.reloads.labels(role, reason).inc()
        with self._lock:
            self._current[ENDPOINTS[0]].counts["model_load_error_count"] += 1

    # -- windows ------------------------------------------------------------------------------

    def _roll_locked(self, now_us: int) -> None:
        start = self._window_start(now_us)
        step = self._window_us
        for endpoint, window in self._current.items():
            if now_us >= window.end_us:
                self._closed.append((endpoint, window))
                # Idle windows between the closed one and now are heartbeats, not gaps.
                first = max(window.end_us, start - _MAX_HEARTBEATS * step)
                for idle in range(first, start, step):
                    self._closed.append((endpoint, WindowCounts(idle, idle + step)))
                self._current[endpoint] = WindowCounts(start, start + step)
        self.generation += 1

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
        windows: list[ServingMetricsWindow] = []
        if closed:
            stamp = self._model_stamp()
            windows = [w.to_window(e, self.identity, stamp, now_us) for e, w in closed]
        return self.emit(windows)

    def emit(self, windows: list[ServingMetricsWindow]) -> list[ServingMetricsWindow]:
        """Append ``windows``, and those kept from failed writes, to their files (one write per
        file); returns the windows written. A file that fails keeps its windows for next time."""
        with self._emit_lock:
            batch = self._unwritten + windows
            self._unwritten = []
            if not batch:
                return []
            written: list[ServingMetricsWindow] = []
            if self.metrics_dir is None:
                written = batch
            else:
                by_file: dict[Path, list[ServingMetricsWindow]] = {}
                for window in batch:
                    by_file.setdefault(window_path(self.metrics_dir, window), []).append(window)
                error: OSError | None = None
                self._last_files = list(by_file)
                for path, group in by_file.items():
                    data = b"".join(w.model_dump_json().encode() + b"\n" for w in group)
                    try:
                        if append_lines(path, data):
                            self.partial_files.labels(METRICS_SINK).inc()
                    except OSError as exc:
                        error = exc
                        self._unwritten.extend(group)
                        self.write_failures.labels(METRICS_SINK).inc()
                    else:
                        written.extend(group)
                self._after_write(error)
            self.written.extend(written)
            self.windows_written.inc(len(written))
            self.generation += 1
            return written

    def _after_write(self, error: OSError | None) -> None:
        if error is None:
            if self._failing:
                _log.warning("serving metrics windows are written again")
            self._failing = False
            return
        excess = len(self._unwritten) - self._max_unwritten
        if excess > 0:  # keep the newest: bounded memory through a long outage
            del self._unwritten[:excess]
            self.rows_dropped.labels(METRICS_SINK).inc(excess)
        if not self._failing:  # one line per outage, not one per tick
            _log.warning(
                "writing serving metrics windows failed; keeping %d to retry: %s",
                len(self._unwritten),
                error,
            )
        self._failing = True

    def model_stamp(self) -> ModelStamp:
        """The champion windows are attributed to right now."""
        return self._model_stamp()

    def snapshot(self) -> tuple[list[tuple[str, WindowCounts]], list[Path]]:
        """Copies of the windows in memory (closed-unwritten and current) and the files last
        appended to: what a crash checkpoint saves."""
        with self._lock:
            windows = [*self._closed, *self._current.items()]
            copies = []
            for endpoint, window in windows:
                copy = WindowCounts(window.start_us, window.end_us)
                copy.counts.update(window.counts)
                copy.latencies_ms = array("d", window.latencies_ms)
                copies.append((endpoint, copy))
        return copies, list(self._last_files)

    def merge(
        self, endpoint: str, start_us: int, counts: dict[str, int], latencies: array[float]
    ) -> bool:
        """Add a predecessor's counts to the current window of ``endpoint`` if it is the same
        window (same start); False otherwise."""
        with self._lock:
            window = self._current.get(endpoint)
            if window is None or window.start_us != start_us:
                return False
            for name, value in counts.items():
                if name in window.counts:
                    window.counts[name] += value
            window.latencies_ms.extend(latencies)
            self.generation += 1
        return True

    @property
    def unwritten(self) -> list[ServingMetricsWindow]:
        """Windows whose write failed, waiting for the next attempt."""
        return list(self._unwritten)

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
                if self.after_tick is not None:
                    self.after_tick()
            except Exception:  # keep emitting windows whatever happened
                _log.exception("writing serving metrics windows failed")

    def stop(self) -> None:
        """Stop the thread and write everything still in memory (windows the disk still
        refuses stay in :attr:`unwritten` for the caller's checkpoint)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
        self.tick()
        self.flush()
