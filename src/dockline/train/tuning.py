"""Hyper-parameter search: Optuna TPE (seeded) with median pruning over rolling-origin folds.

Each trial fits the candidate on every fold in time order and reports the running mean of the
primary metric after each fold, so the pruner can stop a hopeless trial early. The study is
persistent (SQLite file or any RDB URL) under a deterministic name — candidate, dataset hash and
config hash — so an interrupted run resumes, and a finished one is reused, not re-searched.
The first trial is the candidate's defaults, so tuning never ends worse than them on CV.

Determinism: the same data, config and seed give the same best parameters when one process
runs the study from scratch; parallel workers on a shared RDB trade that for speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from dockline.core.config import TrainConfig
from dockline.core.errors import ConfigError
from dockline.train._db import sqlalchemy_url
from dockline.train.candidates import TrainedCandidate, fit_candidate, positive_scores
from dockline.train.data import TrainingData
from dockline.train.evaluate import HIGHER_IS_BETTER, metric
from dockline.train.splits import Fold

__all__ = ["TuningResult", "config_hash", "cv_score", "study_name", "tune"]


@dataclass(frozen=True, slots=True)
class TuningResult:
    """The parameters to refit with, and how the search went."""

    candidate: str
    params: dict[str, Any]
    cv_score: float
    """Mean primary metric over the folds for ``params`` (NaN if not evaluated)."""
    study_name: str | None
    n_trials: int
    n_pruned: int


INT8_KEYS = ("quantize", "int8_max_abs_diff", "int8_mean_abs_diff")


def config_hash(config: TrainConfig) -> str:
    """SHA-256 of the training config's canonical JSON.

    The INT8 settings count only when ``quantize`` is on, and the slice checks only when
    changed from their defaults: configs from before they existed keep their hash (and so
    their bundle ids).
    """
    dumped = config.model_dump(mode="json")
    if config.quantize == "off":
        for key in INT8_KEYS:
            dumped.pop(key)
    if config.slices == type(config.slices)():
        dumped.pop("slices")
    data = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def study_name(candidate: str, dataset_hash: str, cfg_hash: str) -> str:
    """The deterministic study name for a candidate on a dataset under a config."""
    return f"dockline-{candidate}-{dataset_hash[:16]}-{cfg_hash[:16]}"


def cv_score(
    candidate: TrainedCandidate,
    params: dict[str, Any],
    data: TrainingData,
    folds: Sequence[Fold],
    *,
    metric_name: str,
    seed: int,
    report: Any = None,
) -> float:
    """Mean ``metric_name`` of ``candidate`` over ``folds``; ``report(step, running_mean)``
    is called after each fold (it may raise to stop early)."""
    scores: list[float] = []
    for step, fold in enumerate(folds):
        model = candidate.make(params, seed)
        fit_candidate(model, data.X[fold.fit], data.y[fold.fit])
        value = metric(metric_name, data.y[fold.valid], positive_scores(model, data.X[fold.valid]))
        if not math.isnan(value):
            scores.append(value)
        if report is not None and scores:
            report(step, float(np.mean(scores)))
    return float(np.mean(scores)) if scores else math.nan


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Optuna flags some sampler options as experimental; they are fixed here, not chosen.
            warnings.filterwarnings("ignore", module="optuna")
            yield
    finally:
        logger.setLevel(level)


def tune(
    candidate: TrainedCandidate,
    data: TrainingData,
    folds: Sequence[Fold],
    config: TrainConfig,
    *,
    storage: str,
    name: str,
    progress: bool = False,
) -> TuningResult:
    """Search ``candidate``'s space for ``config.n_trials`` trials (0: its defaults, unscored).

    ``storage`` is an Optuna storage URL (``sqlite:///path.db`` or any RDB URL); a plain file
    path is taken as a SQLite file. The study is loaded if it exists; only the trials still
    missing from the budget run.
    """
    if config.n_trials == 0:
        return TuningResult(candidate.name, dict(candidate.defaults), math.nan, None, 0, 0)
    import optuna

    url = sqlalchemy_url(storage) if "://" in storage else f"sqlite:///{storage}"
    direction: Literal["maximize", "minimize"] = (
        "maximize" if HIGHER_IS_BETTER[config.primary_metric] else "minimize"
    )
    with _quiet_optuna():
        study = _open_study(
            url,
            name,
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=config.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        )
        done = [
            t
            for t in study.trials
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        ]
        if not study.trials:
            study.enqueue_trial(
                {k: v for k, v in candidate.defaults.items() if k in _space_names(candidate)}
            )
        remaining = max(0, config.n_trials - len(done))

        def objective(trial: optuna.Trial) -> float:
            params = candidate.space(trial)

            def report(step: int, value: float) -> None:
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            value = cv_score(
                candidate,
                params,
                data,
                folds,
                metric_name=config.primary_metric,
                seed=config.seed,
                report=report,
            )
            if math.isnan(value):
                raise ConfigError(
                    f"{config.primary_metric} is undefined on every fold (one class only?)",
                    where="train.cv_folds",
                )
            return value

        if remaining:
            _optimize(study, objective, remaining, config.n_trials, progress, candidate.name)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            return TuningResult(candidate.name, dict(candidate.defaults), math.nan, name, 0, 0)
        best = study.best_trial
        pruned = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    params = {**candidate.defaults, **best.params}
    return TuningResult(
        candidate=candidate.name,
        params=params,
        cv_score=float(best.value) if best.value is not None else math.nan,
        study_name=name,
        n_trials=len(complete) + pruned,
        n_pruned=pruned,
    )


def _open_study(url: str, name: str, **kwargs: Any) -> Any:
    """Create or load the study; workers starting together on a new database race to create
    Optuna's schema (one loses with a duplicate table or type): the loser retries, then finds it.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            return optuna.create_study(storage=url, study_name=name, load_if_exists=True, **kwargs)
        except (IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _space_names(candidate: TrainedCandidate) -> set[str]:
    import optuna

    # Ask the space on a throw-away fixed trial to learn which parameters it samples.
    trial = optuna.trial.FixedTrial(dict(candidate.defaults))
    return set(candidate.space(cast("optuna.Trial", trial)))


def _optimize(
    study: Any, objective: Any, n_trials: int, budget: int, progress: bool, label: str
) -> None:
    import optuna

    # workers sharing one study (an RDB storage) stop when the study as a whole has its
    # budget, not after each ran its own remainder (which would overshoot by a worker's count)
    state = optuna.trial.TrialState
    enough = optuna.study.MaxTrialsCallback(budget, states=(state.COMPLETE, state.PRUNED))
    if not progress:
        study.optimize(objective, n_trials=n_trials, catch=(), callbacks=[enough])
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"[bold]tuning {label}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=n_trials)
        study.optimize(
            objective,
            n_trials=n_trials,
            catch=(),
            callbacks=[enough, lambda _s, _t: bar.advance(task)],
        )
