"""Training sets: the bike-share project end to end on a simulated archive, reproducibly."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dockline.core.contracts import DatasetMetadata
from dockline.core.errors import ConfigError
from dockline.core.time import FixedClock
from dockline.features import compile_project, load_project
from dockline.features.dataset import build_training_set
from dockline.features.offline import OfflineExecutor, entities_in, grid_spine
from dockline.features.plan import Plan
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import CityConfig, write_archive

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 5, 6, 5, tzinfo=UTC)  # Monday 00:00 in Chicago


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Eight simulated days of 12 stations (a week for the hour-of-week profile), ingested and
    sunk into an offline store."""
    root = tmp_path_factory.mktemp("bikeshare")
    write_archive(CityConfig(stations=12, seed=7, start=START), 8.0, root / "archive")
    platform = Platform.open(root / "data")
    ingest_archive(platform, root / "archive")
    sink_offline(platform)
    return {
        table: str(platform.data.offline(table))
        for table in ("station_status", "station_information")
    }


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_project(load_project(REPO / "examples" / "bikeshare"))


def spine_for(plan: Plan, store: dict[str, str]) -> pa.Table:
    start, end = START + timedelta(days=7), START + timedelta(days=7, hours=12)
    stations = entities_in(plan, store, START, START + timedelta(days=8))
    assert len(stations) == 12
    return grid_spine([*stations, "nowhere"], start, end, timedelta(minutes=15), key=plan.key)


def test_bikeshare_training_set_on_a_simulated_city(
    tmp_path: Path, store: dict[str, str], plan: Plan
) -> None:
    spine = spine_for(plan, store)
    clock = FixedClock(datetime(2024, 6, 1, tzinfo=UTC))
    with OfflineExecutor(plan, store, threads=2) as ex:
        meta = build_training_set(
            ex,
            spine,
            tmp_path / "ds",
            name="empty",
            label="empty_next_hour",
            clock=clock,
            source_hashes={"station_status": "abc"},
        )
    table = pq.read_table(tmp_path / "ds" / "data.parquet")
    assert table.num_rows == spine.num_rows == meta.row_count  # no row dropped
    assert table.column_names[:3] == ["station_id", "as_of", "label_available_at"]
    assert table.column_names[-len(plan.feature_names) :] == list(plan.feature_names)
    real = table.filter(pc.not_equal(table.column("station_id"), "nowhere"))
    rate = meta.extra["label_rate"]
    assert isinstance(rate, float) and 0.0 < rate < 0.5
    for name in (
        "num_bikes_available__last",
        "fill_ratio",
        "lat__static",
        "hour_of_day",
        "bikes_in_60m",
        "neighbour_fill_k5",
        "fill_how_28d",
    ):
        assert real.column(name).null_count < real.num_rows / 2, name
    ghost = table.filter(pc.equal(table.column("station_id"), "nowhere"))
    assert ghost.column("num_bikes_available__last").null_count == ghost.num_rows
    assert ghost.column("empty_next_hour").to_pylist() == [False] * ghost.num_rows
    again = DatasetMetadata.read(tmp_path / "ds" / "_metadata.json")
    assert again == meta
    assert meta.extra["plan_hash"] == plan.hash and meta.target == "empty_next_hour"
    assert meta.extra["horizon_us"] == 3_600_000_000
    assert meta.extra["source_hash.station_status"] == "abc"
    assert meta.feature_count == len(plan.feature_names)
    digest = hashlib.sha256((tmp_path / "ds" / "data.parquet").read_bytes()).hexdigest()
    assert meta.files[0].sha256 == digest
    assert meta.time_range_start == START + timedelta(days=7)


def test_same_inputs_give_identical_bytes(
    tmp_path: Path, store: dict[str, str], plan: Plan
) -> None:
    spine = spine_for(plan, store)
    shuffled = spine.take(pa.array(list(range(spine.num_rows))[::-1]))
    clock = FixedClock(datetime(2024, 6, 1, tzinfo=UTC))
    with OfflineExecutor(plan, store, threads=2) as ex:
        first = build_training_set(ex, spine, tmp_path / "a", name="x", label=None, clock=clock)
    with OfflineExecutor(plan, store, threads=1) as ex:
        second = build_training_set(ex, shuffled, tmp_path / "b", name="x", label=None, clock=clock)
        with pytest.raises(ConfigError, match="unknown label"):
            build_training_set(ex, spine, tmp_path / "c", name="x", label="nope", clock=clock)
    a = (tmp_path / "a" / "data.parquet").read_bytes()
    b = (tmp_path / "b" / "data.parquet").read_bytes()
    assert a == b
    assert first.content_hash == second.content_hash
    assert first.extra["label_rate"] is None
