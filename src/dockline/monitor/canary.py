"""Canary analysis: a challenger judged against the champion running beside it, window by window.

Pure: the caller hands over, per analysis window, what each side did (:class:`Side`: requests,
errors, latencies, probabilities and the labels known so far) and gets a :class:`WindowAnalysis`
— one :class:`MetricResult` per metric and the window's verdict. :func:`decide` turns the
windows so far into one action. The rules follow Argo Rollouts' analysis runs and Flagger:

* every metric is ``pass``, ``marginal`` (past its warn limit) or ``fail`` (past its fail
  limit) — or ``inconclusive`` when there is too little to judge it on;
* a window fails when any deciding metric fails; it is **inconclusive** when either side served
  fewer than ``min_requests`` — low traffic is never read as a pass (Argo #3850: promoted after
  an inconclusive analysis) nor as a failure (Flagger #1035: rolled back for lack of traffic);
* more failed windows than ``failure_limit`` roll the challenger back; more consecutive
  inconclusive windows than ``inconclusive_limit`` **pause** it (it keeps its share, nothing is
  decided until traffic returns); ``success_windows`` passing windows promote it;
* a metric named in ``dry_run`` is measured and recorded, and never decides (Argo's dryRun):
  how a new metric earns its place.

Metrics, each challenger against champion in the same window:

=================== ==================================================================
``error_rate``      challenger's error share minus the champion's
``latency_p95``     challenger's p95 latency ÷ (champion's p95 + ``latency_slack_ms``)
``prediction_shift``Wasserstein-1 distance between the two sides' probabilities
``prediction_spread``|ln(challenger's std ÷ champion's)| of the probabilities: ∞ for a
                    constant model, wherever its constant lies
``live_brier``      challenger's Brier score minus the champion's, on labelled predictions
=================== ==================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dockline.core.config import MonitorCanaryConfig

__all__ = [
    "CANARY_METRICS",
    "CanaryDecision",
    "MetricResult",
    "Phase",
    "Side",
    "WindowAnalysis",
    "analyze_window",
    "decide",
    "wasserstein",
]

Verdict = Literal["pass", "marginal", "fail", "inconclusive"]
Phase = Literal["shadow", "canary"]
Action = Literal["continue", "advance", "promote", "rollback", "pause"]

CANARY_METRICS = (
    "error_rate",
    "latency_p95",
    "prediction_shift",
    "prediction_spread",
    "live_brier",
)

Floats = npt.NDArray[np.float64]


def _floats(values: Sequence[float] | npt.ArrayLike | None) -> Floats:
    if values is None:
        return np.empty(0, dtype=np.float64)
    return np.asarray(values, dtype=np.float64).reshape(-1)


@dataclass(frozen=True, slots=True)
class Side:
    """What one side (champion or challenger) did in one analysis window.

    ``probabilities`` are the valid predictions it made; ``labels`` is aligned with them (NaN
    while a label is unknown). ``errors`` counts requests it failed, invalid predictions included.
    """

    requests: int
    errors: int = 0
    latencies_ms: Floats = field(default_factory=lambda: _floats(None))
    probabilities: Floats = field(default_factory=lambda: _floats(None))
    labels: Floats = field(default_factory=lambda: _floats(None))

    @classmethod
    def of(
        cls,
        *,
        requests: int,
        errors: int = 0,
        latencies_ms: npt.ArrayLike | None = None,
        probabilities: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
    ) -> Side:
        """A side from any array-likes (labels default to all unknown)."""
        probs = _floats(probabilities)
        known = _floats(labels) if labels is not None else np.full(probs.shape, np.nan)
        if known.shape != probs.shape:
            raise ValueError("labels must align with probabilities")
        return cls(requests, errors, _floats(latencies_ms), probs, known)


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric of one window: both sides' values, the score judged and its verdict."""

    name: str
    verdict: Verdict
    score: float | None
    champion: float | None
    challenger: float | None
    warn: float
    fail: float
    dry_run: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats rounded to 6 places)."""
        return {
            "name": self.name,
            "verdict": self.verdict,
            "score": _round(self.score),
            "champion": _round(self.champion),
            "challenger": _round(self.challenger),
            "warn": self.warn,
            "fail": self.fail,
            "dry_run": self.dry_run,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class WindowAnalysis:
    """One analysis window's verdict, from its metrics."""

    start: datetime
    end: datetime
    phase: Phase
    verdict: Verdict
    champion_requests: int
    challenger_requests: int
    metrics: list[MetricResult]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the evidence stored with a decision."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "phase": self.phase,
            "verdict": self.verdict,
            "champion_requests": self.champion_requests,
            "challenger_requests": self.challenger_requests,
            "reason": self.reason,
            "metrics": [m.to_dict() for m in self.metrics],
        }


