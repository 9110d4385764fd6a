"""Candidates: the two baselines every model must beat, and the trained models, by name.

Trained candidates are plain scikit-learn-API estimators over the float32 feature matrix (NaN
for missing), limited to types skl2onnx / onnxmltools convert: a ``Pipeline`` of
``SimpleImputer`` / ``StandardScaler`` / ``LogisticRegression`` / ``ExtraTreesClassifier``, or a
bare ``LGBMClassifier``. Each has default parameters and an Optuna search space.

Baselines need the station id, which is not a model input, so they take the
:class:`TrainingData` and row indices instead of a matrix; they output probabilities (training
rates), not 0/1, so every metric applies to them as to the models.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from dockline.core.errors import ConfigError
from dockline.train.data import TrainingData

if TYPE_CHECKING:
    import optuna

__all__ = [
    "BASELINES",
    "TRAINED",
    "Baseline",
    "HourOfWeekBaseline",
    "PersistenceBaseline",
    "ProbabilisticEstimator",
    "TrainedCandidate",
    "fit_candidate",
    "get_baseline",
    "get_candidate",
    "positive_scores",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Params = dict[str, Any]

LGBM_THREADS = 2
"""Fixed so results do not depend on the machine's core count."""
FIT_THREADS = 2
"""Threads a forest builds its trees on (:func:`fit_candidate`)."""

# OpenMP threads that spin while waiting make LightGBM 5-20x slower whenever the cores are
# shared (other processes, parallel tests); passive waiting costs nothing measurable when they
# are not. Read once when the OpenMP runtime loads, so it is set before LightGBM is imported;
# an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class ProbabilisticEstimator(Protocol):
    """The scikit-learn classifier surface the trainer uses."""

    def fit(self, X: Any, y: Any) -> Any: ...

    def predict_proba(self, X: Any) -> Any: ...


def positive_scores(estimator: ProbabilisticEstimator, x: npt.NDArray[np.float32]) -> FloatArray:
    """The positive-class probability of ``estimator`` for each row of ``x``, as float64."""
    proba = np.asarray(estimator.predict_proba(x), dtype=np.float64)
    return np.ascontiguousarray(proba[:, 1])


@dataclass(frozen=True, slots=True)
class TrainedCandidate:
    """A trainable model family: how to build it, its defaults and its search space."""

    name: str
    build: Callable[[Params, int], ProbabilisticEstimator]
    defaults: Params
    space: Callable[[optuna.Trial], Params]

    def make(self, params: Mapping[str, Any] | None, seed: int) -> ProbabilisticEstimator:
        """A fresh, unfitted estimator with ``params`` over the defaults."""
        merged = {**self.defaults, **(params or {})}
        return self.build(merged, seed)


def fit_candidate(model: ProbabilisticEstimator, X: Any, y: Any) -> ProbabilisticEstimator:
    """Fit ``model``, a forest building its trees on :data:`FIT_THREADS` threads.

    The trees are the same as on one thread (each tree's seed is drawn before the work is
    split, and joblib returns them in order), so the fitted model and its bundle are too.
    """
    from joblib import parallel_config

    with parallel_config(backend="threading", n_jobs=FIT_THREADS):
        model.fit(X, y)
    return model


# -- logistic regression -------------------------------------------------------------------


def _build_logistic(params: Params, seed: int) -> ProbabilisticEstimator:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # keep_empty_features: a feature null throughout the train split still gets a column, so
    # the ONNX input width equals the feature schema's.
    steps = [
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
        ("scale", StandardScaler()),
        (
            "model",
            LogisticRegression(
                C=float(params["C"]),
                class_weight=params["class_weight"],
                max_iter=int(params["max_iter"]),
                random_state=seed,
            ),
        ),
    ]
    pipeline: ProbabilisticEstimator = Pipeline(steps)
    return pipeline


def _space_logistic(trial: optuna.Trial) -> Params:
    return {
        "C": trial.suggest_float("C", 1e-3, 1e2, log=True),
        "class_weight": trial.suggest_categorical("class_weight", [None, "balanced"]),
    }


# -- LightGBM ------------------------------------------------------------------------------


