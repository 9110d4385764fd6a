"""The training stage's entry point: splits → tuning → fit → calibrate → threshold → evaluate.

:func:`train_candidates` runs every configured trained candidate and both baselines through the
same steps and returns a :class:`TrainOutcome`; the pipeline above it exports, registers and
gates. Decisions, in one place:

* Final models are fitted on the **train split only** (not train + validation): the
  validation split must stay unseen so that selecting the best candidate on it is honest.
  Tuning uses rolling-origin folds inside the train split.
* Every candidate, baselines included, is calibrated on the calibration split and thresholded
  on its calibrated probabilities there; all metrics are of calibrated probabilities.
* The selected candidate is the best **trained** candidate by the primary metric on the
  validation split (ties: the earlier in ``TrainConfig.candidates``). The test split is only
  reported, never used to choose.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dockline.core.bundle import Calibration, ThresholdChoice
from dockline.core.config import TrainConfig
from dockline.core.errors import ConfigError
from dockline.train.calibration import (
    CalibrationFit,
    ThresholdCurve,
    ThresholdResult,
    calibrate,
    choose_threshold,
    fit_calibration,
)
from dockline.train.candidates import (
    BASELINES,
    Baseline,
    ProbabilisticEstimator,
    TrainedCandidate,
    fit_candidate,
    get_baseline,
    get_candidate,
    positive_scores,
)
from dockline.train.composition import split_composition
from dockline.train.data import TrainingData
from dockline.train.evaluate import (
    HIGHER_IS_BETTER,
    classification_metrics,
    is_better,
    json_safe,
    lift,
    permutation_importance,
    pr_curve,
    reliability,
)
from dockline.train.report import ReportData, write_report
from dockline.train.slices import PERSISTENCE, Masks, compare_slices, slice_masks
from dockline.train.splits import Fold, Splits, make_splits, rolling_origin_folds
from dockline.train.tuning import TuningResult, config_hash, study_name, tune

__all__ = ["SUMMARY_FILE", "CandidateResult", "TrainOutcome", "train_candidates"]

SUMMARY_FILE = "summary.json"
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class CandidateResult:
    """One candidate's fitted model, calibration, threshold and metrics."""

    name: str
    kind: str
    """``trained`` or ``baseline``."""
    params: dict[str, Any]
    estimator: ProbabilisticEstimator | None
    """The fitted scikit-learn-API model (trained candidates); None for baselines."""
    baseline: Baseline | None
    calibration: Calibration
    threshold: ThresholdChoice
    threshold_curve: ThresholdCurve
    validation_metrics: dict[str, float]
    test_metrics: dict[str, float]
    report_dir: Path
    test_raw: FloatArray
    """Uncalibrated scores on the test split (what ONNX must reproduce)."""
    tuning: TuningResult | None = None
    importance: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    """Wall time of tuning, fitting, scoring and calibrating (not the report)."""
    report: ReportData | None = None
    """What its report shows (the pipeline re-renders it once the gate and version are known)."""
    test_p: FloatArray | None = None
    """Calibrated probabilities on the test split (what the metrics and slices are of)."""


@dataclass(frozen=True, slots=True, eq=False)
class TrainOutcome:
    """Everything a training run produced, for export, registry and gate."""

    label: str
    features: tuple[str, ...]
    primary_metric: str
    candidates: dict[str, CandidateResult]
    """Trained candidates, in config order."""
    baselines: dict[str, CandidateResult]
    selected: str
    splits: Splits
    dataset_hash: str
    config_hash: str
    seed: int
    test_X: npt.NDArray[np.float32]
    test_y: npt.NDArray[np.int8]
    train_X: npt.NDArray[np.float32]
    """The train split's matrix, for the drift baseline."""
    out_dir: Path
    composition: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per split: rows, stations, label rate, weekend share, flags."""
    slice_masks: Masks = field(default_factory=dict)
    """Test-split row masks per slice family (see :mod:`dockline.train.slices`)."""
    test_station_ids: npt.NDArray[np.str_] | None = None

    @property
    def best(self) -> CandidateResult:
        """The selected trained candidate."""
        return self.candidates[self.selected]

    def why_selected(self) -> str:
        """One sentence: the validation metric the selection used and every candidate's value."""
        primary = self.primary_metric
        order = "higher" if HIGHER_IS_BETTER[primary] else "lower"
        ranked = sorted(
            self.candidates.values(),
            key=lambda r: r.validation_metrics[primary],
            reverse=HIGHER_IS_BETTER[primary],
        )
        values = ", ".join(f"{r.name} {r.validation_metrics[primary]:.4f}" for r in ranked)
        return (
            f"best validation {primary} ({order} is better) among the trained candidates: {values};"
            " the test split is only reported, never used to choose"
        )

    def baseline_test_metrics(self) -> dict[str, dict[str, float]]:
        """Test metrics of each baseline by name."""
        return {name: r.test_metrics for name, r in self.baselines.items()}


