"""Seed 002's monitoring endpoints and the ml_* metrics in the serving app.

The endpoints' plumbing runs on the shared serving world (fast); the verdicts and the metrics on
a small simulated city served by the product wiring (``create_serving_app``), scraped by a
real Prometheus and queried through its HTTP API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serve_helpers import T0, Server, World, _verdict, make_bundle

from dockline.core.bundle import write_bundle
from dockline.core.config import DataDir, ServeConfig
from dockline.core.errors import NotFoundError
from dockline.core.time import FixedClock
from dockline.pipeline.features import build_dataset, load_plan, materialize
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.pipeline.serve_monitoring import retraining_trigger
from dockline.serve import create_app
from dockline.sim import CityConfig, write_archive
from dockline.train.export import drift_baseline
from dockline.train.registry import MlflowRegistry

PROMETHEUS_HINT = "Prometheus is not installed: apt-get install prometheus (or `make servers`)"


def _app(world: World, tmp_path: Path, monitoring: dict[str, Any]) -> Any:
    return create_app(
        store=world.store,
        registry=world.registry,
        model_name="main",
        config=ServeConfig(reload_poll=timedelta(hours=1)),
        data_dir=DataDir(tmp_path / "out"),
        clock=FixedClock(T0),
        monitoring=monitoring,
    )


def test_endpoints_answer_the_providers_body_or_a_reason(world: World, tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("disk on fire: /secret/path")

    def missing() -> dict[str, Any]:
        raise NotFoundError("no windows yet", reason="not_found", where="serving/metrics")

    app = _app(world, tmp_path, {"health": lambda: {"deployments": []}, "drift": broken})
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        ok = client.get("/v1/monitoring/health")
        assert ok.status_code == 200 and ok.json() == {"deployments": []}
        failed = client.get("/v1/monitoring/drift")
        assert failed.status_code == 503
        assert failed.json()["reason"] == "monitoring_unavailable"
        assert "secret" not in failed.text  # the cause goes to the log, not to the client
        absent = client.get("/v1/monitoring/retraining_trigger")
        assert absent.status_code == 404 and absent.json()["reason"] == "not_configured"
        assert client.post("/v1/monitoring/health").status_code == 405
    app = _app(world, tmp_path, {"health": missing})
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/v1/monitoring/health")
        assert r.status_code == 404 and r.json()["reason"] == "not_found"


def test_an_unknown_provider_name_is_refused(world: World, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="monitoring providers must be in"):
        _app(world, tmp_path, {"healthz": dict})


def test_ml_prediction_total_counts_by_role_without_entity_labels(
    world: World, tmp_path: Path
) -> None:
    from serve_helpers import FRESH

    with (
        Server(_app(world, tmp_path, {})) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for entity in FRESH[:3]:
            assert client.post("/v1/predict", json={"entity": entity}).status_code == 200
        text = client.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("ml_prediction_total")]
    assert 'ml_prediction_total{role="champion"} 3.0' in lines
    assert all("entity" not in line and "station" not in line for line in lines)


def test_the_retraining_trigger_says_why() -> None:
    drift = [
        {
            "drift": True,
            "share": 0.6,
            "bundle_id": "b1",
            "dataset_window": {"drifted": ["a", "b", "c", "d", "e", "f"]},
        }
    ]
    fresh = [{"kind": "training_data", "status": "FRESH", "freshness_seconds": 10.0}]
    stale = [
        {
            "kind": "training_data",
            "status": "STALE",
            "freshness_seconds": 8 * 86400.0,
            "threshold_seconds": 7 * 86400.0,
        }
    ]
    window = {"bundle_id": "b1", "metrics": {"pr_auc": {"value": 0.3, "low": 0.2, "high": 0.39}}}
    reference = {"b1": {"pr_auc": 0.4}}
    quiet = retraining_trigger([{**drift[0], "drift": False}], fresh, [window], {"b1": {}})
    assert quiet == {
        "retrain": False,
        "reasons": [],
        "checks": {"drift": False, "stale_model": False, "performance_below_reference": False},
    }
    loud = retraining_trigger(drift, stale, [window], reference)
    assert loud["retrain"] and list(loud["checks"].values()) == [True, True, True]
    assert loud["reasons"][0] == "drift: 60% of features drifted in bundle b1 (a, b, c, d, e…)"
    assert loud["reasons"][1].startswith("stale model: the champion's training data is 8.0 days")
    assert "PR-AUC 0.300" in loud["reasons"][2] and "0.400" in loud["reasons"][2]
    # an interval that reaches the reference is not evidence of a drop
    touching = {**window, "metrics": {"pr_auc": {"value": 0.3, "low": 0.2, "high": 0.4}}}
    assert not retraining_trigger([], fresh, [touching], reference)["retrain"]


# ------------------------------------------------------------------ a city served for real


@dataclass
class City:
    platform: Platform
    stations: list[str]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> City:
    tmp = tmp_path_factory.mktemp("monitoring-city")
    archive = write_archive(
        CityConfig(stations=15, seed=5, step=timedelta(minutes=5)), 1.5, tmp / "archive"
    )
    clock = FixedClock(archive.last_ts + timedelta(minutes=2))
    platform = Platform.open(tmp / "data", clock=clock)
    ingest_archive(platform, tmp / "archive", source="archive:monitoring")
    sink_offline(platform)
    materialize(platform)
    meta = build_dataset(  # a dataset build: ml_dataset_build_duration_seconds counts one
        platform,
        label="empty_next_hour",
        start=archive.first_ts + timedelta(hours=12),
        end=archive.last_ts - timedelta(hours=1),
        every=timedelta(hours=1),
        out=platform.data.datasets / "hourly",
    )
    plan = load_plan(platform)
    features = [
        n
        for n in plan.feature_names
        if (n.endswith("__last") and "is_" not in n) or n in ("hour_of_day", "day_of_week")
    ]
    synthetic = make_bundle(
        tmp / "staging", 0, baseline=False, features=features, plan_hash=plan.hash
    )
    # the same model with the dataset's distributions as its drift baseline (as training writes)
    table = pq.read_table(Path(meta.path) / "data.parquet", columns=features)
    matrix = np.column_stack([table[n].to_numpy(zero_copy_only=False) for n in features])
    bundle = write_bundle(
        tmp / "bundles",
        synthetic.manifest,
        {"model.onnx": synthetic.file("model.onnx").read_bytes()},
        drift_baseline(matrix.astype(np.float64), features),
    )
    registry = MlflowRegistry.for_data_dir(platform.data)
    version = registry.register("main", bundle.path, run_id=None, gate=_verdict()).version
    registry.set_alias("main", "champion", version, actor="test", reason="test", action="promote")
    platform.data.config_file.write_text(
        '[serve]\nmodel_name = "main"\nreload_poll = "1h"\ndeployment_id = "city-a"\n'
    )
    platform = Platform.open(platform.data.root, clock=clock)
    stations = sorted(plan_stations(platform))[:10]
    return City(platform, stations)


def plan_stations(platform: Platform) -> set[str]:
    files = sorted(platform.data.offline("station_status").rglob("p*.parquet"))
    return {str(s) for f in files for s in pq.read_table(f, columns=["station_id"])["station_id"]}


@dataclass
class Served:
    server: BackgroundServer
    clock: FixedClock


@pytest.fixture
def served(city: City) -> Iterator[Served]:
    """The city's app, after 3 minutes of traffic (the metrics windows are on disk)."""
    assert isinstance(city.platform.clock, FixedClock)
    clock = FixedClock(city.platform.clock.now())
    platform = replace(city.platform, clock=clock)
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for _ in range(3):
            for station in city.stations:
                r = client.post("/v1/predict", json={"entity": station})
                assert r.status_code == 200, r.text
            clock.advance(timedelta(seconds=61))
        deadline = time.monotonic() + 15
        metrics = platform.data.serving_metrics
        predictions = platform.data.serving_predictions
        while not _has_three_windows(metrics) or _rows(predictions) < 3 * len(city.stations):
            assert time.monotonic() < deadline, "serving wrote no windows or prediction log"
            time.sleep(0.2)
        yield Served(server, clock)


