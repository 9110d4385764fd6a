"""Loading a training set: arrays, feature order, label checks, the station-hash row cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from train_synth import FEATURES, HORIZON_US, write_synthetic

from dockline.core.errors import ConfigError
from dockline.train.data import load_training_set, select_stations


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth"))


def test_load_gives_dense_float32_in_feature_order(synth: Path) -> None:
    data = load_training_set(synth, None)
    table = pq.read_table(synth / "data.parquet")
    assert data.features == tuple(FEATURES)  # timestamps and labels are not features
    assert data.X.dtype == np.float32 and data.X.flags.c_contiguous
    assert data.X.shape == (table.num_rows, len(FEATURES))
    assert np.isnan(data.X[:, 0]).any()  # nulls arrive as NaN
    assert data.label == "empty_next_hour" and data.horizon_us == HORIZON_US
    assert set(np.unique(data.y)) <= {0, 1}
    assert (np.diff(data.as_of_us) >= 0).all()
    assert (data.label_available_us - data.as_of_us == HORIZON_US).all()
    assert data.y.mean() == pytest.approx(np.mean(table.column("empty_next_hour").to_numpy()))
    other = load_training_set(synth / "data.parquet", "full_next_hour")
    assert other.label == "full_next_hour"


def test_unknown_or_non_boolean_label_is_a_config_error(synth: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_training_set(synth, "nope")
    with pytest.raises(ConfigError, match="boolean"):
        load_training_set(synth, "bikes_in_60m")


def test_row_cap_keeps_whole_stations_by_stable_hash(synth: Path) -> None:
    full = load_training_set(synth, None)
    capped = load_training_set(synth, None, max_rows=2000)
    assert 0 < capped.n_rows <= 2000
    per_station = {s: int((full.station_ids == s).sum()) for s in np.unique(full.station_ids)}
    for s in np.unique(capped.station_ids):
        assert int((capped.station_ids == s).sum()) == per_station[s]  # no holes
    again = load_training_set(synth, None, max_rows=2000)
    assert np.array_equal(capped.station_ids, again.station_ids)
    mask = select_stations(np.array(["a", "b", "c", "a"]), 10)
    assert mask.all()