@dataclass(frozen=True, slots=True, eq=False)
class _Fitted:
    """A fitted candidate's raw scores on the three held-out splits."""

    name: str
    kind: str
    params: dict[str, Any]
    estimator: ProbabilisticEstimator | None
    baseline: Baseline | None
    validation: FloatArray
    calibration: FloatArray
    test: FloatArray
    tuning: TuningResult | None
    importance: dict[str, float]
    seconds: float


@dataclass(frozen=True, slots=True, eq=False)
class _Evaluated:
    fitted: _Fitted
    calibration: CalibrationFit
    threshold: ThresholdResult
    validation_metrics: dict[str, float]
    test_metrics: dict[str, float]
    p_test: FloatArray
    seconds: float


def _evaluate(
    fitted: _Fitted, data: TrainingData, splits: Splits, config: TrainConfig
) -> _Evaluated:
    start = time.perf_counter()
    y = data.y
    cal_fit = fit_calibration(fitted.calibration, y[splits.calibration.rows])
    p_cal = calibrate(cal_fit.calibration, fitted.calibration)
    threshold = choose_threshold(p_cal, y[splits.calibration.rows], config)
    t = threshold.choice.threshold
    p_val = calibrate(cal_fit.calibration, fitted.validation)
    p_test = calibrate(cal_fit.calibration, fitted.test)
    return _Evaluated(
        fitted=fitted,
        calibration=cal_fit,
        threshold=threshold,
        validation_metrics=classification_metrics(y[splits.validation.rows], p_val, t),
        test_metrics=classification_metrics(y[splits.test.rows], p_test, t),
        p_test=p_test,
        seconds=fitted.seconds + time.perf_counter() - start,
    )


def _fit_baseline(name: str, data: TrainingData, splits: Splits) -> _Fitted:
    start = time.perf_counter()
    baseline = get_baseline(name).fit(data, splits.train.rows)
    return _Fitted(
        name=name,
        kind="baseline",
        params={},
        estimator=None,
        baseline=baseline,
        validation=baseline.predict(data, splits.validation.rows),
        calibration=baseline.predict(data, splits.calibration.rows),
        test=baseline.predict(data, splits.test.rows),
        tuning=None,
        importance={},
        seconds=time.perf_counter() - start,
    )


def _fit_trained(
    spec: TrainedCandidate,
    data: TrainingData,
    splits: Splits,
    folds: list[Fold],
    config: TrainConfig,
    *,
    storage: str,
    name: str,
    progress: bool,
) -> _Fitted:
    start = time.perf_counter()
    tuning = tune(spec, data, folds, config, storage=storage, name=name, progress=progress)
    model = spec.make(tuning.params, config.seed)
    fit_candidate(model, data.X[splits.train.rows], data.y[splits.train.rows])
    x_test = data.X[splits.test.rows]

    def predict(x: npt.NDArray[np.float32]) -> FloatArray:
        return positive_scores(model, x)

    test = predict(x_test)
    importance = permutation_importance(
        predict,
        x_test,
        data.y[splits.test.rows],
        data.features,
        metric_name=config.primary_metric,
        seed=config.seed,
    )
    return _Fitted(
        name=spec.name,
        kind="trained",
        params=tuning.params,
        estimator=model,
        baseline=None,
        validation=predict(data.X[splits.validation.rows]),
        calibration=predict(data.X[splits.calibration.rows]),
        test=test,
        tuning=tuning,
        importance=importance,
        seconds=time.perf_counter() - start,
    )


