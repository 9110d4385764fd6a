"""The trainer end to end on a small synthetic set: reports, selection, determinism, reuse."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
from train_synth import write_synthetic

from dockline.core.bundle import apply_calibration
from dockline.core.config import TrainConfig
from dockline.core.errors import ConfigError
from dockline.train.candidates import positive_scores
from dockline.train.data import TrainingData, load_training_set
from dockline.train.evaluate import is_better
from dockline.train.report import METRICS_FILE, REPORT_FILE
from dockline.train.trainer import SUMMARY_FILE, TrainOutcome, train_candidates

CONFIG = TrainConfig(n_trials=2, cv_folds=2, seed=7)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    return load_training_set(
        write_synthetic(tmp_path_factory.mktemp("synth"), stations=10, days=3), None
    )


@pytest.fixture(scope="module")
def run(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> TrainOutcome:
    root = tmp_path_factory.mktemp("run")
    return train_candidates(data, CONFIG, storage=str(root / "optuna.db"), out_dir=root / "reports")


def test_every_candidate_and_baseline_is_evaluated_and_reported(run: TrainOutcome) -> None:
    assert list(run.candidates) == list(CONFIG.candidates)
    assert set(run.baselines) == {"persistence", "hour_of_week"}
    for result in [*run.candidates.values(), *run.baselines.values()]:
        for m in (result.test_metrics, result.validation_metrics):
            assert 0 <= m["brier"] <= 1 and not math.isnan(m["pr_auc"])
        report = result.report_dir / REPORT_FILE
        html = report.read_text(encoding="utf-8")
        images = html.count("data:image/png;base64,")
        assert images >= 3
        first = html.split("data:image/png;base64,")[1].split('"')[0]
        assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"
        metrics = json.loads((result.report_dir / METRICS_FILE).read_text())
        assert metrics["test"]["pr_auc"] == pytest.approx(result.test_metrics["pr_auc"])
        # no lat/lon in this set: every family but geography
        assert set(metrics["slices"]["families"]) == {"capacity", "activity", "hour", "day_type"}
        assert ("status" in metrics["slices"]["families"]["hour"][0]) == (
            result.name != "persistence"
        )
        assert metrics["threshold"]["threshold"] == result.threshold.threshold
    summary = json.loads((run.out_dir / SUMMARY_FILE).read_text())
    assert summary["selected"] == run.selected
    assert summary["why_selected"].startswith(f"best validation {CONFIG.primary_metric}")
    assert summary["splits"]["test"]["rows"] == run.splits.test.size


def test_models_learn_and_beat_the_baselines(run: TrainOutcome) -> None:
    best = run.best
    assert best.estimator is not None and best.tuning is not None
    assert best.tuning.n_trials == 2
    for baseline in run.baselines.values():
        assert best.test_metrics["pr_auc"] > baseline.test_metrics["pr_auc"]
    lift = json.loads((best.report_dir / METRICS_FILE).read_text())["lift"]
    assert set(lift) == {"persistence", "hour_of_week"} and min(lift.values()) > 1
    assert best.importance["num_bikes_available__last"] == max(best.importance.values())


def test_selection_uses_validation_not_test(run: TrainOutcome) -> None:
    primary = run.primary_metric
    chosen = run.candidates[run.selected].validation_metrics[primary]
    for name, result in run.candidates.items():
        if name != run.selected:
            assert not is_better(primary, result.validation_metrics[primary], chosen)


def test_outcome_holds_what_export_needs(run: TrainOutcome, data: TrainingData) -> None:
    assert np.array_equal(run.test_X, data.X[run.splits.test.rows], equal_nan=True)
    assert run.test_X.flags.c_contiguous and run.test_X.dtype == np.float32
    best = run.best
    assert best.estimator is not None
    raw = positive_scores(best.estimator, run.test_X)
    assert np.array_equal(raw, best.test_raw)
    probs = apply_calibration(best.calibration, raw)
    pred = probs >= best.threshold.threshold
    tp = float(np.sum(pred & (run.test_y == 1)))
    assert best.test_metrics["precision"] == pytest.approx(tp / pred.sum())


def test_same_seed_same_params_and_predictions(
    run: TrainOutcome, data: TrainingData, tmp_path: Path
) -> None:
    again = train_candidates(
        data, CONFIG, storage=str(tmp_path / "fresh.db"), out_dir=tmp_path / "reports"
    )
    assert again.selected == run.selected
    for name, result in run.candidates.items():
        twin = again.candidates[name]
        assert twin.params == result.params
        assert np.array_equal(twin.test_raw, result.test_raw)
        assert twin.calibration == result.calibration
        assert twin.threshold == result.threshold
        assert twin.test_metrics == result.test_metrics
    for name in run.candidates:
        a = (run.out_dir / name / METRICS_FILE).read_bytes()
        b = (again.out_dir / name / METRICS_FILE).read_bytes()
        assert a == b
        assert (run.out_dir / name / REPORT_FILE).read_bytes() == (
            again.out_dir / name / REPORT_FILE
        ).read_bytes()


def test_a_finished_study_is_reused_not_searched_again(data: TrainingData, tmp_path: Path) -> None:
    config = TrainConfig(n_trials=2, cv_folds=2, seed=1, candidates=("logistic",))
    storage = str(tmp_path / "study.db")
    first = train_candidates(data, config, storage=storage, out_dir=tmp_path / "a")
    second = train_candidates(data, config, storage=storage, out_dir=tmp_path / "b")
    t1, t2 = first.best.tuning, second.best.tuning
    assert t1 is not None and t2 is not None
    assert t1.study_name == t2.study_name and t2.n_trials == 2
    assert first.best.params == second.best.params


def test_defaults_only_and_bad_candidates(data: TrainingData, tmp_path: Path) -> None:
    config = TrainConfig(n_trials=0, candidates=("lightgbm",))
    out = train_candidates(data, config, storage=str(tmp_path / "s.db"), out_dir=tmp_path / "r")
    assert out.best.params["n_estimators"] == 200 and out.best.tuning is not None
    assert out.best.tuning.study_name is None
    with pytest.raises(ConfigError, match="candidate"):
        train_candidates(
            data,
            TrainConfig(candidates=("svm",)),
            storage=str(tmp_path / "s.db"),
            out_dir=tmp_path / "r",
        )