@dataclass(frozen=True, slots=True)
class CanaryDecision:
    """What to do after the windows so far, and why (with the counts it rests on)."""

    action: Action
    reason: str
    failed: int
    passed: int
    marginal: int
    inconclusive_run: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "action": self.action,
            "reason": self.reason,
            "failed": self.failed,
            "passed": self.passed,
            "marginal": self.marginal,
            "inconclusive_run": self.inconclusive_run,
        }


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def wasserstein(a: Floats, b: Floats) -> float:
    """Wasserstein-1 distance between two samples (exact: ∫|F_a − F_b|), vectorized."""
    a, b = np.sort(a), np.sort(b)
    if a.size == 0 or b.size == 0:
        return float("nan")
    knots = np.sort(np.concatenate([a, b]))
    widths = np.diff(knots)
    cdf_a = np.searchsorted(a, knots[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, knots[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * widths))


def _grade(score: float, warn: float, fail: float) -> Verdict:
    # strict, like every threshold in the monitor: a score exactly at a limit passes it
    if score > fail:
        return "fail"
    if score > warn:
        return "marginal"
    return "pass"


def _metric(
    name: str,
    score: float | None,
    champion: float | None,
    challenger: float | None,
    warn: float,
    fail: float,
    config: MonitorCanaryConfig,
    *,
    detail: str = "",
) -> MetricResult:
    dry = name in config.dry_run
    if score is None or np.isnan(score):
        return MetricResult(
            name, "inconclusive", None, champion, challenger, warn, fail, dry, detail
        )
    verdict = _grade(score, warn, fail)
    return MetricResult(name, verdict, score, champion, challenger, warn, fail, dry, detail)


BURST_ALPHA = 0.01
"""Below the minimum sample, errors fail only when this unlikely under the fail limit."""


def _few_requests_errors(
    champion: Side, challenger: Side, config: MonitorCanaryConfig
) -> MetricResult:
    """The error rate under low traffic: inconclusive, unless the challenger's errors are too
    many to be chance at the fail limit (one-sided binomial test, ``BURST_ALPHA``): 10 errors
    in 20 requests is a failure at any traffic, 1 in 3 is not evidence of anything."""
    from scipy.stats import binom

    ce = champion.errors / champion.requests if champion.requests else 0.0
    n, k = challenger.requests, challenger.errors
    xe = k / n if n else None
    limit = min(1.0, ce + config.error_rate_fail)
    if n and k and float(binom.sf(k - 1, n, limit)) < BURST_ALPHA:
        return MetricResult(
            "error_rate",
            "fail",
            (xe or 0.0) - ce,
            ce,
            xe,
            config.error_rate_warn,
            config.error_rate_fail,
            "error_rate" in config.dry_run,
            f"{k} errors in {n} requests: significant below the minimum sample",
        )
    return _metric(
        "error_rate",
        None,
        ce,
        xe,
        config.error_rate_warn,
        config.error_rate_fail,
        config,
        detail="too few requests",
    )


def _spread_ratio(champion: float, challenger: float) -> float:
    """|ln(challenger std ÷ champion std)|: 0 for the same spread, ∞ for a constant model."""
    floor = 1e-9  # float32 noise of a constant output is not spread
    if champion <= floor and challenger <= floor:
        return 0.0
    if champion <= floor or challenger <= floor:
        return float("inf")
    return abs(float(np.log(challenger / champion)))


def _p95(values: Floats) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, 95)) if finite.size else None


