"""The asset graph materialized in-process over a real small simulated city: an archive
imported by ``offline_store``, online vectors, a fresh training set, a registered model, a
served prediction, monitoring results on disk and a loop cycle; then the retraining sensor on
that state (nothing fires; a week later the model is stale and it requests training)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    RunConfig,
    RunRequest,
    SkipReason,
    build_sensor_context,
    materialize,
)

from dockline.core.errors import ConfigError
from dockline.orchestration import DocklineResource
from dockline.orchestration.assets import (
    ALL_ASSETS,
    MONITORING,
    LoopConfig,
    OfflineStoreConfig,
    TrainingSetConfig,
    loop_state,
    results_path,
    training_set,
)
from dockline.orchestration.automation import retraining_sensor
from dockline.pipeline.lineage import record_alias_move
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.pipeline.train import open_registry
from dockline.sim import CityConfig, write_archive

# small and quick: one candidate, no tuning; the loop's fresh window fits the 3-day archive
TOML = """\
[train]
candidates = ["logistic"]
n_trials = 0
cv_folds = 2

[monitor.loop]
train_window = "2d"
train_every = "20m"
"""


@dataclass
class City:
    data: Path
    archive: Path
    at: datetime
    result: ExecuteInProcessResult
    monitoring: ExecuteInProcessResult
    instance: DagsterInstance


def _metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, object]:
    [event] = result.asset_materializations_for_node(asset)
    assert event.asset_key == AssetKey(asset)
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    tmp = tmp_path_factory.mktemp("orchestrated-city")
    archive = write_archive(
        CityConfig(stations=20, seed=5, step=timedelta(minutes=5)), 3, tmp / "archive"
    )
    data = tmp / "data"
    data.mkdir()
    (data / "dockline.toml").write_text(TOML, encoding="utf-8")
    at = archive.last_ts + timedelta(minutes=2)
    resource = DocklineResource(data_dir=str(data), at=at.isoformat())
    instance = DagsterInstance.ephemeral(tempdir=str(tmp / "dagster"))
    result = materialize(
        ALL_ASSETS,
        resources={"dockline": resource},
        instance=instance,
        run_config=RunConfig(
            ops={
                "offline_store": OfflineStoreConfig(archive=str(tmp / "archive"), source="sim"),
                # nothing to shadow yet, so the cycle never calls serving
                "loop_state": LoopConfig(serve_url="http://127.0.0.1:9"),
            }
        ),
    )
    platform = Platform.open(data, existing=True)
    model = _metadata(result, "model")
    if model["alias"] != "champion":  # a tiny city may not beat persistence: serve it anyway
        moved = open_registry(platform).set_alias(
            str(model["model_name"]),
            "champion",
            int(str(model["version"])),
            actor="test",
            reason="orchestration test: serve the model the graph trained",
            action="promote",
        )
        record_alias_move(platform, moved)
    # a few real predictions, so monitoring has a deployment and a prediction log to judge
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for station in ("s0002", "s0009", "s0014"):
            r = client.post("/v1/predict", json={"entity": station})
            assert r.status_code == 200, r.text
    monitoring = materialize(
        [a for a in ALL_ASSETS if a.group_names_by_key[a.key] == MONITORING],
        # as of two minutes on: serving's last (partial) minute window has closed by then
        resources={
            "dockline": DocklineResource(
                data_dir=str(data), at=(datetime.now(UTC) + timedelta(minutes=2)).isoformat()
            )
        },
        instance=instance,
    )
    yield City(data, tmp / "archive", at, result, monitoring, instance)


@pytest.mark.slow
def test_the_whole_graph_materializes_with_real_outputs(city: City) -> None:
    assert city.result.success
    offline = _metadata(city.result, "offline_store")
    assert offline["accepted"] == offline["received"] > 0
    assert offline["rows"] == offline["rows_written"]
    assert offline["partitions"] >= 3  # three days of station status, and the information
    online = _metadata(city.result, "online_features")
    assert online["entities"] == 20
    training = _metadata(city.result, "training_set")
    assert int(str(training["rows"])) > 0
    assert Path(str(training["dataset_path"])).name.startswith("dagster-")
    model = _metadata(city.result, "model")
    platform = Platform.open(city.data, existing=True)
    registered = {
        v.version: v.bundle_id for v in open_registry(platform).versions(str(model["model_name"]))
    }
    assert registered == {model["version"]: model["bundle_id"]}
    assert (platform.data.bundles / str(model["bundle_id"])).is_dir()
    [check] = city.result.get_asset_check_evaluations()
    assert check.check_name == "gate"
    assert check.passed == model["gate_passed"]
    loop = _metadata(city.result, "loop_state")
    assert loop["phase"] == "idle"
    assert (platform.data.monitoring / "loop.json").is_file()


@pytest.mark.slow
def test_monitoring_results_are_written_where_the_docs_say(city: City) -> None:
    assert city.monitoring.success
    platform = Platform.open(city.data, existing=True)
    health = json.loads(results_path(platform, "deployment_health").read_text())
    assert len(health["deployments"]) == 1
    assert health["deployments"][0]["model_version"] == "1"  # the seed contract: a string
    assert _metadata(city.monitoring, "deployment_health")["deployments"] == 1
    drift = json.loads(results_path(platform, "drift").read_text())
    assert [b["rows"] for b in drift["bundles"]] == [3]
    performance = json.loads(results_path(platform, "live_performance").read_text())
    assert performance["rows"] == 3
    assert _metadata(city.monitoring, "live_performance")["predictions"] == 3
    freshness = json.loads(results_path(platform, "freshness").read_text())
    assert {r["kind"] for r in freshness["results"]} >= {"training_data"}


@pytest.mark.slow
def test_the_sensor_skips_on_a_fresh_model_and_requests_training_on_a_stale_one(
    city: City,
) -> None:
    def evaluate(at: datetime) -> RunRequest | SkipReason:
        context = build_sensor_context(
            instance=city.instance,
            resources={"dockline": DocklineResource(data_dir=str(city.data), at=at.isoformat())},
        )
        result = retraining_sensor(context)
        assert isinstance(result, RunRequest | SkipReason)
        return result

    fresh = evaluate(city.at)
    assert isinstance(fresh, SkipReason)
    assert fresh.skip_message is not None
    assert "champion's training data is" in fresh.skip_message
    stale = evaluate(city.at + timedelta(days=8))
    assert isinstance(stale, RunRequest)
    assert stale.tags["dockline/triggers"] == "stale_model"


@pytest.mark.slow
def test_the_loop_cycle_leaves_training_to_the_training_job(city: City) -> None:
    """A week on, the stale-model trigger fires in the cycle too, but with ``train`` off (the
    default here) the cycle reports it and trains nothing: the sensor's training job does."""
    platform = Platform.open(city.data, existing=True)
    name = str(_metadata(city.result, "model")["model_name"])
    before = [v.version for v in open_registry(platform).versions(name)]
    result = materialize(
        [loop_state],
        resources={
            "dockline": DocklineResource(
                data_dir=str(city.data), at=(city.at + timedelta(days=8)).isoformat()
            )
        },
        instance=city.instance,
        run_config=RunConfig(ops={"loop_state": LoopConfig(serve_url="http://127.0.0.1:9")}),
    )
    loop = _metadata(result, "loop_state")
    assert loop["phase"] == "idle"
    fired = loop["triggers_fired"]
    assert isinstance(fired, list)
    assert any("champion's training data is" in reason for reason in fired)
    assert loop["actions"] == []
    assert [v.version for v in open_registry(platform).versions(name)] == before


@pytest.mark.slow
def test_a_training_set_over_a_given_range(city: City) -> None:
    start, end = city.at - timedelta(days=2), city.at - timedelta(days=1)
    resources = {"dockline": DocklineResource(data_dir=str(city.data))}
    result = materialize(
        [training_set],
        resources=resources,
        instance=city.instance,
        run_config=RunConfig(
            ops={
                "training_set": TrainingSetConfig(
                    start=start.isoformat(), end=end.isoformat(), every="1h"
                )
            }
        ),
    )
    meta = _metadata(result, "training_set")
    path = Path(str(meta["dataset_path"]))
    assert path.name == f"dagster-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    assert meta["rows"] == 20 * 24  # every station, every hour of one day
    with pytest.raises(ConfigError, match="training_set: give both start and end, or neither"):
        materialize(
            [training_set],
            resources=resources,
            instance=city.instance,
            run_config=RunConfig(ops={"training_set": TrainingSetConfig(start=start.isoformat())}),
        )
