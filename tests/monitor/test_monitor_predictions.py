"""Reading the prediction log: time ranges across date partitions, and the feature matrix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from dockline.core.time import to_micros
from dockline.monitor import feature_matrix, read_prediction_log
from dockline.serve._predlog import PredictionLog

T0 = datetime(2026, 4, 7, 23, 59, 58, tzinfo=UTC)


def _log(root: Path, times: list[datetime], features: list[list[float] | None]) -> None:
    log = PredictionLog(root, flush_rows=10_000, flush_interval_s=60, max_queue=10_000)
    for i, (t, f) in enumerate(zip(times, features, strict=True)):
        log.append(
            (
                f"r{i}",
                to_micros(t),
                "/v1/predict",
                "s",
                "champion",
                True,
                "m",
                1,
                "b",
                0.5,
                False,
                "ok",
                None,
                "model",
                None,
                1.0,
                1.0,
                f,
                None,
                None,
            )
        )
    log.flush()


def test_range_across_midnight_and_days(tmp_path: Path) -> None:
    # One flush spanning midnight lands in the first row's date partition.
    _log(tmp_path, [T0 + timedelta(seconds=s) for s in range(5)], [[1.0]] * 5)
    _log(tmp_path, [T0 + timedelta(days=3)], [[2.0]])
    since = T0 + timedelta(seconds=2)  # the next day
    table = read_prediction_log(tmp_path, start=since, end=since + timedelta(days=1))
    assert table.num_rows == 3
    assert table["request_id"].to_pylist() == ["r2", "r3", "r4"]
    assert read_prediction_log(tmp_path).num_rows == 6
    assert read_prediction_log(tmp_path / "none", columns=["probability"]).num_rows == 0


def test_feature_matrix_keeps_bad_rows_as_nulls() -> None:
    table = pa.table(
        {"features": pa.array([[1.0, 2.0], None, [3.0], [4.0, 5.0]], pa.list_(pa.float32()))}
    )
    m = feature_matrix(table, 2)
    assert m.shape == (4, 2)
    assert np.array_equal(m[[0, 3]], [[1.0, 2.0], [4.0, 5.0]])
    assert np.isnan(m[1]).all() and np.isnan(m[2]).all()