def _report(
    ev: _Evaluated,
    others: dict[str, _Evaluated],
    data: TrainingData,
    splits: Splits,
    config: TrainConfig,
    masks: Masks,
    out_dir: Path,
    hashes: tuple[str, str],
    composition: dict[str, dict[str, Any]],
) -> ReportData:
    primary = config.primary_metric
    y_test = data.y[splits.test.rows]
    fitted = ev.fitted
    lifts = {
        b: lift(primary, ev.test_metrics[primary], others[b].test_metrics[primary])
        for b in BASELINES
        if b != fitted.name
    }
    precision, recall, _ = pr_curve(y_test, ev.p_test)
    tuning_info: dict[str, Any] = {}
    if fitted.tuning is not None:
        tuning_info = {
            "study_name": fitted.tuning.study_name,
            "cv_score": fitted.tuning.cv_score,
            "n_trials": fitted.tuning.n_trials,
            "n_pruned": fitted.tuning.n_pruned,
        }
    cal_json = ev.calibration.calibration.model_dump(mode="json")
    cal_json["cv_brier"] = ev.calibration.cv_brier
    cal_json["raw_brier"] = ev.calibration.raw_brier
    pr_baselines = {}
    for b in BASELINES:
        if b != fitted.name:
            b_precision, b_recall, _ = pr_curve(y_test, others[b].p_test)
            pr_baselines[b] = (b_precision, b_recall)
    report = ReportData(
        candidate=fitted.name,
        kind=fitted.kind,
        label=data.label,
        primary_metric=primary,
        params=fitted.params,
        test=ev.test_metrics,
        validation=ev.validation_metrics,
        calibration=cal_json,
        threshold=ev.threshold.choice.model_dump(mode="json"),
        threshold_curve=ev.threshold.curve.downsample(),
        lift=lifts,
        slices=compare_slices(
            y_test,
            data.station_ids[splits.test.rows],
            masks,
            {fitted.name: ev.p_test}
            | ({} if fitted.name == PERSISTENCE else {PERSISTENCE: others[PERSISTENCE].p_test}),
            candidate=fitted.name,
            # a baseline is never gated: its slices are judged on the point estimate alone,
            # sparing the bootstrap (hour_of_week trails persistence nearly everywhere)
            config=config.slices
            if fitted.kind == "trained"
            else config.slices.model_copy(update={"bootstrap": 0}),
            seed=config.seed,
        ),
        reliability=reliability(y_test, ev.p_test),
        pr=(precision, recall),
        importance=fitted.importance,
        splits=composition,
        extra={"tuning": tuning_info, "dataset_hash": hashes[0], "config_hash": hashes[1]},
        pr_baselines=pr_baselines,
        base_rate=float(y_test.mean()) if y_test.size else None,
    )
    write_report(out_dir / fitted.name, report)
    return report