def _brier(side: Side) -> tuple[float | None, int]:
    known = np.isfinite(side.labels) & np.isfinite(side.probabilities)
    n = int(known.sum())
    if n == 0:
        return None, 0
    diff = side.probabilities[known] - side.labels[known]
    return float(np.mean(diff * diff)), n


def analyze_window(
    champion: Side,
    challenger: Side,
    config: MonitorCanaryConfig,
    *,
    start: datetime,
    end: datetime,
    phase: Phase = "canary",
    shift_reference: npt.ArrayLike | None = None,
) -> WindowAnalysis:
    """Judge one window: each metric's verdict, then the window's (see the module docstring).

    In ``shadow`` both sides scored the same requests but the challenger's latency is its
    scoring time alone, not a request's: latency is judged in the canary phase only. In
    ``canary`` the two sides answer different entities, so their probabilities differ by the
    entity mix alone; ``shift_reference`` (the champion's recent predictions *for the
    challenger's entities*) is then what the prediction shift is measured against.
    """
    metrics: list[MetricResult] = []
    enough = min(champion.requests, challenger.requests) >= config.min_requests
    # error rate
    if enough:
        ce = champion.errors / champion.requests
        xe = challenger.errors / challenger.requests
        metrics.append(
            _metric(
                "error_rate",
                xe - ce,
                ce,
                xe,
                config.error_rate_warn,
                config.error_rate_fail,
                config,
            )
        )
    else:
        metrics.append(_few_requests_errors(champion, challenger, config))
    # latency
    cp, xp = _p95(champion.latencies_ms), _p95(challenger.latencies_ms)
    latency_score = None
    detail = ""
    if phase == "shadow":
        detail = "shadow measures scoring time only; judged in canary"
    elif enough and cp is not None and xp is not None:
        latency_score = xp / (cp + config.latency_slack_ms)
    metrics.append(
        _metric(
            "latency_p95",
            latency_score,
            cp,
            xp,
            config.latency_ratio_warn,
            config.latency_ratio_fail,
            config,
            detail=detail,
        )
    )
    # prediction shift
    base = champion.probabilities if shift_reference is None else _floats(shift_reference)
    cprob = base[np.isfinite(base)]
    xprob = challenger.probabilities[np.isfinite(challenger.probabilities)]
    shift = None
    if min(cprob.size, xprob.size) >= config.min_requests:
        shift = wasserstein(cprob, xprob)
    metrics.append(
        _metric(
            "prediction_shift",
            shift,
            float(cprob.mean()) if cprob.size else None,
            float(xprob.mean()) if xprob.size else None,
            config.shift_warn,
            config.shift_fail,
            config,
            detail="mean probabilities; score = W1 distance"
            + ("" if shift_reference is None else " to the champion on the same entities"),
        )
    )
    # spread: a model that learned nothing answers (almost) the same for everyone — wherever
    # that constant lies, even close to the champion's usual answer
    spread = None
    if min(cprob.size, xprob.size) >= config.min_requests:
        spread = _spread_ratio(float(cprob.std()), float(xprob.std()))
    metrics.append(
        _metric(
            "prediction_spread",
            spread,
            float(cprob.std()) if cprob.size else None,
            float(xprob.std()) if xprob.size else None,
            config.spread_warn,
            config.spread_fail,
            config,
            detail="standard deviations; score = |ln(challenger / champion)|",
        )
    )
    # live performance, once labels have landed on both sides
    (cb, cn), (xb, xn) = _brier(champion), _brier(challenger)
    brier_score = None
    if min(cn, xn) >= config.min_labels and cb is not None and xb is not None:
        brier_score = xb - cb
    metrics.append(
        _metric(
            "live_brier",
            brier_score,
            cb,
            xb,
            config.brier_warn,
            config.brier_fail,
            config,
            detail=f"labelled: champion {cn}, challenger {xn}",
        )
    )
    deciding = [m for m in metrics if not m.dry_run]
    failed = [m for m in deciding if m.verdict == "fail"]
    marginal = [m for m in deciding if m.verdict == "marginal"]
    verdict: Verdict
    if failed:
        # a failure is a failure even on little traffic: an error burst must not hide behind it
        verdict, reason = "fail", "failed: " + ", ".join(_describe(m) for m in failed)
    elif not enough:
        verdict = "inconclusive"
        reason = (
            f"inconclusive: {champion.requests} champion / {challenger.requests} challenger"
            f" requests < min {config.min_requests}"
        )
    elif marginal:
        verdict, reason = "marginal", "marginal: " + ", ".join(_describe(m) for m in marginal)
    else:
        verdict, reason = "pass", "every metric passed"
    return WindowAnalysis(
        start=start,
        end=end,
        phase=phase,
        verdict=verdict,
        champion_requests=champion.requests,
        challenger_requests=challenger.requests,
        metrics=metrics,
        reason=reason,
    )


