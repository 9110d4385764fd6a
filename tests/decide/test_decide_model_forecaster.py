"""``decide evaluate --forecaster model``: what the evaluation scores with is what a deployment
would have served — vectors equal to the offline point-in-time features of the same city's
ingested history, probabilities equal to the serving API's for the same champion."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from dockline.cli._decide import decide_app
from dockline.core.contracts import TS_TYPE
from dockline.core.errors import ConfigError
from dockline.core.time import FixedClock
from dockline.features.consistency import values_match
from dockline.pipeline.decide import EvalConfig, run_policy
from dockline.pipeline.decide_model import ModelForecaster, ModelSource
from dockline.pipeline.features import load_plan, materialize, offline_executor
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.sim import City, CityConfig, write_archive
from dockline.train.registry import MlflowRegistry

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_helpers import _verdict, make_bundle

START = datetime(2024, 5, 6, 5, tzinfo=UTC)  # Monday 00:00 in Chicago
MINUTES = 6 * 60
EVERY = 15
# Features a logistic on synthetic weights can take without saturating: ratios and the
# neighbourhood (a batch feature, computed every 5 minutes from the offline store).
MODEL_FEATURES = ["fill_ratio", "neighbour_fill_k5", "neighbour_fill_gap", "is_renting__last"]


@dataclasses.dataclass
class Deployed:
    platform: Platform
    config: CityConfig
    end: datetime


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """Six hours of a 30-station city, imported, landed and materialized as a user would, with
    a champion registered on the data dir's plan."""
    root = tmp_path_factory.mktemp("model-forecaster")
    config = CityConfig(stations=30, seed=5, start=START)
    write_archive(config, MINUTES / 1440, root / "archive")
    end = START + timedelta(minutes=MINUTES - 1)  # the archive's last step
    data = root / "data"
    data.mkdir()
    (data / "dockline.toml").write_text(
        '[serve]\nmodel_name = "main"\nreload_poll = "1h"\n[clock]\nkind = "data"\n'
    )
    platform = Platform.open(data, clock=FixedClock(end))
    ingest_archive(platform, root / "archive")
    sink_offline(platform)
    materialize(platform)
    plan = load_plan(platform)
    bundle = make_bundle(
        root / "staging", 3, baseline=False, features=MODEL_FEATURES, plan_hash=plan.hash
    )
    registry = MlflowRegistry.for_data_dir(platform.data)
    version = registry.register("main", bundle.path, run_id=None, gate=_verdict()).version
    registry.set_alias("main", "champion", version, actor="test", reason="test", action="promote")
    yield Deployed(platform, config, end)


@pytest.mark.slow
def test_the_evaluation_scores_what_offline_features_and_serving_give(
    deployed: Deployed,
) -> None:
    platform = deployed.platform
    source = ModelSource.from_platform(platform)
    assert source.full is None and source.version == "empty:1/full:none"
    city = City(deployed.config)  # the archive's city, replayed minute by minute
    seen: list[pa.Table] = []
    with ModelForecaster(source, city) as forecaster:
        for minute in range(MINUTES):
            forecaster.observe()
            if minute % EVERY == 0 or minute == MINUTES - 1:
                seen.append(forecaster.vectors())
            if minute < MINUTES - 1:
                city.step()
        predictions = forecaster.predictions()
        assert forecaster.rejected == 0
    assert city.time == deployed.end
    # 1. every vector equals the offline engine's point-in-time features at that time
    online = pa.concat_tables(seen)
    spine = online.select(["station_id", "as_of"]).cast(
        pa.schema([("station_id", pa.string()), ("as_of", TS_TYPE)])
    )
    with offline_executor(platform, source.plan) as offline:
        expected = offline.features(spine)
    by_key = {(r["station_id"], r["as_of"]): r for r in expected.to_pylist()}
    names = source.plan.feature_names
    assert len(by_key) == online.num_rows == len(seen) * 30
    mismatches = [
        (
            row["station_id"],
            row["as_of"],
            name,
            row[name],
            by_key[(row["station_id"], row["as_of"])][name],
        )
        for row in online.to_pylist()
        for name in names
        if not values_match(row[name], by_key[(row["station_id"], row["as_of"])][name])
    ]
    assert mismatches == []
    known = [
        r["neighbour_fill_k5"] for r in online.to_pylist() if r["neighbour_fill_k5"] is not None
    ]
    assert len(known) > online.num_rows // 2  # the batch feature was computed, not all null
    # 2. the probabilities equal the serving API's for the same champion at the same time
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        ids = list(city.station_ids)
        r = client.post("/v1/predict/batch", json={"entities": ids})
        assert r.status_code == 200, r.text
        served = {p["entity"]: p["probability"] for p in r.json()["predictions"]}
    ours = {p.station_id: p.p_empty for p in predictions}
    assert served.keys() == ours.keys()
    assert max(abs(served[s] - ours[s]) for s in ids) < 1e-6
    assert len({round(v, 3) for v in ours.values()}) > 5  # not a saturated constant
    assert {p.model_version for p in predictions} == {"empty:1/full:none"}
    assert {p.p_full for p in predictions} == {0.0}


@pytest.mark.slow
def test_an_evaluation_with_the_model_is_deterministic_and_labelled(
    deployed: Deployed, tmp_path: Path
) -> None:
    source = ModelSource.from_platform(deployed.platform)
    config = EvalConfig(
        stations=40,
        days=0.25,
        seeds=1,
        trucks=3,
        moves_per_day=20,
        start=START + timedelta(hours=5),
        forecaster="model",
        models=source,
    )
    decisions: list[object] = []
    first = run_policy("predictive", 2, config, on_decision=decisions.append)
    again = run_policy("predictive", 2, config)
    assert first[0] == again[0] and (first[1] == again[1]).all()
    assert decisions and all(
        d.model_versions == ("empty:1/full:none",)
        for d in decisions  # type: ignore[attr-defined]
    )
    with pytest.raises(ConfigError, match="needs the champions"):
        EvalConfig(forecaster="model")
    # the command: one line for a data dir without a champion, the model's label in --json
    runner = CliRunner()
    empty = tmp_path / "empty"
    (empty / "offline").mkdir(parents=True)
    (empty / "dockline.toml").write_text("")
    bad = runner.invoke(
        decide_app, ["evaluate", "--forecaster", "model", "--data-dir", str(empty), "--days", "0.1"]
    )
    assert bad.exit_code != 0
    ok = runner.invoke(
        decide_app,
        [
            "evaluate",
            "--forecaster",
            "model",
            "--data-dir",
            str(deployed.platform.data.root),
            "--days",
            "0.05",
            "--seeds",
            "1",
            "--stations",
            "20",
            "--policies",
            "none,predictive",
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    forecaster = json.loads(ok.output)["config"]["forecaster"]
    assert forecaster == f"model:empty:1/full:none:{source.bundle_id}"