def _rows(root: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in root.rglob("*.parquet"))


def _has_three_windows(root: Path) -> bool:
    lines = sum(len(p.read_text().splitlines()) for p in root.rglob("*.jsonl"))
    return lines >= 3


@pytest.mark.slow
def test_the_city_app_serves_health_drift_and_the_retraining_trigger(served: Served) -> None:
    with httpx.Client(base_url=served.server.url, timeout=30) as client:
        health = client.get("/v1/monitoring/health")
        assert health.status_code == 200, health.text
        (state,) = health.json()["deployments"]
        assert state["deployment_id"] == "city-a" and state["model_name"] == "main"
        assert state["status"] in ("healthy", "degraded", "unhealthy")
        drift = client.get("/v1/monitoring/drift")
        assert drift.status_code == 200, drift.text
        body = drift.json()
        assert isinstance(body["drift"], bool) and body["features"]
        assert body["bundles"][0]["rows"] == 30
        trigger = client.get("/v1/monitoring/retraining_trigger").json()
        assert trigger["retrain"] == bool(trigger["reasons"])
        assert trigger["checks"]["drift"] == body["drift"]


def _prometheus() -> str | None:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{PROMETHEUS_HINT}; under CI=true this is a failure", pytrace=False)
        pytest.skip(PROMETHEUS_HINT)
    return found