def _describe(m: MetricResult) -> str:
    limit = m.fail if m.verdict == "fail" else m.warn
    return f"{m.name} {m.score:.4g} > {limit:.4g}"


def decide(
    analyses: Sequence[WindowAnalysis], config: MonitorCanaryConfig, *, phase: Phase
) -> CanaryDecision:
    """The action after ``analyses`` (all windows of this challenger, oldest first; failures
    count across shadow and canary), while in ``phase``.

    Rollback beats pause beats promotion: ``failed > failure_limit`` → ``rollback``; a trailing
    run of inconclusive windows longer than ``inconclusive_limit`` → ``pause``; in shadow,
    ``shadow_windows`` conclusive windows → ``advance`` (to canary); in canary,
    ``success_windows`` passes → ``promote``, ``max_windows`` conclusive windows without → a
    ``rollback``; else ``continue``.
    """
    failed = sum(a.verdict == "fail" for a in analyses)
    current = [a for a in analyses if a.phase == phase]
    passed = sum(a.verdict == "pass" for a in current)
    marginal = sum(a.verdict == "marginal" for a in current)
    run = 0
    for a in reversed(analyses):
        if a.verdict != "inconclusive":
            break
        run += 1

    def out(action: Action, reason: str) -> CanaryDecision:
        return CanaryDecision(action, reason, failed, passed, marginal, run)

    if failed > config.failure_limit:
        last = next(a for a in reversed(analyses) if a.verdict == "fail")
        return out(
            "rollback",
            f"{failed} failed analysis windows > failure_limit {config.failure_limit};"
            f" last {last.reason}",
        )
    if run > config.inconclusive_limit:
        return out(
            "pause",
            f"{run} consecutive inconclusive windows > inconclusive_limit"
            f" {config.inconclusive_limit}; {analyses[-1].reason}",
        )
    conclusive = sum(a.verdict != "inconclusive" for a in current)
    if phase == "shadow":
        if conclusive >= config.shadow_windows:
            return out("advance", f"shadow: {conclusive} conclusive windows, {failed} failed")
        return out("continue", f"shadow: {conclusive} of {config.shadow_windows} windows")
    if passed >= config.success_windows:
        return out(
            "promote",
            f"{passed} passing canary windows >= success_windows {config.success_windows};"
            f" {failed} failed, {marginal} marginal",
        )
    if conclusive >= config.max_windows:
        return out(
            "rollback",
            f"not proven: {passed} passing of {conclusive} conclusive canary windows"
            f" (max_windows {config.max_windows})",
        )
    return out("continue", f"canary: {passed} of {config.success_windows} passing windows")
