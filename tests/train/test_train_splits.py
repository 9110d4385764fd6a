"""Splits and rolling-origin folds: no label window crosses a boundary; bad settings fail."""

from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pytest

from dockline.core.config import TrainConfig
from dockline.core.errors import ConfigError
from dockline.train.splits import make_splits, resolve_embargo_us, rolling_origin_folds

MIN = 60 * 1_000_000
HOUR = 60 * MIN


def _crafted(n_steps: int = 2000, step: int = 5 * MIN, stations: int = 3, seed: int = 0):
    """Rows on a 5-minute spine with label windows of varying length up to the horizon."""
    rng = np.random.default_rng(seed)
    as_of = np.repeat(np.arange(n_steps, dtype=np.int64) * step, stations)
    window = rng.integers(1, HOUR // MIN + 1, size=as_of.size).astype(np.int64) * MIN
    return as_of, as_of + window


def _assert_no_leak(as_of, avail, earlier, later, embargo):
    assert avail[earlier].max() < as_of[later].min()
    assert as_of[later].min() - avail[earlier].max() >= embargo


@pytest.mark.parametrize("embargo", [None, timedelta(hours=1), timedelta(hours=3)])
def test_no_label_window_crosses_a_split_boundary(embargo: timedelta | None) -> None:
    as_of, avail = _crafted()
    splits = make_splits(as_of, avail, TrainConfig(embargo=embargo), HOUR)
    parts = list(splits)
    expected = HOUR if embargo is None else int(embargo.total_seconds() * 1e6)
    assert splits.embargo_us == expected
    for earlier, later in itertools.pairwise(parts):
        _assert_no_leak(as_of, avail, earlier.rows, later.rows, expected)
        assert earlier.last_label_us < later.first_as_of_us
    # Time order, disjoint, and every split non-empty.
    all_rows = np.concatenate([p.rows for p in parts])
    assert np.unique(all_rows).size == all_rows.size
    assert all(p.size > 0 for p in parts)
    # What is dropped is only the embargo zone before each cut.
    dropped = np.setdiff1d(np.arange(as_of.size), all_rows)
    for row in dropped:
        assert any(p.end_us - expected <= avail[row] and as_of[row] < p.end_us for p in parts[:-1])


def test_split_fractions_follow_the_time_range() -> None:
    as_of, avail = _crafted(n_steps=10_000)
    splits = make_splits(as_of, avail, TrainConfig(split=(0.5, 0.2, 0.1, 0.2)), HOUR)
    span = as_of.max() - as_of.min()
    assert splits.validation.start_us - as_of.min() == pytest.approx(0.5 * span, abs=2e6)
    assert splits.test.size / as_of.size == pytest.approx(0.2, abs=0.01)


def test_an_embargo_shorter_than_the_horizon_is_a_config_error() -> None:
    as_of, avail = _crafted()
    with pytest.raises(ConfigError, match="horizon"):
        make_splits(as_of, avail, TrainConfig(embargo=timedelta(minutes=30)), HOUR)
    with pytest.raises(ConfigError):
        resolve_embargo_us(timedelta(0), HOUR)
    assert resolve_embargo_us(None, HOUR) == HOUR


def test_bad_fractions_and_too_short_data_are_config_errors() -> None:
    as_of, avail = _crafted()
    with pytest.raises(ConfigError, match="sum to 1"):
        make_splits(as_of, avail, TrainConfig(split=(0.6, 0.1, 0.1, 0.1)), HOUR)
    with pytest.raises(ConfigError, match="positive"):
        make_splits(as_of, avail, TrainConfig(split=(0.9, 0.0, 0.05, 0.05)), HOUR)
    short_as_of, short_avail = _crafted(n_steps=30)  # 2.5 h: no room for three embargoes
    with pytest.raises(ConfigError, match="empty"):
        make_splits(short_as_of, short_avail, TrainConfig(), HOUR)


def test_rolling_origin_folds_expand_and_respect_the_embargo() -> None:
    as_of, avail = _crafted(n_steps=5000)
    splits = make_splits(as_of, avail, TrainConfig(), HOUR)
    folds = rolling_origin_folds(as_of, avail, splits.train.rows, 3, HOUR)
    assert len(folds) == 3
    sizes = [f.fit.size for f in folds]
    assert sizes == sorted(sizes) and sizes[0] > 0
    for fold in folds:
        assert np.isin(fold.fit, splits.train.rows).all()
        assert np.isin(fold.valid, splits.train.rows).all()
        _assert_no_leak(as_of, avail, fold.fit, fold.valid, HOUR)
    # Validation blocks are consecutive and do not overlap.
    for a, b in itertools.pairwise(folds):
        assert as_of[a.valid].max() < as_of[b.valid].min()
    with pytest.raises(ConfigError, match="fold"):
        rolling_origin_folds(as_of, avail, splits.train.rows[:10], 3, HOUR)
