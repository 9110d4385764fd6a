"""Deployment health: healthy / degraded / unhealthy from serving metrics windows.

A pure function of the windows, the thresholds (``[monitor.health]``) and the evaluation time.
The checks run in seed 003's order and the first failing one decides; every comparison is
strict (a value exactly at its threshold passes), and ``unhealthy`` checks come first so they
beat ``degraded`` ones:

1. ``staleness``: the newest window ended more than ``max_staleness_minutes`` ago → unhealthy
2. ``no_traffic``: no request in the lookback → unhealthy
3. ``missing_windows``: more than ``max_missing_windows`` missing → degraded
4. ``max_gap``: a gap between window starts over ``max_gap_minutes`` → degraded
5. ``latency_p95`` / ``latency_p99``: the latest window with traffic over the limit → degraded
6. ``failure_rate`` / ``rejection_rate``: over the limit, pooled over the lookback → degraded

Where the seed is weak this fixes it: only windows ending in the last ``lookback`` are judged
(not all history); serving writes a heartbeat window (``request_count`` 0) for every idle minute,
so an idle minute is present, not missing; and with fewer than ``min_requests`` requests the rate
checks are *inconclusive* (named in ``inconclusive`` and in the detail) rather than a verdict
drawn from a handful of requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from dockline.core.config import MonitorHealthConfig
from dockline.core.contracts import ServingMetricsWindow
from dockline.core.monitoring import DeploymentHealthState, HealthStatus
from dockline.core.time import ensure_utc

__all__ = ["classify_deployment", "count_missing_windows", "deployment_health", "max_gap"]

_ENDPOINT_ORDER = {"/v1/predict": 0, "/v1/predict/batch": 1}


def count_missing_windows(
    starts: Sequence[datetime], expected_seconds: float, gap_factor: float
) -> int:
    """Windows missing between consecutive ``starts`` (sorted, distinct), seed 003's rule.

    A gap over ``expected_seconds × gap_factor`` counts ``gap / expected - 1`` windows (at
    least one); a shorter gap counts none.
    """
    missing = 0
    limit = expected_seconds * gap_factor
    for before, after in itertools.pairwise(starts):
        gap = (after - before).total_seconds()
        if gap > limit:
            missing += max(int(gap / expected_seconds) - 1, 1)
    return missing


def max_gap(starts: Sequence[datetime]) -> timedelta:
    """The largest gap between consecutive window starts (zero for fewer than two)."""
    gaps = [after - before for before, after in itertools.pairwise(starts)]
    return max(gaps, default=timedelta(0))


def _minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60.0


def classify_deployment(
    windows: Sequence[ServingMetricsWindow],
    config: MonitorHealthConfig,
    at: datetime,
) -> DeploymentHealthState:
    """The health of one deployment at ``at`` from its windows (those ending after ``at`` are
    ignored). ``windows`` must be non-empty and share one ``deployment_id``.
    """
    at = ensure_utc(at)
    known = [w for w in windows if w.window_end <= at]
    if not known:
        raise ValueError("classify_deployment needs at least one window ending by `at`")
    deployments = {w.deployment_id for w in known}
    if len(deployments) > 1:
        raise ValueError(f"windows of several deployments: {sorted(deployments)}")

    def order(w: ServingMetricsWindow) -> tuple[datetime, int, str]:
        return (w.window_end, -_ENDPOINT_ORDER.get(w.endpoint_name, 9), w.endpoint_name)

    latest = max(known, key=order)
    since = at - config.lookback
    judged = sorted((w for w in known if w.window_end > since), key=lambda w: w.window_start)
    starts = sorted({w.window_start for w in judged})
    missing = count_missing_windows(
        starts, config.expected_window_seconds, config.max_allowed_gap_factor
    )
    requests = sum(w.request_count for w in judged)
    inconclusive: list[str] = []
    if 0 < requests < config.min_requests:
        inconclusive = ["failure_rate", "rejection_rate"]

    def make(status: HealthStatus, check: str | None, detail: str) -> DeploymentHealthState:
        return DeploymentHealthState(
            deployment_id=latest.deployment_id,
            model_name=latest.model_name,
            model_version=latest.model_version,
            bundle_id=latest.bundle_id,
            input_dataset_name=latest.input_dataset_name,
            input_dataset_version=latest.input_dataset_version,
            status=status,
            evaluated_windows=len(judged),
            latest_window_end=latest.window_end,
            missing_window_count=missing,
            detail=detail,
            failing_check=check,
            inconclusive=inconclusive,
            evaluated_at=at,
            lookback_seconds=config.lookback.total_seconds(),
            request_count=requests,
        )

    staleness = at - latest.window_end
    if staleness > timedelta(minutes=config.max_staleness_minutes):
        return make(
            "unhealthy",
            "staleness",
            f"staleness {_minutes(staleness):.1f}min > {config.max_staleness_minutes:.1f}min",
        )
    if requests == 0:
        return make(
            "unhealthy",
            "no_traffic",
            f"no_traffic: request_count == 0 across all {len(judged)} evaluated windows"
            f" of the last {_minutes(config.lookback):.0f}min",
        )
    if missing > config.max_missing_windows:
        return make(
            "degraded",
            "missing_windows",
            f"missing_windows={missing} > {config.max_missing_windows}",
        )
    gap = max_gap(starts)
    if gap > timedelta(minutes=config.max_gap_minutes):
        return make(
            "degraded",
            "max_gap",
            f"max_gap={_minutes(gap):.1f}min > {config.max_gap_minutes:.1f}min",
        )
    busy = [w for w in judged if w.request_count > 0 and w.latency_p95_ms is not None]
    if busy:
        newest = busy[-1].window_start
        last = [w for w in busy if w.window_start == newest]
        p95 = max(w.latency_p95_ms or 0.0 for w in last)
        p99 = max(w.latency_p99_ms or 0.0 for w in last)
        if p95 > config.latency_p95_ms:
            return make(
                "degraded",
                "latency_p95",
                f"latency_p95={p95:.1f}ms > {config.latency_p95_ms:.1f}ms",
            )
        if p99 > config.latency_p99_ms:
            return make(
                "degraded",
                "latency_p99",
                f"latency_p99={p99:.1f}ms > {config.latency_p99_ms:.1f}ms",
            )
    if not inconclusive:
        failures = sum(w.failure_count for w in judged)
        rejected = sum(w.rejected_count for w in judged)
        failure_rate = failures * 100.0 / requests
        rejection_rate = rejected * 100.0 / requests
        if failure_rate > config.failure_rate_pct:
            return make(
                "degraded",
                "failure_rate",
                f"failure_rate={failure_rate:.1f}% > {config.failure_rate_pct:.1f}%"
                f" ({failures} of {requests} requests)",
            )
        if rejection_rate > config.rejection_rate_pct:
            return make(
                "degraded",
                "rejection_rate",
                f"rejection_rate={rejection_rate:.1f}% > {config.rejection_rate_pct:.1f}%"
                f" ({rejected} of {requests} requests)",
            )
        return make("healthy", None, "all checks passed")
    return make(
        "healthy",
        None,
        f"all checks passed; failure_rate and rejection_rate inconclusive:"
        f" {requests} requests < min {config.min_requests}",
    )


def deployment_health(
    windows: Iterable[ServingMetricsWindow],
    config: MonitorHealthConfig,
    at: datetime,
    *,
    deployment: str | None = None,
) -> list[DeploymentHealthState]:
    """The health of every deployment (or just ``deployment``) with a window ending by ``at``,
    sorted by deployment id.
    """
    at = ensure_utc(at)
    groups: dict[str, list[ServingMetricsWindow]] = {}
    for window in windows:
        if window.window_end <= at and (deployment is None or window.deployment_id == deployment):
            groups.setdefault(window.deployment_id, []).append(window)
    return [classify_deployment(groups[key], config, at) for key in sorted(groups)]
