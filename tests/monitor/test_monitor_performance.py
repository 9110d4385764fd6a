"""Live performance against scikit-learn, bootstrap intervals, and the CBPE-style estimate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, precision_score, recall_score

from dockline.monitor.performance import live_performance

HOUR = 3_600_000_000


def sample(n: int, seed: int, *, calibrated: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(1.5, 6.0, n), 3)  # rounded: ties, as real probabilities have
    truth = p if calibrated else np.clip(p * 2.0, 0, 1)
    y = (rng.random(n) < truth).astype(np.float64)
    return p, y


def test_realized_metrics_match_scikit_learn() -> None:
    p, y = sample(5000, 0)
    (w,) = live_performance(np.ones(p.size), np.zeros(p.size), p, y, threshold=0.3)
    flagged = p >= 0.3
    assert w.predictions == w.labelled == 5000 and w.positives == int(y.sum())
    assert w.flagged == int(flagged.sum())
    m = {k: v.value for k, v in w.metrics.items()}
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-6)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-6)
    assert m["precision"] == pytest.approx(precision_score(y, flagged), abs=1e-6)
    assert m["recall"] == pytest.approx(recall_score(y, flagged), abs=1e-6)
    for name, v in w.metrics.items():
        assert v.low is not None and v.high is not None and v.value is not None
        # ECE is biased upward (resampling noise adds to |gap|): its interval may sit above a
        # small point value; the others bracket theirs.
        assert v.low <= v.high and (name == "ece" or v.low <= v.value <= v.high)


def test_intervals_narrow_with_more_rows() -> None:
    small_p, small_y = sample(500, 1)
    big_p, big_y = sample(20_000, 1)
    (small,) = live_performance(np.ones(500), np.zeros(500), small_p, small_y, threshold=0.3)
    (big,) = live_performance(np.ones(20_000), np.zeros(20_000), big_p, big_y, threshold=0.3)
    width = {k: (v.high or 0) - (v.low or 0) for k, v in small.metrics.items()}
    assert all((big.metrics[k].high or 0) - (big.metrics[k].low or 0) < width[k] for k in width)


def test_estimate_tracks_a_calibrated_model_and_misses_a_miscalibrated_one() -> None:
    p, y = sample(20_000, 2)
    (w,) = live_performance(np.ones(p.size), np.zeros(p.size), p, y, threshold=0.3)
    assert all(abs(e or 0) < 0.03 for e in w.estimate_error.values())
    p, y = sample(20_000, 3, calibrated=False)  # twice as many positives as p says
    (w,) = live_performance(np.ones(p.size), np.zeros(p.size), p, y, threshold=0.3)
    assert (w.estimate_error["precision"] or 0) < -0.1
    assert w.metrics["ece"].value is not None and w.metrics["ece"].value > 0.05


def test_unlabelled_rows_get_an_estimate_only_and_groups_split() -> None:
    p, y = sample(3000, 4)
    y[1000:] = np.nan  # labels not yet available
    versions = np.where(np.arange(3000) < 2000, 3, 4)
    windows = np.where(np.arange(3000) % 2 == 0, 0, HOUR)
    out = live_performance(versions, windows, p, y, threshold=0.3)
    assert [(w.model_version, w.window_start_us) for w in out] == [
        (3, 0),
        (3, HOUR),
        (4, 0),
        (4, HOUR),
    ]
    v4 = out[2]
    assert v4.labelled == 0 and v4.metrics == {} and v4.estimate["precision"] is not None
    assert out[0].labelled == 500 and out[0].predictions == 1000
