"""Calibration (isotonic or Platt, chosen by Brier) and the decision threshold by policy.

Both fit on the calibration split. The calibration is returned as core :class:`Calibration`
and evaluated only through :func:`dockline.core.bundle.apply_calibration`, the function serving
uses, so training and serving cannot disagree about what a probability is.

Choosing by in-sample Brier would always pick isotonic (it minimises squared error over every
monotone map, Platt's included), so the choice uses two-fold cross-fitting over the time-ordered
calibration rows (fit on one half, score the other, both ways); the chosen method is then refit
on the whole split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dockline.core.bundle import Calibration, ThresholdChoice, apply_calibration
from dockline.core.config import TrainConfig
from dockline.core.errors import ConfigError
from dockline.train.evaluate import brier, pr_curve

__all__ = [
    "CalibrationFit",
    "ThresholdCurve",
    "ThresholdResult",
    "calibrate",
    "choose_threshold",
    "fit_calibration",
    "fit_isotonic",
    "fit_platt",
]

FloatArray = npt.NDArray[np.float64]
_EPS = 1e-12


def calibrate(calibration: Calibration, scores: npt.ArrayLike) -> FloatArray:
    """:func:`dockline.core.bundle.apply_calibration`, without its harmless overflow warning.

    For a score near 0 or 1 Platt's ``exp`` overflows to inf and the probability is exactly
    0 or 1, which is right; NumPy still warns, and warnings are errors in the tests.
    """
    with np.errstate(over="ignore"):
        return apply_calibration(calibration, scores)


def _logit(scores: FloatArray) -> FloatArray:
    # The exact transform apply_calibration uses, so the fitted (a, b) mean the same thing.
    s = np.clip(scores, _EPS, 1.0 - _EPS)
    out: FloatArray = np.log(s) - np.log1p(-s)
    return out


def fit_isotonic(scores: npt.ArrayLike, y: npt.ArrayLike) -> Calibration:
    """Isotonic regression of ``y`` on the raw score, as clipped piecewise-linear points."""
    from sklearn.isotonic import IsotonicRegression

    s = np.asarray(scores, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, yy)
    x_pts = np.asarray(iso.X_thresholds_, dtype=np.float64)
    y_pts = np.asarray(iso.y_thresholds_, dtype=np.float64)
    cal = Calibration(method="isotonic", x=x_pts.tolist(), y=y_pts.tolist())
    return cal.model_copy(update={"brier": brier(yy, calibrate(cal, s))})


def fit_platt(
    scores: npt.ArrayLike, y: npt.ArrayLike, *, ridge: float = 1e-6, max_iter: int = 100
) -> Calibration:
    """Platt scaling: logistic regression of ``y`` on ``logit(score)``, by Newton's method.

    A tiny ridge keeps the fit finite when the score separates the classes perfectly.
    """
    s = np.asarray(scores, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    z = _logit(s)
    design = np.column_stack([z, np.ones_like(z)])
    rate = float(np.clip(yy.mean(), 1e-6, 1 - 1e-6)) if yy.size else 0.5
    w = np.array([1.0, math.log(rate / (1 - rate)) - float(z.mean())])  # start near identity
    for _ in range(max_iter):
        eta = np.clip(design @ w, -35.0, 35.0)
        p = 1.0 / (1.0 + np.exp(-eta))
        grad = design.T @ (p - yy) + ridge * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    cal = Calibration(method="platt", a=float(w[0]), b=float(w[1]))
    return cal.model_copy(update={"brier": brier(yy, calibrate(cal, s))})


@dataclass(frozen=True, slots=True)
class CalibrationFit:
    """The chosen calibration and the cross-fitted Brier score of each method."""

    calibration: Calibration
    cv_brier: dict[str, float]
    raw_brier: float


def _cross_brier(method: str, s: FloatArray, y: FloatArray) -> float:
    fit = fit_isotonic if method == "isotonic" else fit_platt
    half = s.size // 2
    parts = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
    errors = []
    for fit_part, eval_part in parts:
        cal = fit(s[fit_part], y[fit_part])
        errors.append(np.sum((calibrate(cal, s[eval_part]) - y[eval_part]) ** 2))
    return float(np.sum(errors) / s.size)


def fit_calibration(scores: npt.ArrayLike, y: npt.ArrayLike) -> CalibrationFit:
    """Fit isotonic and Platt on the calibration split and keep the one with lower Brier.

    ``scores`` and ``y`` must be in time order (the split's row order). The comparison is
    cross-fitted (see the module docstring); ties go to Platt, the smoother map.
    """
    s = np.asarray(scores, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if s.size < 4:
        raise ConfigError(
            f"the calibration split needs at least 4 rows; got {s.size}", where="train.split"
        )
    cv = {m: _cross_brier(m, s, yy) for m in ("isotonic", "platt")}
    method = "isotonic" if cv["isotonic"] < cv["platt"] else "platt"
    chosen = fit_isotonic(s, yy) if method == "isotonic" else fit_platt(s, yy)
    return CalibrationFit(calibration=chosen, cv_brier=cv, raw_brier=brier(yy, s))


@dataclass(frozen=True, slots=True)
class ThresholdCurve:
    """The operating points a threshold was chosen from (thresholds descending)."""

    thresholds: FloatArray
    precision: FloatArray
    recall: FloatArray
    cost: FloatArray | None = None
    """Expected cost per threshold (``expected_cost`` policy only)."""

    def downsample(self, points: int = 200) -> dict[str, list[float]]:
        """At most ``points`` evenly spaced operating points, JSON-able, for reports."""
        n = self.thresholds.size
        idx: npt.NDArray[np.int64] | list[int] = (
            np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int)) if n else []
        )
        out = {
            "thresholds": self.thresholds[idx].tolist(),
            "precision": self.precision[idx].tolist(),
            "recall": self.recall[idx].tolist(),
        }
        if self.cost is not None:
            out["cost"] = self.cost[idx].tolist()
        return out


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """The chosen threshold and the curve it came from."""

    choice: ThresholdChoice
    curve: ThresholdCurve


def choose_threshold(
    probabilities: npt.ArrayLike, y: npt.ArrayLike, config: TrainConfig
) -> ThresholdResult:
    """Pick the decision threshold (``p >= t``) on calibrated probabilities by the policy.

    ``target_precision``: the lowest threshold whose precision is ≥ the target, i.e. the most
    recall; if none reaches it, ``achieved=False`` and the threshold of best precision (most
    recall among ties). ``expected_cost``: minimum ``cost_false_alarm·FP + cost_miss·FN``,
    including "never alert" (a threshold just above every probability).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if p.size == 0:
        raise ConfigError("cannot choose a threshold on an empty split", where="train.split")
    precision, recall, thresholds = pr_curve(yy, p)
    if config.threshold_policy == "target_precision":
        target = config.target_precision
        ok = np.flatnonzero(precision >= target - 1e-12)
        achieved = ok.size > 0
        if achieved:
            i = int(ok[-1])  # thresholds descend, so the last qualifying one has most recall
        else:
            best = float(precision.max())
            i = int(np.flatnonzero(precision == best)[-1])
        choice = ThresholdChoice(
            policy="target_precision",
            threshold=float(thresholds[i]),
            target_precision=target,
            precision=float(precision[i]),
            recall=float(recall[i]),
            achieved=achieved,
        )
        return ThresholdResult(choice, ThresholdCurve(thresholds, precision, recall))

    positives = float(yy.sum())
    # Counts per operating point: rows flagged at p >= t, of which recall·positives are hits.
    flagged = np.searchsorted(np.sort(-p), -thresholds, side="right").astype(np.float64)
    tp = np.round(recall * positives)
    fp = flagged - tp
    never = np.nextafter(float(p.max()), 2.0)
    all_thresholds = np.r_[never, thresholds]
    all_precision = np.r_[1.0, precision]
    all_recall = np.r_[0.0, recall]
    cost = np.r_[
        config.cost_miss * positives,
        config.cost_false_alarm * fp + config.cost_miss * (positives - tp),
    ]
    i = int(np.argmin(cost))  # first minimum: the highest threshold among equal costs
    choice = ThresholdChoice(
        policy="expected_cost",
        threshold=float(all_thresholds[i]),
        cost_false_alarm=config.cost_false_alarm,
        cost_miss=config.cost_miss,
        precision=float(all_precision[i]),
        recall=float(all_recall[i]),
    )
    curve = ThresholdCurve(all_thresholds, all_precision, all_recall, cost)
    return ThresholdResult(choice, curve)