def _query(client: httpx.Client, expr: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/query", params={"query": expr})
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_ml_metrics(served: Served, tmp_path: Path) -> None:
    binary = _prometheus()
    # the first scrape computes every verdict (files, registry, DuckDB); do it once here so
    # Prometheus's short scrape timeout meets the cached answers (30 s) on a loaded machine
    assert httpx.get(served.server.url + "/metrics", timeout=60).status_code == 200
    target = served.server.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
        f"scrape_configs:\n  - job_name: dockline\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as prom:
            deadline = time.monotonic() + 60
            while True:
                try:
                    # 503 until its storage is open: wait for /-/ready before querying
                    if prom.get("/-/ready").status_code != 200:
                        raise httpx.TransportError("not ready")
                    up = _query(prom, 'up{job="dockline"}')
                    health = _query(prom, "ml_deployment_health")
                    if up and up[0]["value"][1] == "1" and health:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "prometheus never scraped the app"
                time.sleep(0.5)
            predictions = _query(prom, 'ml_prediction_total{role="champion"}')
            assert [float(s["value"][1]) for s in predictions] == [30.0]
            states = {s["metric"]["status"]: s["value"][1] for s in health}
            assert sorted(states) == ["degraded", "healthy", "unhealthy"]
            assert sorted(states.values()) == ["0", "0", "1"]
            assert {s["metric"]["deployment"] for s in health} == {"city-a"}
            (built,) = _query(prom, "ml_dataset_build_duration_seconds_count")
            assert built["value"][1] == "1"
            assert _query(prom, "ml_training_duration_seconds_count")[0]["value"][1] == "0"
            kinds = {s["metric"]["kind"] for s in _query(prom, "ml_feature_freshness_seconds")}
            assert {"dataset", "online_vectors", "training_data"} <= kinds
            scores = _query(prom, "ml_drift_score")
            assert scores and all(float(s["value"][1]) >= 0 for s in scores)
            assert _query(prom, "ml_drift_detected")
            # no label anywhere names a station (label cardinality)
            series = prom.get("/api/v1/series", params={"match[]": '{__name__=~"ml_.+"}'}).json()
            labels = {k for s in series["data"] for k in s}
            assert not labels & {"station", "station_id", "entity"}, labels
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (closed again before Prometheus binds it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_verdict_that_fails_leaves_the_scrape_whole(tmp_path: Path) -> None:
    """A prediction log naming a bundle that is gone: drift cannot be judged, /metrics and the
    other series still answer, and the drift endpoint says why (a one-line reason)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from dockline.pipeline.serve_monitoring import ServingMonitor
    from dockline.serve._predlog import PREDICTION_LOG_SCHEMA

    platform = Platform.open(tmp_path / "data", clock=FixedClock(T0))
    row = {
        "request_id": "r-1",
        "logged_at": T0 - timedelta(minutes=5),
        "endpoint": "/v1/predict",
        "entity": "s1",
        "role": "champion",
        "served": True,
        "model_name": "main",
        "model_version": 1,
        "bundle_id": "0123456789abcdef",
        "probability": 0.2,
        "status": "ok",
        "source": "model",
        "latency_ms": 1.0,
        "features": [0.5],
    }
    out = platform.data.serving_predictions / f"date={T0:%Y-%m-%d}" / "part-0.parquet"
    out.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=PREDICTION_LOG_SCHEMA), out)
    monitor = ServingMonitor(platform)
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    text = generate_latest(registry).decode()
    assert "ml_dataset_build_duration_seconds_count 0.0" in text
    assert "ml_drift_score" not in text  # skipped, with a warning in the log
    with pytest.raises(NotFoundError):
        monitor.drift()
