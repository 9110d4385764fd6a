"""Loading a training set: arrays, feature order, label checks, the station-hash row cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from train_synth import FEATURES, HORIZON_US, write_synthetic

from dockline.core.contracts import DatasetMetadata
from dockline.core.errors import ConfigError, ContractError
from dockline.core.files import sha256_file
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


def rewrite(root: Path, table: pa.Table, **extra: str) -> None:
    """Replace the data file and keep the metadata consistent with it (digest, columns)."""
    pq.write_table(table, root / "data.parquet")
    meta = DatasetMetadata.read(root / "_metadata.json")
    digest = sha256_file(root / "data.parquet")
    files = [meta.files[0].model_copy(update={"sha256": digest})]
    meta.model_copy(
        update={
            "files": files,
            "columns": table.column_names,
            "content_hash": digest,
            "extra": {**meta.extra, **extra},
        }
    ).write(root / "_metadata.json")


def test_features_are_the_plans_names_in_plan_order_not_the_files_numeric_columns(
    tmp_path: Path,
) -> None:
    root = write_synthetic(tmp_path / "ds", stations=3, days=2)
    table = pq.read_table(root / "data.parquet")
    # the file's columns in another order: the model's input order is the plan's
    rewrite(root, table.select(list(reversed(table.column_names))))
    data = load_training_set(root, None)
    assert data.features == tuple(FEATURES)
    j = FEATURES.index("capacity__static")
    column = np.asarray(table.column("capacity__static").to_numpy(), dtype=np.float32)
    order = np.lexsort(
        (
            np.asarray(table.column("station_id").to_pylist()),
            table.column("as_of").cast(pa.int64()).to_numpy(),
        )
    )
    assert np.array_equal(data.X[:, j], column[order])


def test_a_column_the_plan_does_not_produce_is_refused_not_trained_on(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "ds", stations=3, days=2)
    table = pq.read_table(root / "data.parquet")
    leak = pc.cast(table.column("empty_next_hour"), pa.float64())
    rewrite(root, table.append_column("future_leak", leak))
    with pytest.raises(ContractError, match=r"does not match its plan.*future_leak") as info:
        load_training_set(root, None)
    assert info.value.reason == "dataset_plan_mismatch"
    assert "\n" not in str(info.value)


def test_a_plan_feature_missing_from_the_file_is_refused(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "ds", stations=3, days=2)
    table = pq.read_table(root / "data.parquet")
    rewrite(root, table.drop_columns(["noise"]))
    with pytest.raises(ContractError, match="missing features noise"):
        load_training_set(root, None)


def test_a_dataset_without_recorded_feature_names_is_refused(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "ds", stations=3, days=2)
    meta = DatasetMetadata.read(root / "_metadata.json")
    extra = {k: v for k, v in meta.extra.items() if k != "features"}
    meta.model_copy(update={"extra": extra}).write(root / "_metadata.json")
    with pytest.raises(ContractError, match="no feature names"):
        load_training_set(root, None)


def test_a_data_file_changed_after_the_build_is_refused(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "ds", stations=3, days=2)
    table = pq.read_table(root / "data.parquet")
    pq.write_table(table.slice(0, table.num_rows - 1), root / "data.parquet")
    with pytest.raises(ContractError, match="SHA-256 differs") as info:
        load_training_set(root, None)
    assert info.value.reason == "dataset_tampered"


def test_rows_with_an_unknown_label_are_dropped_and_counted(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "ds", stations=3, days=2)
    table = pq.read_table(root / "data.parquet")
    labels = table.column("empty_next_hour").to_pylist()
    unknown = set(range(0, len(labels), 7))
    column = pa.array([None if i in unknown else v for i, v in enumerate(labels)], pa.bool_())
    i = table.column_names.index("empty_next_hour")
    rewrite(root, table.set_column(i, "empty_next_hour", column))
    data = load_training_set(root, None)
    assert data.n_rows == table.num_rows - len(unknown)
    assert data.unlabeled_rows == len(unknown)
