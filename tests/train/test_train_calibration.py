"""Calibration agrees with core.apply_calibration; threshold policies on crafted curves."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from dockline.core.bundle import apply_calibration
from dockline.core.config import TrainConfig
from dockline.train.calibration import (
    choose_threshold,
    fit_calibration,
    fit_isotonic,
    fit_platt,
)


def _scores(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    y = (rng.random(n) < s**2).astype(int)  # over-confident raw scores
    return s, y


def test_isotonic_equals_scikit_learn_through_core() -> None:
    s, y = _scores()
    cal = fit_isotonic(s, y)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
    probe = np.r_[-0.5, np.linspace(0, 1, 501), 1.5]
    np.testing.assert_allclose(apply_calibration(cal, probe), iso.predict(probe), atol=1e-12)
    assert cal.brier == pytest.approx(np.mean((iso.predict(s) - y) ** 2))


def test_platt_equals_a_logistic_fit_on_the_logit_through_core() -> None:
    s, y = _scores(seed=1)
    cal = fit_platt(s, y)
    z = np.log(s) - np.log1p(-s)
    ref = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(z[:, None], y)
    assert cal.a == pytest.approx(ref.coef_[0, 0], rel=1e-4)
    assert cal.b == pytest.approx(ref.intercept_[0], abs=1e-4)
    probe = np.linspace(0.01, 0.99, 99)
    zp = np.log(probe) - np.log1p(-probe)
    np.testing.assert_allclose(
        apply_calibration(cal, probe), ref.predict_proba(zp[:, None])[:, 1], atol=1e-5
    )


def test_the_choice_is_by_cross_fitted_brier() -> None:
    s, y = _scores(seed=2)
    fit = fit_calibration(s, y)
    assert set(fit.cv_brier) == {"isotonic", "platt"}
    best = min(fit.cv_brier, key=lambda m: (fit.cv_brier[m], m != "platt"))
    assert fit.calibration.method == best
    p = apply_calibration(fit.calibration, s)
    assert np.mean((p - y) ** 2) < fit.raw_brier  # calibration helps over-confident scores
    # A score already calibrated as a logistic in the logit: Platt must win.
    rng = np.random.default_rng(3)
    s2 = rng.random(3000)
    y2 = (rng.random(3000) < s2).astype(int)
    assert fit_calibration(s2, y2).calibration.method == "platt"


def test_target_precision_takes_most_recall_above_the_target() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    # p>=0.6 → precision 3/4, recall 3/4; p>=0.3 → 4/7; p>=0.8 → 1.0, recall 1/2
    r = choose_threshold(p, y, TrainConfig(target_precision=0.75))
    assert r.choice.threshold == 0.6 and r.choice.achieved
    assert r.choice.precision == 0.75 and r.choice.recall == 0.75
    assert r.curve.thresholds.tolist() == sorted(p.tolist(), reverse=True)
    r = choose_threshold(p, y, TrainConfig(target_precision=0.55))
    assert r.choice.threshold == 0.3 and r.choice.recall == 1.0


def test_unreachable_target_reports_best_precision_not_achieved() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6])
    y = np.array([0, 1, 0, 1])
    r = choose_threshold(p, y, TrainConfig(target_precision=0.9))
    assert not r.choice.achieved
    assert (
        r.choice.precision == 0.5 and r.choice.threshold == 0.6
    )  # 0.5 at 0.8 and 0.6: more recall


def test_expected_cost_minimises_false_alarms_and_misses() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 0])
    # t=0.9: FP0 FN1; t=0.7: FP1 FN0; never: FN2.
    cheap_alarms = TrainConfig(threshold_policy="expected_cost", cost_false_alarm=1, cost_miss=5)
    r = choose_threshold(p, y, cheap_alarms)
    assert r.choice.threshold == 0.7 and r.choice.policy == "expected_cost"
    assert r.curve.cost is not None and r.curve.cost.min() == 1.0
    dear_alarms = TrainConfig(threshold_policy="expected_cost", cost_false_alarm=10, cost_miss=1)
    top_is_wrong = np.array([0, 1, 0, 1, 0])
    r = choose_threshold(p, top_is_wrong, dear_alarms)
    assert r.choice.threshold > 0.9 and r.choice.recall == 0.0  # never alert: cost 2 < 10
    mid = TrainConfig(threshold_policy="expected_cost", cost_false_alarm=3, cost_miss=2)
    assert choose_threshold(p, y, mid).choice.threshold == 0.9