def train_candidates(
    data: TrainingData,
    config: TrainConfig,
    *,
    storage: str,
    out_dir: Path,
    progress: bool = False,
) -> TrainOutcome:
    """Train, calibrate, threshold and evaluate every candidate and baseline; pick the best.

    ``storage`` is the Optuna storage (SQLite file path or RDB URL). One report directory per
    candidate is written under ``out_dir/<name>/`` and a ``summary.json`` in ``out_dir``.
    Deterministic for a given dataset, config and seed.

    >>> data = load_training_set(Path("datasets/demo-empty_next_hour"), None)  # doctest: +SKIP
    >>> outcome = train_candidates(data, TrainConfig(), storage="optuna.db",
    ...                            out_dir=Path("reports"))  # doctest: +SKIP
    >>> outcome.selected, outcome.best.test_metrics["pr_auc"]  # doctest: +SKIP
    ('lightgbm', 0.97)
    """
    if not config.candidates:
        raise ConfigError("at least one trained candidate is needed", where="train.candidates")
    specs = [get_candidate(n) for n in config.candidates]
    splits = make_splits(data.as_of_us, data.label_available_us, config, data.horizon_us)
    for split in splits:
        if split.name != "test" and np.unique(data.y[split.rows]).size < 2:
            raise ConfigError(
                f"the {split.name} split has a single class; the label is too rare or the data"
                " too short",
                where="train.split",
            )
    folds = rolling_origin_folds(
        data.as_of_us,
        data.label_available_us,
        splits.train.rows,
        config.cv_folds,
        splits.embargo_us,
    )
    d_hash = data.metadata.content_hash or data.metadata.dataset_version
    c_hash = config_hash(config)
    out_dir.mkdir(parents=True, exist_ok=True)

    fitted = [_fit_baseline(name, data, splits) for name in BASELINES]
    fitted += [
        _fit_trained(
            spec,
            data,
            splits,
            folds,
            config,
            storage=storage,
            name=study_name(spec.name, d_hash, c_hash),
            progress=progress,
        )
        for spec in specs
    ]
    evaluated = {f.name: _evaluate(f, data, splits, config) for f in fitted}
    masks = slice_masks(data, splits.test.rows, splits.train.rows, config.slices)
    composition = split_composition(data, splits)
    results: dict[str, CandidateResult] = {}
    for name, ev in evaluated.items():
        report = _report(
            ev, evaluated, data, splits, config, masks, out_dir, (d_hash, c_hash), composition
        )
        results[name] = CandidateResult(
            name=name,
            kind=ev.fitted.kind,
            params=ev.fitted.params,
            estimator=ev.fitted.estimator,
            baseline=ev.fitted.baseline,
            calibration=ev.calibration.calibration,
            threshold=ev.threshold.choice,
            threshold_curve=ev.threshold.curve,
            validation_metrics=ev.validation_metrics,
            test_metrics=ev.test_metrics,
            report_dir=out_dir / name,
            test_raw=ev.fitted.test,
            tuning=ev.fitted.tuning,
            importance=ev.fitted.importance,
            seconds=ev.seconds,
            report=report,
            test_p=ev.p_test,
        )

    primary = config.primary_metric
    trained = {s.name: results[s.name] for s in specs}
    selected = specs[0].name
    for name, result in trained.items():
        value = result.validation_metrics[primary]
        if is_better(primary, value, trained[selected].validation_metrics[primary]):
            selected = name
    baselines = {b: results[b] for b in BASELINES}
    outcome = TrainOutcome(
        label=data.label,
        features=data.features,
        primary_metric=primary,
        candidates=trained,
        baselines=baselines,
        selected=selected,
        splits=splits,
        dataset_hash=d_hash,
        config_hash=c_hash,
        seed=config.seed,
        test_X=np.ascontiguousarray(data.X[splits.test.rows]),
        test_y=data.y[splits.test.rows],
        train_X=np.ascontiguousarray(data.X[splits.train.rows]),
        out_dir=out_dir,
        composition=composition,
        slice_masks=masks,
        test_station_ids=data.station_ids[splits.test.rows],
    )
    _write_summary(outcome, data, config, (d_hash, c_hash))
    return outcome


def _write_summary(
    outcome: TrainOutcome, data: TrainingData, config: TrainConfig, hashes: tuple[str, str]
) -> None:
    def row(r: CandidateResult) -> dict[str, Any]:
        return {
            "kind": r.kind,
            "validation": r.validation_metrics,
            "test": r.test_metrics,
            "calibration": r.calibration.method,
            "threshold": r.threshold.threshold,
            "report": r.report_dir.name,
        }

    summary = {
        "label": data.label,
        "primary_metric": config.primary_metric,
        "selected": outcome.selected,
        "selected_by": "validation",
        "why_selected": outcome.why_selected(),
        "dataset_hash": hashes[0],
        "config_hash": hashes[1],
        "seed": config.seed,
        "splits": outcome.composition,
        "embargo_us": outcome.splits.embargo_us,
        "unlabeled_rows": data.unlabeled_rows,
        "candidates": {n: row(r) for n, r in {**outcome.candidates, **outcome.baselines}.items()},
    }
    text = json.dumps(json_safe(summary), sort_keys=True, indent=2, allow_nan=False) + "\n"
    (outcome.out_dir / SUMMARY_FILE).write_text(text, encoding="utf-8")
