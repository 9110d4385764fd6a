"""Candidates: trained ones fit and give probabilities; baselines behave as specified."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from train_synth import write_synthetic

from dockline.core.errors import ConfigError
from dockline.train.candidates import (
    FIT_THREADS,
    TRAINED,
    HourOfWeekBaseline,
    PersistenceBaseline,
    fit_candidate,
    get_baseline,
    get_candidate,
    positive_scores,
)
from dockline.train.data import TrainingData, load_training_set


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    return load_training_set(write_synthetic(tmp_path_factory.mktemp("synth"), days=2), None)


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_trained_candidate_fits_and_predicts_probabilities(data: TrainingData, name: str) -> None:
    spec = get_candidate(name)
    half = data.n_rows // 2
    model = spec.make({}, seed=0)
    model.fit(data.X[:half], data.y[:half])
    p = positive_scores(model, data.X[half:])
    assert p.shape == (data.n_rows - half,)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    # Same seed, same predictions.
    twin = spec.make({}, seed=0)
    twin.fit(data.X[:half], data.y[:half])
    assert np.array_equal(p, positive_scores(twin, data.X[half:]))


def test_a_forest_fitted_on_threads_is_the_forest_fitted_on_one(
    data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit_candidate builds trees on FIT_THREADS threads: the same trees, the same scores."""
    import threading

    from sklearn.ensemble import _forest

    spec = get_candidate("extra_trees")
    half = data.n_rows // 2
    threads: set[int] = set()
    build = _forest._parallel_build_trees

    def recording(*args: object, **kwargs: object) -> object:
        threads.add(threading.get_ident())
        return build(*args, **kwargs)

    monkeypatch.setattr(_forest, "_parallel_build_trees", recording)
    threaded = fit_candidate(spec.make({}, seed=3), data.X[:half], data.y[:half])
    assert len(threads) == FIT_THREADS > 1  # it really built on several threads
    threads.clear()
    single = spec.make({}, seed=3)
    single.fit(data.X[:half], data.y[:half])
    assert len(threads) == 1  # a plain fit (n_jobs unset) builds on one
    a, b = threaded.steps[-1][1].estimators_, single.steps[-1][1].estimators_  # type: ignore[attr-defined]
    assert all(
        np.array_equal(x.tree_.threshold, y.tree_.threshold) for x, y in zip(a, b, strict=True)
    )
    assert np.array_equal(
        positive_scores(threaded, data.X[half:]), positive_scores(single, data.X[half:])
    )


def test_unknown_candidate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="logistic"):
        get_candidate("svm")
    with pytest.raises(ConfigError):
        get_baseline("oracle")


def _crafted(data: TrainingData, x: np.ndarray, y: np.ndarray, stations: np.ndarray):
    n = y.size
    return replace(
        data,
        X=np.ascontiguousarray(x, dtype=np.float32),
        y=y.astype(np.int8),
        station_ids=stations,
        as_of_us=np.arange(n, dtype=np.int64),
        label_available_us=np.arange(n, dtype=np.int64) + 1,
    )


def test_persistence_is_the_training_rate_given_the_state(data: TrainingData) -> None:
    f = data.features
    x = np.zeros((8, len(f)))
    bikes, renting = f.index("num_bikes_available__last"), f.index("is_renting__last")
    x[:, renting] = 1
    x[:, bikes] = [0, 0, 0, 0, 5, 5, 5, np.nan]
    x[3, renting] = 0  # empty but not renting: not the "empty" state
    y = np.array([1, 1, 0, 1, 0, 0, 1, 1])
    crafted = _crafted(data, x, y, np.array(["a"] * 8))
    rows = np.arange(8)
    p = PersistenceBaseline().fit(crafted, rows).predict(crafted, rows)
    # empty (rows 0-2): 2/3; not empty (3-6): 2/4; unknown (7): 1/1
    assert p.tolist() == pytest.approx([2 / 3] * 3 + [0.5] * 4 + [1.0])


def test_persistence_uses_docks_for_the_full_label(data: TrainingData) -> None:
    f = data.features
    x = np.ones((4, len(f)))
    x[:, f.index("num_bikes_available__last")] = [0, 0, 3, 3]
    x[:, f.index("num_docks_available__last")] = [3, 3, 0, 0]
    crafted = _crafted(data, x, np.array([0, 0, 1, 1]), np.array(["a"] * 4))
    crafted = replace(crafted, label="full_next_hour")
    rows = np.arange(4)
    p = PersistenceBaseline().fit(crafted, rows).predict(crafted, rows)
    assert p.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_hour_of_week_rates_and_fallbacks(data: TrainingData) -> None:
    f = data.features
    hour, day = f.index("hour_of_day"), f.index("day_of_week")
    # Training: station a at Mon 08h (1 of 2 positive), station b at Mon 08h (0 of 2),
    # station a at Tue 09h (1 of 1).
    x = np.zeros((5, len(f)))
    x[:, hour] = [8, 8, 8, 8, 9]
    x[:, day] = [0, 0, 0, 0, 1]
    y = np.array([1, 0, 0, 0, 1])
    st = np.array(["a", "a", "b", "b", "a"])
    train = _crafted(data, x, y, st)
    base = HourOfWeekBaseline().fit(train, np.arange(5))
    # Queries: a@Mon08 → 0.5; b@Mon08 → 0; c@Mon08 (new station) → global Mon08 = 1/4;
    # b@Wed08 → station b's rate at 08h = 0; c@Sun23 → overall 2/5; a@Wed09 → a's 09h = 1.
    qx = np.zeros((6, len(f)))
    qx[:, hour] = [8, 8, 8, 8, 23, 9]
    qx[:, day] = [0, 0, 0, 2, 6, 2]
    query = _crafted(data, qx, np.zeros(6), np.array(["a", "b", "c", "b", "c", "a"]))
    p = base.predict(query, np.arange(6))
    assert p.tolist() == pytest.approx([0.5, 0.0, 0.25, 0.0, 0.4, 1.0])


def test_baselines_need_their_features(data: TrainingData) -> None:
    stripped = replace(data, features=tuple(f"x{i}" for i in range(len(data.features))))
    with pytest.raises(ConfigError, match="hour_of_day"):
        HourOfWeekBaseline().fit(stripped, np.arange(10))
    with pytest.raises(ConfigError, match="num_bikes"):
        PersistenceBaseline().fit(stripped, np.arange(10))
