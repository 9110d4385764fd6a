"""Training sets: the bike-share project end to end on a simulated archive, reproducibly."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dockline.core.contracts import DatasetMetadata, TrainingMetadata
from dockline.core.errors import ConfigError
from dockline.core.time import FixedClock
from dockline.features import compile_project, load_project
from dockline.features.dataset import DatasetExistsError, build_training_set
from dockline.features.offline import OfflineExecutor, entities_in, grid_spine
from dockline.features.plan import Plan
from dockline.pipeline.features import build_dataset_published
from dockline.pipeline.platform import Platform

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 5, 6, 5, tzinfo=UTC)  # Monday 00:00 in Chicago (as simulated_city)


@pytest.fixture(scope="module")
def platform(simulated_city: Platform) -> Platform:
    return simulated_city


@pytest.fixture(scope="module")
def store(platform: Platform) -> dict[str, str]:
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
    assert meta.dataset_name == "empty" and meta.path == str(tmp_path / "ds")
    assert meta.extra["plan_hash"] == plan.hash and meta.target == "empty_next_hour"
    assert meta.extra["features"] == ",".join(plan.feature_names)
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


def newest_ingested(store: dict[str, str]) -> datetime:
    table = pq.read_table(store["station_status"], columns=["ingested_at"])
    newest = pc.max(table.column("ingested_at")).as_py()
    assert isinstance(newest, datetime)
    return newest


def test_labels_past_the_data_known_at_build_time_are_unknown_not_negative(
    tmp_path: Path, store: dict[str, str], plan: Plan
) -> None:
    """The spine runs 6 h past the archive's end: those labels are null, counted, explained."""
    end_of_data = START + timedelta(days=8)
    stations = entities_in(plan, store, START, end_of_data)
    spine = grid_spine(
        stations,
        end_of_data - timedelta(hours=4),
        end_of_data + timedelta(hours=6),
        timedelta(minutes=10),
        key=plan.key,
    )
    clock = FixedClock(datetime(2024, 6, 1, tzinfo=UTC))
    with OfflineExecutor(plan, store, threads=2) as ex:
        meta = build_training_set(
            ex, spine, tmp_path / "ds", name="edge", label="empty_next_hour", clock=clock
        )
    table = pq.read_table(tmp_path / "ds" / "data.parquet")
    known_until = newest_ingested(store)
    horizon = timedelta(hours=1)
    as_of = table.column("as_of").to_pylist()
    covered = [t + horizon <= known_until for t in as_of]
    assert 0 < sum(covered) < len(covered)
    for name in ("empty_next_hour", "full_next_hour", "bikes_in_60m"):
        values = table.column(name).to_pylist()
        assert all(v is None for v, ok in zip(values, covered, strict=True) if not ok), name
        assert meta.extra[f"unknown_rows.{name}"] == covered.count(False)
    known = [
        v for v, ok in zip(table.column("empty_next_hour").to_pylist(), covered, strict=True) if ok
    ]
    assert None not in known and any(known)
    assert meta.extra["label_unknown_rows"] == covered.count(False)
    assert meta.extra["label_known_until"] == known_until.isoformat()
    reason = str(meta.extra["label_unknown_reason"])
    assert "newest ingested_at" in reason and "'station_status'" in reason
    rate = meta.extra["label_rate"]  # over the known labels only
    assert isinstance(rate, float)
    assert rate == pytest.approx(sum(bool(v) for v in known) / len(known))


def test_a_dataset_is_never_overwritten(tmp_path: Path, platform: Platform) -> None:
    out = tmp_path / "datasets" / "sep"
    day = START + timedelta(days=7)
    build = functools.partial(
        build_dataset_published,
        platform,
        label="empty_next_hour",
        every=timedelta(minutes=30),
        out=out,
        project=REPO / "examples" / "bikeshare",
    )
    first = build(start=day, end=day + timedelta(hours=3))
    assert first.status == "written" and first.metadata.path == str(out)
    assert first.metadata.dataset_name == "sep"
    data = (out / "data.parquet").read_bytes()
    again = build(start=day, end=day + timedelta(hours=3))
    assert again.status == "unchanged" and again.metadata == first.metadata
    with pytest.raises(DatasetExistsError, match="datasets are immutable") as info:
        build(start=day, end=day + timedelta(hours=4))
    assert info.value.reason == "dataset_exists"
    with pytest.raises(DatasetExistsError, match="immutable"):
        build(start=day, end=day + timedelta(hours=3), label="full_next_hour")
    assert (out / "data.parquet").read_bytes() == data  # untouched by the refusals
    assert [p.name for p in out.parent.iterdir()] == ["sep"]  # no staging left behind

    replaced = build(start=day, end=day + timedelta(hours=4), force=True)
    assert replaced.status == "replaced"
    assert DatasetMetadata.read(out / "_metadata.json") == replaced.metadata
    # once a registered model was trained on it, not even --force replaces it
    TrainingMetadata(
        run_id="r1",
        model_name="bikeshare-empty_next_hour",
        model_version="3",
        input_dataset_name=replaced.metadata.dataset_name,
        input_dataset_version=replaced.metadata.dataset_version,
        started_at=START,
        completed_at=START,
        artifact_path="bundles/x",
    ).write(platform.data.lineage / "training" / "bikeshare-empty_next_hour-v3.json")
    with pytest.raises(DatasetExistsError, match="version 3 was trained on") as info:
        build(start=day, end=day + timedelta(hours=3), force=True)
    assert info.value.reason == "dataset_in_use"
    assert DatasetMetadata.read(out / "_metadata.json") == replaced.metadata


def test_an_output_that_holds_something_else_is_refused(tmp_path: Path, platform: Platform) -> None:
    day = START + timedelta(days=7)
    build = functools.partial(
        build_dataset_published,
        platform,
        label="empty_next_hour",
        start=day,
        end=day + timedelta(hours=1),
        every=timedelta(minutes=30),
        project=REPO / "examples" / "bikeshare",
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DatasetExistsError, match="holds no dataset"):
        build(out=tmp_path / "notes")
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetExistsError, match="is a file"):
        build(out=tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert build(out=tmp_path / "empty").status == "written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "notes"]
