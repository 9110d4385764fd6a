"""Drift: effect sizes against scipy, no alarm at large n, a 0.25 σ shift found, sketches merge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon as scipy_js
from scipy.stats import wasserstein_distance

from dockline.core.config import MonitorDriftConfig
from dockline.monitor import (
    drift_frames,
    drift_of,
    reference_from_baseline,
    reference_from_values,
    sketch_many,
    window_ids,
)
from dockline.monitor.drift import jensenshannon, psi, wasserstein_normed
from dockline.train.export import drift_baseline

CONFIG = MonitorDriftConfig()


def frames(n: int, seed: int, shift: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Columns shaped like station features: gaussian, skewed, counts, flags, fractions."""
    rng = np.random.default_rng(seed)
    cols = {
        "bikes_mean_60m": rng.normal(8.0, 3.0, n),
        "minutes_since_empty": rng.exponential(90.0, n),
        "fill_ratio": rng.beta(2.0, 3.0, n),
        "count_60m": rng.poisson(30.0, n).astype(np.float64),
        "is_renting": (rng.random(n) < 0.97).astype(np.float64),
        "empty_snapshots_60m": rng.integers(0, 5, n).astype(np.float64),
        "lat": rng.lognormal(0.0, 0.6, n),
    }
    for name, sigmas in (shift or {}).items():
        cols[name] = cols[name] + sigmas * cols[name].std()
    return cols


def test_effect_sizes_match_scipy() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 200_000)
    cur = rng.normal(0.3, 1.2, 50_000)
    r = reference_from_values("x", ref)
    (s,) = sketch_many(r, cur)
    q = s.counts / s.n
    assert jensenshannon(r.probs, q) == pytest.approx(scipy_js(r.probs, q, base=2), abs=1e-9)
    exact = wasserstein_distance(ref, cur) / ref.std()
    assert wasserstein_normed(r, s) == pytest.approx(exact, rel=0.03)
    manual = float(
        np.sum(
            (np.maximum(q, 1e-4) - np.maximum(r.probs, 1e-4))
            * np.log(np.maximum(q, 1e-4) / np.maximum(r.probs, 1e-4))
        )
    )
    assert psi(r.probs, q) == pytest.approx(manual)


def test_no_feature_flagged_on_large_same_distribution_samples() -> None:
    result = drift_frames(frames(300_000, 1), frames(300_000, 2), CONFIG)
    assert not result.drift
    assert [n for n, f in result.features.items() if f.drift] == []
    assert max(f.score for f in result.features.values() if f.method == "wasserstein") < 0.02


@pytest.mark.parametrize("feature", ["bikes_mean_60m", "minutes_since_empty", "lat", "fill_ratio"])
def test_quarter_sigma_shift_flagged_in_that_feature_only(feature: str) -> None:
    result = drift_frames(frames(200_000, 1), frames(50_000, 2, {feature: 0.25}), CONFIG)
    flagged = [n for n, f in result.features.items() if f.drift]
    assert flagged == [feature]
    assert result.features[feature].score == pytest.approx(0.25, abs=0.03)
    assert not result.drift  # one feature of seven is under the dataset share


def test_dataset_level_drift_by_share() -> None:
    moved = {name: 1.0 for name in ["bikes_mean_60m", "minutes_since_empty", "lat", "fill_ratio"]}
    result = drift_frames(frames(50_000, 1), frames(20_000, 2, moved), CONFIG)
    assert result.drift and result.share == pytest.approx(4 / 7, abs=1e-6)


def test_categorical_features_use_jensen_shannon() -> None:
    rng = np.random.default_rng(3)
    r = reference_from_values("k", rng.integers(0, 5, 50_000))
    assert r.categorical
    same = drift_of(r, sketch_many(r, rng.integers(0, 5, 20_000))[0], CONFIG)
    new_value = drift_of(r, sketch_many(r, rng.integers(0, 7, 20_000))[0], CONFIG)
    assert (same.method, same.drift) == ("jensenshannon", False)
    assert new_value.drift and new_value.score > 0.1


def test_small_samples_use_a_test_and_alarm_at_about_alpha() -> None:
    rng = np.random.default_rng(4)
    r = reference_from_values("x", rng.normal(0, 1, 100_000))
    alarms = [
        drift_of(r, sketch_many(r, rng.normal(0, 1, 300))[0], CONFIG).drift for _ in range(300)
    ]
    assert 0.01 < np.mean(alarms) < 0.10  # alpha = 0.05
    moved = drift_of(r, sketch_many(r, rng.normal(0.5, 1, 300))[0], CONFIG)
    assert moved.method == "chisquare" and moved.drift and moved.score < 0.05
    at_limit = drift_of(r, sketch_many(r, rng.normal(0, 1, 1000))[0], CONFIG)
    assert at_limit.method == "wasserstein"  # 1000 = small_sample: effect sizes decide


def test_sketches_of_windows_merge_to_the_whole() -> None:
    rng = np.random.default_rng(5)
    r = reference_from_values("x", rng.normal(0, 1, 10_000))
    values = rng.normal(0.2, 1.5, 40_000)
    values[::97] = np.nan
    times = np.sort(rng.integers(0, 4 * 3_600_000_000, values.size)) + 7 * 3_600_000_000
    ids, n_windows, first = window_ids(times, 3_600_000_000)
    assert (n_windows, first) == (4, 7 * 3_600_000_000)
    parts = sketch_many(r, values, ids, n_windows)
    merged = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    (whole,) = sketch_many(r, values)
    assert np.array_equal(merged.counts, whole.counts) and merged.nulls == whole.nulls
    assert merged.below == pytest.approx(whole.below) and merged.above == pytest.approx(whole.above)
    assert drift_of(r, merged, CONFIG) == drift_of(r, whole, CONFIG)


@pytest.mark.parametrize("dist", ["normal", "exponential", "lognormal"])
def test_bundle_baseline_reference_is_accurate(dist: str) -> None:
    rng = np.random.default_rng(6)
    draw = {
        "normal": lambda n: rng.normal(5, 2, n),
        "exponential": lambda n: rng.exponential(3, n),
        "lognormal": lambda n: rng.lognormal(0, 1, n),
    }[dist]
    train = draw(200_000)
    (fb,) = drift_baseline(train[:, None], [dist]).features
    r = reference_from_baseline(fb)
    assert not r.categorical
    same = drift_of(r, sketch_many(r, draw(100_000))[0], CONFIG)
    moved = drift_of(r, sketch_many(r, draw(100_000) + 0.25 * train.std())[0], CONFIG)
    assert not same.drift and same.score < 0.02
    assert moved.drift and moved.score == pytest.approx(0.25, abs=0.03)


def test_thresholds_are_strict() -> None:
    rng = np.random.default_rng(7)
    r = reference_from_values("x", rng.normal(0, 1, 50_000))
    (s,) = sketch_many(r, rng.normal(0.2, 1, 20_000))
    score = drift_of(r, s, CONFIG).score
    at = MonitorDriftConfig(wasserstein_threshold=score)
    below = MonitorDriftConfig(wasserstein_threshold=score - 1e-6)
    above = MonitorDriftConfig(wasserstein_threshold=score + 1e-6)
    assert not drift_of(r, s, at).drift  # exactly at the threshold: no drift
    assert drift_of(r, s, below).drift and not drift_of(r, s, above).drift
