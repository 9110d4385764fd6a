"""Metrics of probabilistic predictions: ranking, calibration, the decision, slices, importance.

Everything returns plain floats (NaN where undefined, e.g. ROC-AUC on one class) so reports
and MLflow take them as they are; :func:`json_safe` turns NaN into null for JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dockline.core.errors import ConfigError

__all__ = [
    "ECE_BINS",
    "HIGHER_IS_BETTER",
    "Reliability",
    "average_precision",
    "brier",
    "classification_metrics",
    "ece",
    "is_better",
    "json_safe",
    "lift",
    "log_loss",
    "metric",
    "permutation_importance",
    "pr_curve",
    "reliability",
    "roc_auc",
    "slice_metrics",
]

FloatArray = npt.NDArray[np.float64]
ECE_BINS = 15
_EPS = 1e-15

HIGHER_IS_BETTER: dict[str, bool] = {
    "pr_auc": True,
    "roc_auc": True,
    "brier": False,
    "log_loss": False,
}


def _arrays(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    return np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)


def roc_auc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half); NaN when ``y`` has one class."""
    yy, pp = _arrays(y, p)
    n_pos = float(yy.sum())
    n_neg = float(yy.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Mann-Whitney U from average ranks: exact with ties, O(n log n), no sklearn warnings.
    order = np.argsort(pp, kind="mergesort")
    ranks = np.empty(pp.size, dtype=np.float64)
    sorted_p = pp[order]
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = float(ranks[yy == 1].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def pr_curve(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision, recall and threshold for each distinct score, thresholds descending.

    Row ``i`` is the operating point "predict positive when ``p >= thresholds[i]``".
    """
    yy, pp = _arrays(y, p)
    order = np.argsort(-pp, kind="mergesort")
    ys, ps = yy[order], pp[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1.0 - ys)
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), ps.size - 1] if ps.size else np.array([], int)
    tp, fp, thresholds = tp[last], fp[last], ps[last]
    total_pos = float(yy.sum())
    precision = tp / np.maximum(tp + fp, 1.0)
    recall = tp / total_pos if total_pos > 0 else np.zeros_like(tp)
    return precision, recall, thresholds


def average_precision(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """PR-AUC as average precision (step-wise, as scikit-learn); NaN without positives."""
    yy, _ = _arrays(y, p)
    if yy.sum() == 0:
        return math.nan
    precision, recall, _ = pr_curve(y, p)
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def brier(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean squared error of the probabilities."""
    yy, pp = _arrays(y, p)
    return float(np.mean((pp - yy) ** 2)) if yy.size else math.nan


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15]."""
    yy, pp = _arrays(y, p)
    if yy.size == 0:
        return math.nan
    q = np.clip(pp, _EPS, 1 - _EPS)
    return float(-np.mean(yy * np.log(q) + (1 - yy) * np.log1p(-q)))


@dataclass(frozen=True, slots=True)
class Reliability:
    """Per-bin mean prediction, observed rate and count (equal-width bins over [0, 1])."""

    edges: FloatArray
    mean_predicted: FloatArray
    observed: FloatArray
    counts: npt.NDArray[np.int64]


def reliability(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = ECE_BINS) -> Reliability:
    """The reliability diagram's data; empty bins hold NaN."""
    yy, pp = _arrays(y, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(pp, edges[1:-1], right=False), 0, bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.int64)
    sum_p = np.bincount(idx, weights=pp, minlength=bins)
    sum_y = np.bincount(idx, weights=yy, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / np.maximum(counts, 1), np.nan)
        obs = np.where(counts > 0, sum_y / np.maximum(counts, 1), np.nan)
    return Reliability(edges=edges, mean_predicted=mean_p, observed=obs, counts=counts)


def ece(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """Expected calibration error: support-weighted mean |observed − predicted| over bins."""
    r = reliability(y, p, bins)
    total = int(r.counts.sum())
    if total == 0:
        return math.nan
    used = r.counts > 0
    gaps = np.abs(r.observed[used] - r.mean_predicted[used])
    return float(np.sum(gaps * r.counts[used]) / total)


_METRICS: dict[str, Callable[[npt.ArrayLike, npt.ArrayLike], float]] = {
    "pr_auc": average_precision,
    "roc_auc": roc_auc,
    "brier": brier,
    "log_loss": log_loss,
}


def metric(name: str, y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """One of ``pr_auc``, ``roc_auc``, ``brier``, ``log_loss`` by name."""
    try:
        fn = _METRICS[name]
    except KeyError:
        raise ConfigError(
            f"metric must be one of {', '.join(_METRICS)}; got {name!r}", where="train"
        ) from None
    return fn(y, p)


def is_better(name: str, a: float, b: float) -> bool:
    """Whether value ``a`` of metric ``name`` is strictly better than ``b`` (NaN never is)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if HIGHER_IS_BETTER[name] else a < b


def lift(name: str, model: float, baseline: float) -> float:
    """Ratio of the metric, oriented so that > 1 means the model is better."""
    num, den = (model, baseline) if HIGHER_IS_BETTER[name] else (baseline, model)
    if math.isnan(num) or math.isnan(den) or den == 0:
        return math.nan
    return num / den


def classification_metrics(
    y: npt.ArrayLike, p: npt.ArrayLike, threshold: float | None = None
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier, log-loss, ECE, base rate, support; and precision/recall at
    ``threshold`` (``p >= threshold``) when given."""
    yy, pp = _arrays(y, p)
    out = {
        "roc_auc": roc_auc(yy, pp),
        "pr_auc": average_precision(yy, pp),
        "brier": brier(yy, pp),
        "log_loss": log_loss(yy, pp),
        "ece": ece(yy, pp),
        "base_rate": float(yy.mean()) if yy.size else math.nan,
        "rows": float(yy.size),
    }
    if threshold is not None:
        pred = pp >= threshold
        tp = float(np.sum(pred & (yy == 1)))
        flagged = float(pred.sum())
        positives = float(yy.sum())
        out["threshold"] = float(threshold)
        out["precision"] = tp / flagged if flagged else math.nan
        out["recall"] = tp / positives if positives else math.nan
        out["flagged_rate"] = flagged / yy.size if yy.size else math.nan
    return out


def slice_metrics(
    y: npt.ArrayLike, p: npt.ArrayLike, groups: Mapping[str, npt.NDArray[np.bool_]]
) -> dict[str, dict[str, float]]:
    """PR-AUC, Brier, base rate and support for each named row mask."""
    yy, pp = _arrays(y, p)
    out: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        ys, ps = yy[mask], pp[mask]
        out[name] = {
            "pr_auc": average_precision(ys, ps) if ys.size else math.nan,
            "brier": brier(ys, ps),
            "base_rate": float(ys.mean()) if ys.size else math.nan,
            "support": float(ys.size),
        }
    return out


def permutation_importance(
    predict: Callable[[npt.NDArray[np.float32]], FloatArray],
    x: npt.NDArray[np.float32],
    y: npt.ArrayLike,
    features: tuple[str, ...] | list[str],
    *,
    metric_name: str,
    seed: int,
    max_rows: int = 5000,
    repeats: int = 2,
) -> dict[str, float]:
    """Mean drop of ``metric_name`` when each feature is shuffled, on ≤ ``max_rows`` rows.

    The sample and the shuffles come from ``seed``, so the result is reproducible. Positive
    means the feature helps (the sign is oriented for lower-is-better metrics too).
    """
    rng = np.random.default_rng(seed)
    yy = np.asarray(y, dtype=np.float64)
    if x.shape[0] > max_rows:
        keep = np.sort(rng.choice(x.shape[0], size=max_rows, replace=False))
        x, yy = x[keep], yy[keep]
    sign = 1.0 if HIGHER_IS_BETTER[metric_name] else -1.0
    base = metric(metric_name, yy, predict(x))
    work = np.array(x, dtype=np.float32, copy=True, order="C")
    out: dict[str, float] = {}
    for j, name in enumerate(features):
        original = work[:, j].copy()
        drops = []
        for _ in range(repeats):
            work[:, j] = original[rng.permutation(original.shape[0])]
            drops.append(sign * (base - metric(metric_name, yy, predict(work))))
        work[:, j] = original
        out[name] = float(np.nanmean(drops)) if not np.all(np.isnan(drops)) else math.nan
    return out


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None and NumPy scalars/arrays made native."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
