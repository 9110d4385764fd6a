"""Lineage end to end on a small real data dir: a simulated archive ingested, the offline store,
a PIT dataset, a trained and registered model, served over HTTP — then every job's OpenLineage
events, and ``dockline lineage trace`` from one prediction back to the log offsets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from dockline.cli._lineage import lineage_app
from dockline.core.contracts import TOPIC_STATION_STATUS, DatasetMetadata
from dockline.core.errors import NotFoundError
from dockline.core.time import FixedClock
from dockline.pipeline.features import build_dataset, materialize
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.lineage import read_events, record_alias_move, trace
from dockline.pipeline.monitor import health
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.pipeline.train import TrainSummary, open_registry, train_model
from dockline.sim import CityConfig, write_archive

FAST = '[train]\ncandidates = ["logistic"]\nn_trials = 0\ncv_folds = 2\n'

root = typer.Typer()


@root.callback()
def _root(data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None) -> None:
    """The root app's --data-dir, as dockline's root callback declares it."""


root.add_typer(lineage_app, name="lineage")
runner = CliRunner()


@dataclass
class City:
    platform: Platform
    dataset: DatasetMetadata
    summary: TrainSummary
    request_ids: list[str]
    stations: list[str]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    tmp = tmp_path_factory.mktemp("lineage-city")
    archive = write_archive(
        CityConfig(stations=25, seed=3, step=timedelta(minutes=5)), 4, tmp / "archive"
    )
    (tmp / "data").mkdir()
    (tmp / "data" / "dockline.toml").write_text(FAST, encoding="utf-8")
    clock = FixedClock(archive.last_ts + timedelta(minutes=2))
    platform = Platform.open(tmp / "data", clock=clock)
    ingest_archive(platform, tmp / "archive", source="archive:lineage")
    sink_offline(platform)
    materialize(platform)
    out = platform.data.datasets / "lineage-empty"
    meta = build_dataset(
        platform,
        label="empty_next_hour",
        start=archive.first_ts + timedelta(hours=12),
        end=archive.last_ts - timedelta(hours=1),
        every=timedelta(minutes=20),
        out=out,
    )
    summary = train_model(platform, dataset=out, actor="test")
    registry = open_registry(platform)
    if summary.alias != "champion":  # a tiny city may not beat persistence: serve it anyway
        event = registry.set_alias(
            summary.model_name,
            "champion",
            summary.version,
            actor="test",
            reason="lineage test",
            action="promote",
        )
        record_alias_move(platform, event)
    stations = sorted({str(s) for s in _stations(platform)})[:5]
    ids: list[str] = []
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for station in stations:
            r = client.post("/v1/predict", json={"entity": station})
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
    health(platform)  # a monitor run
    yield City(platform, meta, summary, ids, stations)


def _stations(platform: Platform) -> list[str]:
    import pyarrow.parquet as pq

    files = sorted(platform.data.offline(TOPIC_STATION_STATUS).rglob("p*.parquet"))
    return pq.read_table(files[0], columns=["station_id"])["station_id"].to_pylist()


def _completed(platform: Platform, job: str) -> list[dict[str, Any]]:
    return [
        e for e in read_events(platform) if e["job"]["name"] == job and e["eventType"] == "COMPLETE"
    ]


@pytest.mark.slow
def test_every_job_left_a_start_and_a_complete_event_with_the_same_run(city: City) -> None:
    events = list(read_events(city.platform))
    jobs = {e["job"]["name"] for e in events}
    assert {
        "ingest",
        "materialize",
        "dataset_build",
        "training",
        "registration",
        "alias_move",
        "serving_deployment",
        "monitor",
    } <= jobs
    by_run: dict[str, list[str]] = {}
    for e in events:
        by_run.setdefault(e["run"]["runId"], []).append(e["eventType"])
    assert all(states == ["START", "COMPLETE"] for states in by_run.values()), by_run
    files = sorted(city.platform.data.lineage.glob("openlineage-*.ndjson"))
    assert files and all(
        f.name[12:22] == e
        for f, e in zip(files, sorted({ev["eventTime"][:10] for ev in events}), strict=True)
    )


@pytest.mark.slow
def test_the_dataset_build_carries_schema_rows_sha256_plan_hash_and_quality(city: City) -> None:
    event = _completed(city.platform, "dataset_build")[0]  # the fixture's build
    (out,) = event["outputs"]
    meta = city.dataset
    assert out["name"] == "datasets/lineage-empty"
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == meta.columns
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == meta.row_count
    facet = out["facets"]["dockline"]
    assert facet["sha256"] == {f.path: f.sha256 for f in meta.files}
    assert facet["planHash"] == meta.extra["plan_hash"]
    assert facet["extra"]["label_rate"] == meta.extra["label_rate"]
    assert out["facets"]["version"]["datasetVersion"] == meta.dataset_version
    sources = {i["name"]: i["facets"]["dockline"]["contentHash"] for i in event["inputs"]}
    assert sources == {
        f"offline/{k.removeprefix('source_hash.')}": v
        for k, v in meta.extra.items()
        if k.startswith("source_hash.")
    }
    assert event["run"]["facets"]["dockline"]["durationSeconds"] > 0


@pytest.mark.slow
def test_training_and_registration_name_the_dataset_and_the_bundle(city: City) -> None:
    (train,) = _completed(city.platform, "training")
    assert [i["name"] for i in train["inputs"]] == ["datasets/lineage-empty"]
    quality = train["inputs"][0]["inputFacets"]["dataQualityMetrics"]
    assert quality["rowCount"] == city.dataset.row_count
    (bundle,) = train["outputs"]
    assert bundle["name"] == f"bundles/{city.summary.bundle_id}"
    files = bundle["facets"]["dockline"]["sha256"]
    assert "model.onnx" in files and all(len(v) == 64 for v in files.values())
    (reg,) = _completed(city.platform, "registration")
    assert reg["outputs"][0]["name"] == f"registry/{city.summary.model_name}/v1"
    moves = _completed(city.platform, "alias_move")
    assert moves[-1]["outputs"][0]["name"] == f"registry/{city.summary.model_name}@champion"
    (serving,) = _completed(city.platform, "serving_deployment")
    assert serving["inputs"][0]["name"] == f"bundles/{city.summary.bundle_id}"


@pytest.mark.slow
def test_a_prediction_traces_back_to_the_log_offsets(city: City) -> None:
    result = trace(city.platform, city.request_ids[0]).to_dict()
    assert result["problems"] == []
    kinds = [s["kind"] for s in result["steps"]]
    assert kinds[:5] == ["prediction", "bundle", "training_run", "dataset", "plan"]
    assert {"offline_partitions", "log_offsets"} <= set(kinds[5:])
    steps = {(s["kind"], s["id"]): s for s in result["steps"]}
    prediction = result["steps"][0]
    assert prediction["entity"] == city.stations[0]
    assert prediction["bundle_id"] == city.summary.bundle_id
    assert (
        steps["training_run", next(k[1] for k in steps if k[0] == "training_run")]["bundle_id"]
        == city.summary.bundle_id
    )
    status = steps["offline_partitions", TOPIC_STATION_STATUS]
    assert status["unchanged_since_build"] is True and status["rows"] > 0
    offsets = steps["log_offsets", TOPIC_STATION_STATUS]["partitions"]
    log = city.platform.open_log()
    try:
        ends = log.end_offsets(TOPIC_STATION_STATUS)
    finally:
        log.close()
    # the offline partitions hold every record of the log, offset 0 to the last
    assert {int(p): (r["first"], r["last"]) for p, r in offsets.items()} == {
        p: (0, end - 1) for p, end in ends.items() if end
    }


@pytest.mark.slow
def test_the_cli_traces_a_bundle_and_refuses_an_unknown_id(city: City) -> None:
    data_dir = str(city.platform.data.root)
    result = runner.invoke(
        root, ["--data-dir", data_dir, "lineage", "trace", city.summary.bundle_id, "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["start"] == city.summary.bundle_id
    assert [s["kind"] for s in body["steps"]][:3] == ["bundle", "training_run", "dataset"]
    table = runner.invoke(root, ["--data-dir", data_dir, "lineage", "trace", city.request_ids[1]])
    assert table.exit_code == 0 and "log_offsets" in table.output
    unknown = runner.invoke(root, ["--data-dir", data_dir, "lineage", "trace", "r-nope"])
    assert isinstance(unknown.exception, NotFoundError)
    assert unknown.exception.reason == "unknown_id"


@pytest.mark.slow
def test_building_the_same_dataset_again_is_a_second_run_not_a_duplicate(city: City) -> None:
    assert isinstance(city.platform.clock, FixedClock)
    platform = Platform(
        data=city.platform.data,
        config=city.platform.config,
        clock=FixedClock(city.platform.clock.now() + timedelta(minutes=5)),
    )
    meta = city.dataset
    again = build_dataset(
        platform,
        label="empty_next_hour",
        start=_spine_start(meta),
        end=_spine_end(meta),
        every=timedelta(minutes=20),
        out=Path(meta.path),
    )
    assert again.content_hash == meta.content_hash  # kept as it was
    first, second = _completed(platform, "dataset_build")[-2:]
    assert first["run"]["runId"] != second["run"]["runId"]
    assert second["eventTime"] > first["eventTime"]


def _spine_start(meta: DatasetMetadata) -> Any:
    assert meta.time_range_start is not None
    return meta.time_range_start


def _spine_end(meta: DatasetMetadata) -> Any:
    assert meta.time_range_end is not None
    return meta.time_range_end + timedelta(minutes=20)