def _build_lightgbm(params: Params, seed: int) -> ProbabilisticEstimator:
    from lightgbm import LGBMClassifier

    model: ProbabilisticEstimator = LGBMClassifier(
        n_estimators=int(params["n_estimators"]),
        learning_rate=float(params["learning_rate"]),
        num_leaves=int(params["num_leaves"]),
        min_child_samples=int(params["min_child_samples"]),
        subsample=float(params["subsample"]),
        subsample_freq=1 if float(params["subsample"]) < 1.0 else 0,
        colsample_bytree=float(params["colsample_bytree"]),
        reg_lambda=float(params["reg_lambda"]),
        random_state=seed,
        n_jobs=LGBM_THREADS,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    return model


def _space_lightgbm(trial: optuna.Trial) -> Params:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 400, step=50),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


# -- extra trees ---------------------------------------------------------------------------


def _build_extra_trees(params: Params, seed: int) -> ProbabilisticEstimator:
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    steps = [
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
        (
            "model",
            ExtraTreesClassifier(
                n_estimators=int(params["n_estimators"]),
                max_depth=int(params["max_depth"]),
                min_samples_leaf=int(params["min_samples_leaf"]),
                max_features=float(params["max_features"]),
                random_state=seed,
                # Unset, so fit_candidate's joblib context builds the trees on FIT_THREADS,
                # while prediction outside it runs on one: threaded prediction sums tree
                # probabilities in a racy order, so the last bits of a score would differ.
                n_jobs=None,
            ),
        ),
    ]
    pipeline: ProbabilisticEstimator = Pipeline(steps)
    return pipeline


def _space_extra_trees(trial: optuna.Trial) -> Params:
    # Depth and tree count are capped: the ONNX graph grows with leaves, and serving loads it.
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 200, step=50),
        "max_depth": trial.suggest_int("max_depth", 4, 14),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 200, log=True),
        "max_features": trial.suggest_float("max_features", 0.2, 1.0),
    }


TRAINED: dict[str, TrainedCandidate] = {
    "logistic": TrainedCandidate(
        name="logistic",
        build=_build_logistic,
        defaults={"C": 1.0, "class_weight": None, "max_iter": 2000},
        space=_space_logistic,
    ),
    "lightgbm": TrainedCandidate(
        name="lightgbm",
        build=_build_lightgbm,
        defaults={
            "n_estimators": 200,
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_child_samples": 50,
            "subsample": 1.0,
            "colsample_bytree": 0.8,
            "reg_lambda": 1.0,
        },
        space=_space_lightgbm,
    ),
    "extra_trees": TrainedCandidate(
        name="extra_trees",
        build=_build_extra_trees,
        defaults={
            "n_estimators": 100,
            "max_depth": 10,
            "min_samples_leaf": 20,
            "max_features": 0.5,
        },
        space=_space_extra_trees,
    ),
}
"""Trained candidates by name (``TrainConfig.candidates`` picks from these)."""


def get_candidate(name: str) -> TrainedCandidate:
    """The trained candidate called ``name``; ConfigError listing the known ones otherwise."""
    try:
        return TRAINED[name]
    except KeyError:
        raise ConfigError(
            f"candidate must be one of {', '.join(TRAINED)}; got {name!r}",
            where="train.candidates",
        ) from None


# -- baselines -----------------------------------------------------------------------------


class Baseline(ABC):
    """A reference predictor fitted on training rates; outputs probabilities."""

    name: str

    @abstractmethod
    def fit(self, data: TrainingData, rows: IntArray) -> Baseline:
        """Learn the rates from ``rows`` of ``data``."""

    @abstractmethod
    def predict(self, data: TrainingData, rows: IntArray) -> FloatArray:
        """Probability of the label for ``rows`` of ``data``."""


def _require(data: TrainingData, name: str, baseline: str) -> npt.NDArray[np.float32]:
    col = data.column(name)
    if col is None:
        raise ConfigError(
            f"the {baseline} baseline needs the feature {name!r}, which the dataset lacks",
            where="train.candidates",
        )
    return col


def _rate(y: npt.NDArray[np.int8]) -> float:
    return float(y.mean()) if y.size else 0.0


