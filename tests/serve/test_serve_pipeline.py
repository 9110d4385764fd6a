"""The product wiring on a real data directory: a quiet simulated feed → ingest → materialize →
``dockline serve`` → the served vectors recomputed offline at their request times.

Stations go quiet, stop, or report only on change (the simulator's quiet-feed faults); requests
come long after their last reports. What serving answered must be what training would have seen.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from serve_helpers import _verdict, make_bundle

from dockline.core.contracts import IngestSummary
from dockline.core.time import FixedClock
from dockline.pipeline.features import check_served_consistency, load_plan, materialize
from dockline.pipeline.ingest import ingest_feed, sink_offline
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.sim import City, CityConfig, FaultConfig, SimServer
from dockline.train.registry import MlflowRegistry

MINUTES = 45


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class QuietCity:
    platform: Platform
    stations: list[str]
    end: datetime
    summary: IngestSummary


@pytest.fixture(scope="module")
def quiet_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuietCity]:
    root = tmp_path_factory.mktemp("quiet-city")
    faults = FaultConfig(quiet=0.03, quiet_minutes=(10, 40), dead=0.01, on_change=0.3)
    city = City(CityConfig(stations=30, seed=11, faults=faults))
    clock = FixedClock(city.time)
    platform = Platform.open(root / "data", clock=clock)
    end = city.time + timedelta(minutes=MINUTES)
    with SimServer(city, speed=6000.0, clock=clock) as server:

        def advance(summary: IngestSummary) -> None:
            clock.advance(timedelta(minutes=1))

        summary = ingest_feed(
            platform,
            server.url + "/gbfs.json",
            stop=lambda: clock.now() >= end,
            clock_source="feed",
            on_progress=advance,
        )
        stats = server.stats()
    assert stats["faults"]["quiet"] > 0 and stats["held_records"] > 0  # type: ignore[index,operator]
    sink_offline(platform)
    materialize(platform)
    plan = load_plan(platform)
    features = _quiet_safe(plan.feature_names)
    bundle = make_bundle(
        root / "staging", 0, baseline=False, features=features, plan_hash=plan.hash
    )
    registry = MlflowRegistry.for_data_dir(platform.data)
    version = registry.register("main", bundle.path, run_id=None, gate=_verdict()).version
    registry.set_alias("main", "champion", version, actor="test", reason="test", action="promote")
    platform.data.config_file.write_text(
        '[serve]\nmodel_name = "main"\nreload_poll = "1h"\n[clock]\nkind = "data"\n'
    )
    platform = Platform.open(platform.data.root, clock=clock)  # with its settings
    yield QuietCity(platform, list(city.station_ids), end, summary)


def _quiet_safe(names: tuple[str, ...] | list[str]) -> list[str]:
    """Features that stay defined for a quiet station (no NaN into the logistic)."""
    return [
        n
        for n in names
        if (n.endswith("__last") and "is_" not in n) or n in ("hour_of_day", "day_of_week")
    ]


@pytest.mark.slow
def test_vectors_served_long_after_the_last_report_equal_offline_at_request_time(
    quiet_city: QuietCity,
) -> None:
    clock = FixedClock(quiet_city.end + timedelta(seconds=5))
    platform = dataclasses.replace(quiet_city.platform, clock=clock)
    stations = quiet_city.stations
    statuses: dict[str, int] = {}
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        # 45 simulated minutes after the feed stopped, in uneven steps: windows empty out,
        # time_since grows, the hour changes
        for step in range(12):
            for station in stations:
                r = client.post("/v1/predict", json={"entity": station})
                assert r.status_code == 200, r.text
                body = r.json()
                statuses[body["status"]] = statuses.get(body["status"], 0) + 1
                # the age is how old the knowledge is: from the last report or confirmation
                assert body["age_s"] >= (clock.now() - quiet_city.end).total_seconds() - 1e-6
            batch = client.post("/v1/predict/batch", json={"entities": stations})
            assert batch.status_code == 200
            clock.advance(timedelta(seconds=97 + 31 * step))
    assert statuses.get("degraded", 0) > 0  # the stale gate still judges knowledge age
    report = check_served_consistency(quiet_city.platform)
    assert report.compared >= 12 * len(stations)
    bad = {n: f["examples"] for n, f in report.features.items() if f["mismatches"]}
    assert report.mismatches == 0, bad
    assert sum(f["compared"] for f in report.features.values()) == report.compared * len(
        report.features
    )


@pytest.mark.slow
def test_run_server_serves_the_data_directory_with_two_workers(quiet_city: QuietCity) -> None:
    port = _free_port()
    root = str(quiet_city.platform.data.root)
    code = (
        "from dockline.pipeline.platform import Platform\n"
        "from dockline.pipeline.serve import run_server\n"
        f"run_server(Platform.open({root!r}), '127.0.0.1', {port}, workers=2)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        ids = set()
        for _ in range(40):
            r = httpx.post(f"{url}/v1/predict", json={"entity": quiet_city.stations[1]}, timeout=5)
            assert r.status_code == 200 and r.json()["model"]["name"] == "main"
            # [clock] kind = "data": the clock starts at the data's newest ingestion, so the
            # knowledge is minutes old, not years
            assert r.json()["age_s"] < 3600
            ids.add(r.json()["request_id"].split("-")[0])  # the worker's process id
        assert len(ids) >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_a_companion_model_is_served_beside_the_main_one_and_feeds_decide(
    quiet_city: QuietCity,
) -> None:
    """``[serve] companions = ["full_next_hour"]``: the full model answers under
    ``/models/full_next_hour`` from the same vectors, ``/v1/decide`` takes its ``p_full``,
    and its log rows and windows are told apart from the main model's."""
    from dockline.core.config import COMPANION_PREFIX, DecideConfig
    from dockline.core.decisions import decode_decision
    from dockline.core.errors import SourceError
    from dockline.monitor import read_windows
    from dockline.monitor.predictions import read_prediction_log
    from dockline.pipeline.decide_run import read_predictions
    from dockline.pipeline.serve import model_name

    base = quiet_city.platform
    config = base.config.model_copy(
        update={"serve": base.config.serve.model_copy(update={"companions": ("full_next_hour",)})}
    )
    clock = FixedClock(quiet_city.end + timedelta(seconds=5))
    platform = dataclasses.replace(base, config=config, clock=clock)
    full_name = model_name(platform, "full_next_hour")
    assert full_name.endswith("-full_next_hour") and full_name != model_name(platform)
    registry = MlflowRegistry.for_data_dir(platform.data)
    plan = load_plan(platform)
    names = _quiet_safe(plan.feature_names)
    bundle = make_bundle(
        platform.data.root / "staging-full", 1, baseline=False, features=names, plan_hash=plan.hash
    )
    stations = quiet_city.stations
    prefix = f"{COMPANION_PREFIX}full_next_hour"
    body = _decide_body(stations, clock.now())
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        # no champion yet: the companion refuses, /v1/decide goes on with p_full = 0
        missing = client.post(f"{prefix}/v1/predict", json={"entity": stations[0]})
        assert missing.status_code == 503 and missing.json()["reason"] == "no_model"
        first = client.post("/v1/decide", json=body)
        assert first.status_code == 200, first.text
        assert decode_decision(first.content).model_versions == ("empty:1/full:none",)
        # `decide run` reads the companion where it runs and goes on without it elsewhere
        for absent in (prefix, f"{COMPANION_PREFIX}no_such_label"):
            assert read_predictions(client, server.url + absent, stations, optional=True)[0] == {}
        with pytest.raises(SourceError, match="503"):
            read_predictions(client, server.url + prefix, stations)
    version = registry.register(full_name, bundle.path, run_id=None, gate=_verdict()).version
    registry.set_alias(full_name, "champion", version, actor="t", reason="t", action="promote")
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        main = client.post("/v1/predict/batch", json={"entities": stations}).json()
        full = client.post(f"{prefix}/v1/predict/batch", json={"entities": stations}).json()
        assert {p["model"]["name"] for p in full["predictions"]} == {full_name}
        assert {p["model"]["name"] for p in main["predictions"]} == {"main"}
        assert [p["probability"] for p in full["predictions"]] != [
            p["probability"] for p in main["predictions"]
        ]
        read, _ = read_predictions(client, server.url + prefix, stations, optional=True)
        assert {v[1] for v in read.values()} == {str(version)} and len(read) == len(stations)
        decided = decode_decision(client.post("/v1/decide", json=body).content)
        assert decided.model_versions == (f"empty:1/full:{version}",)
        assert DecideConfig().full_label == "full_next_hour"
    rows = read_prediction_log(platform.data.serving_predictions)
    assert set(rows["model_name"].to_pylist()) == {"main", full_name}
    mine = read_prediction_log(platform.data.serving_predictions, exclude_models=[full_name])
    assert 0 < mine.num_rows < rows.num_rows and set(mine["model_name"].to_pylist()) == {"main"}
    windows = read_windows(platform.data.serving_metrics).windows
    assert {("local", "main"), ("local-full_next_hour", full_name)} <= {
        (w.deployment_id, w.model_name) for w in windows
    }  # (beside the other tests' two-worker windows, local-<pid>)


def _decide_body(stations: list[str], now: datetime) -> dict[str, object]:
    return {
        "stations": [
            {
                "station_id": sid,
                "bikes": 3,
                "docks": 7,
                "capacity": 10,
                "lat": 41.88 + i * 1e-3,
                "lon": -87.63,
                "as_of": now.isoformat(),
                "age_s": 0.0,
            }
            for i, sid in enumerate(stations)
        ]
    }


def test_a_companion_label_the_plan_lacks_is_a_config_error(quiet_city: QuietCity) -> None:
    from dockline.core.errors import ConfigError
    from dockline.pipeline.serve import model_name

    with pytest.raises(ConfigError, match="no label 'full_next_hours'"):
        model_name(quiet_city.platform, "full_next_hours")
