"""The pieces without HTTP: the bounded prediction log, baselines, canary buckets."""

from __future__ import annotations

import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dockline.core.errors import ContractError
from dockline.serve import Baseline, PredictionLog, canary_bucket
from dockline.serve._predlog import LogRow


def _row(i: int) -> LogRow:
    return (
        f"r{i}", 1_714_564_800_000_000 + i, "/v1/predict", f"s{i}", "champion", True, "m", 1,
        "b" * 16, 0.25, False, "ok", None, "model", 1_714_564_700_000_000, 100.0, 0.2,
        [1.0, 2.0], 1_714_564_790_000_000, [1.0, None, 2.5],
    )  # fmt: skip


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = PredictionLog(
        tmp_path, flush_rows=100, flush_interval_s=60, max_queue=3, on_dropped=dropped.append
    )
    accepted = [log.append(_row(i)) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert log.dropped == 2 and dropped == [1, 1]
    assert log.flush() == 3
    (file,) = tmp_path.rglob("*.parquet")
    assert file.parent.name == "date=2024-05-01"
    table = pq.read_table(file)
    assert table.column("request_id").to_pylist() == ["r0", "r1", "r2"]
    assert log.append(_row(9)) and log.flush() == 1
    assert len(list(tmp_path.rglob("*.parquet"))) == 2  # append-only: a new file per flush


def test_two_logs_of_one_process_never_overwrite_each_other(tmp_path: Path) -> None:
    """A serving app and its companion (or an app restarted on a fixed clock) flush rows with
    the same first timestamp from the same process: both files are kept."""
    logs = [
        PredictionLog(tmp_path, flush_rows=100, flush_interval_s=60, max_queue=10) for _ in "ab"
    ]
    for log in logs:
        assert log.append(_row(0)) and log.flush() == 1
    assert len(list(tmp_path.rglob("*.parquet"))) == 2


def test_baseline_rates_by_hour_of_week() -> None:
    hours = [i / 200 for i in range(168)]
    base = Baseline.parse(
        ('{"global_rate": 0.3, "hour_of_week": [' + ",".join(map(str, hours)) + "]}").encode(),
        "b",
    )
    assert base.rate(9, 2) == hours[57]
    assert base.rate(None, 2) == 0.3 and base.rate(30, 9) == 0.3
    assert Baseline.parse(b'{"global_rate": 0.1}', "b").rate(1, 1) == 0.1
    with pytest.raises(ContractError, match="168"):
        Baseline.parse(b'{"global_rate": 0.1, "hour_of_week": [0.1]}', "b")
    with pytest.raises(ContractError):
        Baseline.parse(b'{"hour_of_week": []}', "b")


def test_canary_buckets_are_crc32_of_the_entity() -> None:
    assert canary_bucket("s001") == zlib.crc32(b"s001") % 10_000
    share = sum(canary_bucket(f"s{i}") < 2500 for i in range(4000)) / 4000
    assert 0.22 < share < 0.28