class PersistenceBaseline(Baseline):
    """Persistence ("empty now ⇒ empty next hour") as the label's training rate given the state.

    State: the station is empty (0 bikes while renting), or full (0 docks while returning) for
    ``full_*`` labels; a third state for unknown (null) readings. The probability is the label's
    rate in that state on the training rows, falling back to the overall rate.
    """

    name = "persistence"

    def __init__(self) -> None:
        self.rates_: dict[int, float] = {}
        self.global_rate_: float = 0.0

    def _state(self, data: TrainingData, rows: IntArray) -> npt.NDArray[np.int8]:
        full = "full" in data.label
        count = "num_docks_available__last" if full else "num_bikes_available__last"
        flag = "is_returning__last" if full else "is_renting__last"
        value = _require(data, count, self.name)[rows]
        flags = data.column(flag)
        at_zero = value == 0
        if flags is not None:
            at_zero &= flags[rows] != 0
        state = np.where(at_zero, 1, 0).astype(np.int8)
        state[np.isnan(value)] = 2
        return state

    def fit(self, data: TrainingData, rows: IntArray) -> PersistenceBaseline:
        """Learn the label rate per state from ``rows``."""
        state = self._state(data, rows)
        y = data.y[rows]
        self.global_rate_ = _rate(y)
        self.rates_ = {int(s): _rate(y[state == s]) for s in np.unique(state)}
        return self

    def predict(self, data: TrainingData, rows: IntArray) -> FloatArray:
        """The training rate for each row's state."""
        state = self._state(data, rows)
        table = np.array([self.rates_.get(s, self.global_rate_) for s in range(3)])
        out: FloatArray = table[state]
        return out


class HourOfWeekBaseline(Baseline):
    """The station's historical label rate at this hour of the week.

    Falls back, when the station has no training rows at that hour of the week, to the
    station's rate at this hour of the day, then the all-station hour-of-week rate, then the
    all-station hour-of-day rate, then the overall rate. (The hour-of-day steps are an addition:
    with a short training window whole days of the week are unseen.)
    """

    name = "hour_of_week"

    def __init__(self) -> None:
        self.tables_: list[dict[tuple[str, int] | int, float]] = []
        self.global_rate_: float = 0.0

    def _keys(self, data: TrainingData, rows: IntArray) -> tuple[npt.NDArray[np.int64], ...]:
        hour = _require(data, "hour_of_day", self.name)[rows]
        day = _require(data, "day_of_week", self.name)[rows]
        hod = np.where(np.isnan(hour), -1, hour).astype(np.int64)
        how = np.where(np.isnan(hour) | np.isnan(day), -1, day * 24 + hour).astype(np.int64)
        return how, hod

    @staticmethod
    def _table(keys: list[Any], y: npt.NDArray[np.int8]) -> dict[Any, float]:
        sums: dict[Any, int] = {}
        counts: dict[Any, int] = {}
        for k, v in zip(keys, y.tolist(), strict=True):
            sums[k] = sums.get(k, 0) + int(v)
            counts[k] = counts.get(k, 0) + 1
        return {k: sums[k] / counts[k] for k in counts}

    def _levels(self, data: TrainingData, rows: IntArray) -> list[list[Any]]:
        how, hod = self._keys(data, rows)
        sid = data.station_ids[rows].tolist()
        how_l, hod_l = how.tolist(), hod.tolist()
        return [
            list(zip(sid, how_l, strict=True)),
            list(zip(sid, hod_l, strict=True)),
            how_l,
            hod_l,
        ]

    def fit(self, data: TrainingData, rows: IntArray) -> HourOfWeekBaseline:
        """Learn the rate tables from ``rows``."""
        y = data.y[rows]
        self.global_rate_ = _rate(y)
        self.tables_ = [self._table(keys, y) for keys in self._levels(data, rows)]
        return self

    def predict(self, data: TrainingData, rows: IntArray) -> FloatArray:
        """The most specific known rate for each row."""
        out = np.full(rows.shape[0], self.global_rate_, dtype=np.float64)
        known = np.zeros(rows.shape[0], dtype=bool)
        for table, keys in zip(self.tables_, self._levels(data, rows), strict=True):
            values = np.array([table.get(k, np.nan) for k in keys], dtype=np.float64)
            hit = ~known & ~np.isnan(values)
            out[hit] = values[hit]
            known |= hit
        return out


BASELINES: dict[str, type[Baseline]] = {
    PersistenceBaseline.name: PersistenceBaseline,
    HourOfWeekBaseline.name: HourOfWeekBaseline,
}
"""Baselines by name; both always run."""


def get_baseline(name: str) -> Baseline:
    """A fresh baseline called ``name``."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise ConfigError(
            f"baseline must be one of {', '.join(BASELINES)}; got {name!r}",
            where="train.candidates",
        ) from None
