"""Metrics on known inputs and against scikit-learn's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from dockline.train.evaluate import (
    average_precision,
    classification_metrics,
    ece,
    lift,
    permutation_importance,
    reliability,
    roc_auc,
    slice_metrics,
)


def test_a_perfect_model() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    m = classification_metrics(y, y.astype(float), threshold=0.5)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["brier"] == 0.0 and m["ece"] == 0.0
    assert m["log_loss"] < 1e-12
    assert m["precision"] == 1.0 and m["recall"] == 1.0


def test_metrics_match_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    p = np.round(np.clip(0.3 * y + rng.random(3000) * 0.7, 0, 1), 2)  # many ties
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    m = classification_metrics(y, p, threshold=0.5)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    pred = p >= 0.5
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))


def test_ece_on_known_bins() -> None:
    # Bin [0.2, 0.267): predicted 0.25, observed 0.5 → gap 0.25 on half the rows; other bin exact.
    y = np.array([0, 1, 1, 1])
    p = np.array([0.25, 0.25, 1.0, 1.0])
    assert ece(y, p) == pytest.approx(0.5 * 0.25)
    r = reliability(y, p)
    assert r.counts.sum() == 4 and r.edges.size == 16


def test_undefined_metrics_are_nan_and_lift_is_oriented() -> None:
    m = classification_metrics(np.zeros(5), np.full(5, 0.1))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert lift("pr_auc", 0.6, 0.3) == pytest.approx(2.0)
    assert lift("brier", 0.05, 0.1) == pytest.approx(2.0)  # lower Brier → lift > 1
    s = slice_metrics([0, 1, 1], [0.1, 0.9, 0.8], {"all": np.array([True] * 3)})
    assert s["all"]["support"] == 3 and s["all"]["pr_auc"] == 1.0


def test_permutation_importance_finds_the_signal_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype(np.float32)
    y = (x[:, 1] > 0).astype(int)

    def predict(m: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-4 * m[:, 1].astype(np.float64)))

    imp = permutation_importance(predict, x, y, ["a", "b", "c"], metric_name="pr_auc", seed=3)
    assert imp["b"] > 0.3 and abs(imp["a"]) < 1e-12 and abs(imp["c"]) < 1e-12
    again = permutation_importance(predict, x, y, ["a", "b", "c"], metric_name="pr_auc", seed=3)
    assert imp == again
