"""Live performance: served probabilities against the labels as they become known.

A pure function of arrays — model version, window, calibrated probability, label (NaN while
unknown) — to per (version, window) metrics: PR-AUC (average precision), Brier score, expected
calibration error (ECE, 10 equal-width bins) and precision and recall at the bundle's threshold,
each with its count and a bootstrap interval (percentile, resampling rows; deterministic seed).
ECE is biased upward — resampling noise only ever adds to ``|gap|`` — so its interval can sit
above a small point value.

Before labels arrive, a CBPE-style estimate (confidence-based performance estimation) reads the
same metrics off the probabilities themselves: a calibrated probability p *is* the expected
label, so e.g. expected true positives at the threshold are ``Σ p`` over flagged rows, and the
expected PR-AUC is the mean over label draws ``y ~ Bernoulli(p)``. Once labels land, the estimate
and the realized value sit side by side and their difference is the estimate's error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["METRICS", "MetricValue", "PerformanceWindow", "live_performance", "metrics_weighted"]

Floats = npt.NDArray[np.float64]
METRICS = ("pr_auc", "brier", "ece", "precision", "recall")
_ECE_BINS = 10


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A realized metric with its bootstrap interval (None when undefined, e.g. no positives)."""

    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class PerformanceWindow:
    """One model version over one window."""

    model_version: int
    window_start_us: int
    predictions: int
    labelled: int
    positives: int
    flagged: int
    metrics: dict[str, MetricValue]
    estimate: dict[str, float | None]
    estimate_error: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "model_version": self.model_version,
            "window_start_us": self.window_start_us,
            "predictions": self.predictions,
            "labelled": self.labelled,
            "positives": self.positives,
            "flagged": self.flagged,
            "metrics": {
                k: {"value": v.value, "low": v.low, "high": v.high} for k, v in self.metrics.items()
            },
            "estimate": self.estimate,
            "estimate_error": self.estimate_error,
        }


def _round(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def metrics_weighted(p: Floats, y: Floats, w: Floats, threshold: float) -> dict[str, Floats]:
    """The metrics of rows weighted by each row of ``w`` (``[b, n]``; a bootstrap resample is a
    row of counts). ``p`` must be sorted descending. NaN where a metric is undefined.
    """
    pos = w * y
    neg = w * (1.0 - y)
    total = w.sum(axis=1)
    positives = pos.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Average precision at each distinct score (ties share one threshold, as scikit-learn).
        last = np.flatnonzero(np.r_[p[1:] != p[:-1], True])
        tps = np.cumsum(pos, axis=1)[:, last]
        fps = np.cumsum(neg, axis=1)[:, last]
        precision_curve = tps / (tps + fps)
        recall_steps = np.diff(np.concatenate([np.zeros((w.shape[0], 1)), tps], axis=1), axis=1)
        ap = np.nansum(recall_steps * precision_curve, axis=1) / positives
        brier = (w * (p - y) ** 2).sum(axis=1) / total
        bins = np.minimum((p * _ECE_BINS).astype(np.intp), _ECE_BINS - 1)
        gap = np.zeros((w.shape[0], _ECE_BINS))
        for b in range(_ECE_BINS):  # ten bins: a loop of vectorized sums
            inside = bins == b
            gap[:, b] = (w[:, inside] * (p[inside] - y[inside])).sum(axis=1)
        ece = np.abs(gap).sum(axis=1) / total
        flagged = p >= threshold
        tp = pos[:, flagged].sum(axis=1)
        precision = tp / w[:, flagged].sum(axis=1)
        recall = tp / positives
    return {"pr_auc": ap, "brier": brier, "ece": ece, "precision": precision, "recall": recall}


def _estimate(
    p: Floats, threshold: float, draws: int, rng: np.random.Generator
) -> dict[str, float]:
    """CBPE: the metrics' expectations if each label were Bernoulli(p)."""
    n = p.size
    flagged = p >= threshold
    expected_tp = float(p[flagged].sum())
    est: dict[str, float] = {
        "brier": float(np.mean(p * (1.0 - p))),
        "ece": 0.0,  # calibrated by assumption: the estimate cannot see miscalibration
        "precision": expected_tp / float(flagged.sum()) if flagged.any() else float("nan"),
        "recall": expected_tp / float(p.sum()) if p.sum() > 0 else float("nan"),
    }
    labels = (rng.random((draws, n)) < p).astype(np.float64)
    ones = np.ones((1, n))
    aps = [metrics_weighted(p, labels[i], ones, threshold)["pr_auc"][0] for i in range(draws)]
    est["pr_auc"] = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
    return est


def live_performance(
    versions: npt.ArrayLike,
    windows_us: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    threshold: float,
    bootstrap: int = 200,
    draws: int = 20,
    seed: int = 0,
) -> list[PerformanceWindow]:
    """Metrics per (model version, window start); ``labels`` is 1/0, NaN while unknown.

    >>> [w.labelled for w in live_performance([1, 1], [0, 0], [0.9, 0.2], [1.0, np.nan],
    ...                                        threshold=0.5)]
    [1]
    """
    v = np.asarray(versions, dtype=np.int64)
    t = np.asarray(windows_us, dtype=np.int64)
    p_all = np.asarray(probabilities, dtype=np.float64)
    y_all = np.asarray(labels, dtype=np.float64)
    keep = np.isfinite(p_all)
    v, t, p_all, y_all = v[keep], t[keep], p_all[keep], y_all[keep]
    out: list[PerformanceWindow] = []
    rng = np.random.default_rng(seed)
    groups = np.unique(np.stack([v, t], axis=1), axis=0) if v.size else np.zeros((0, 2))
    for version, start in groups:
        rows = (v == version) & (t == start)
        order = np.argsort(-p_all[rows], kind="stable")
        p, y = p_all[rows][order], y_all[rows][order]
        known = np.isfinite(y)
        estimate = {k: _round(x) for k, x in _estimate(p, threshold, draws, rng).items()}
        metrics: dict[str, MetricValue] = {}
        pk, yk = p[known], y[known]
        if pk.size:
            point = metrics_weighted(pk, yk, np.ones((1, pk.size)), threshold)
            picks = rng.integers(0, pk.size, size=(bootstrap, pk.size))
            offsets = (np.arange(bootstrap) * pk.size)[:, None]
            weights = np.bincount((picks + offsets).ravel(), minlength=bootstrap * pk.size)
            boot = metrics_weighted(
                pk, yk, weights.reshape(bootstrap, pk.size).astype(np.float64), threshold
            )
            for name in METRICS:
                sample = boot[name][np.isfinite(boot[name])]
                low, high = np.percentile(sample, [2.5, 97.5]) if sample.size else (np.nan, np.nan)
                metrics[name] = MetricValue(_round(point[name][0]), _round(low), _round(high))
        errors = {
            name: None
            if metrics.get(name) is None
            or metrics[name].value is None
            or estimate.get(name) is None
            else _round(float(estimate[name] or 0.0) - float(metrics[name].value or 0.0))
            for name in METRICS
        }
        out.append(
            PerformanceWindow(
                model_version=int(version),
                window_start_us=int(start),
                predictions=int(p.size),
                labelled=int(known.sum()),
                positives=int(np.nansum(yk)) if pk.size else 0,
                flagged=int((p >= threshold).sum()),
                metrics=metrics,
                estimate=estimate,
                estimate_error=errors if pk.size else {},
            )
        )
    return out
