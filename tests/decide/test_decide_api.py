"""`POST /v1/decide` on a real serving app (real bundle, registry, online store) over HTTP."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pyarrow as pa
import pytest

from dockline.core.config import DataDir, DecideConfig, ServeConfig
from dockline.core.contracts import TS_TYPE
from dockline.core.decisions import StationState, Truck, decode_decision
from dockline.core.time import FixedClock, to_micros
from dockline.pipeline.decide_api import DECIDE_PATH, MAX_DECIDE_BODY, add_decide_route
from dockline.pipeline.serve import BackgroundServer
from dockline.serve import create_app
from dockline.sim import City, CityConfig
from dockline.store import SqliteOnlineStore
from dockline.train.registry import MlflowRegistry

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_helpers import GROUP, STORE_COLUMNS, T0, make_bundle, vector

pytestmark = pytest.mark.slow  # MLflow's registry tables take seconds to create


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, City, str]]:
    root = tmp_path_factory.mktemp("decide-api")
    data = DataDir(root)
    city = City(CityConfig(stations=300, seed=8, start=T0 - timedelta(hours=2)))
    city.run(120)
    ids = city.station_ids
    store = SqliteOnlineStore(data.online_sqlite)
    store.register(GROUP, STORE_COLUMNS)
    rows = [vector(e) for e in ids]
    table = pa.table(
        {
            "station_id": ids,
            "as_of": pa.array([T0 - timedelta(seconds=30)] * len(ids), TS_TYPE),
            **{c: [r[c] for r in rows] for c in STORE_COLUMNS},
        }
    )
    store.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=to_micros(T0))
    bundle = make_bundle(tmp_path_factory.mktemp("bundles"), 0, baseline=False)
    registry = MlflowRegistry.for_data_dir(data)
    from serve_helpers import _verdict

    version = registry.register("main", bundle.path, run_id=None, gate=_verdict()).version
    registry.set_alias("main", "champion", version, actor="t", reason="t", action="promote")
    app = create_app(
        store=store,
        registry=registry,
        model_name="main",
        config=ServeConfig(reload_poll="1h"),  # type: ignore[arg-type]
        clock=FixedClock(T0),
    )
    add_decide_route(app, DecideConfig())
    with BackgroundServer(app) as server:
        yield server.url, city, bundle.bundle_id
    store.close()


def body(city: City, **extra: object) -> dict[str, object]:
    stations = [
        StationState(
            sid,
            bikes=int(city.bikes[i]),
            docks=int(city.docks_available[i]),
            capacity=int(city.capacity[i]),
            lat=float(city.lat[i]),
            lon=float(city.lon[i]),
            as_of=T0 - timedelta(seconds=30),
            age_s=30.0,
        )
        for i, sid in enumerate(city.station_ids)
    ]
    fleet = [Truck(truck_id=f"t{k}", lat=41.88, lon=-87.63) for k in range(8)]
    return {
        "stations": msgspec.to_builtins(stations),
        "fleet": msgspec.to_builtins(fleet),
        **extra,
    }


def test_decide_scores_the_stations_with_the_served_model(served: tuple[str, City, str]) -> None:
    url, city, bundle_id = served
    with httpx.Client(timeout=10) as client:
        first = client.post(f"{url}{DECIDE_PATH}", json=body(city))
        assert first.status_code == 200, first.text
        decision = decode_decision(first.content)
        assert decision.bundle_ids == (bundle_id,)
        assert decision.model_versions == ("empty:1/full:none",)
        assert "predictions_missing" not in decision.reasons, "all 300 stations were scored"
        assert decision.policy == "predictive" and decision.health_gate in ("open", "fallback")
        again = client.post(f"{url}{DECIDE_PATH}", json=body(city))
        assert again.content == first.content, "same inputs, same clock: the same bytes"
        reactive = client.post(f"{url}{DECIDE_PATH}", json=body(city, policy="reactive"))
        assert decode_decision(reactive.content).policy == "reactive"
        degraded = client.post(
            f"{url}{DECIDE_PATH}", json=body(city, health={"verdict": "degraded"})
        )
        d = decode_decision(degraded.content)
        assert d.health_gate == "fallback" and "health_degraded" in d.reasons
        times = []
        payload = body(city)
        for _ in range(100):
            t = time.perf_counter()
            assert client.post(f"{url}{DECIDE_PATH}", json=payload).status_code == 200
            times.append(time.perf_counter() - t)
        p50, p99 = np.percentile(times, [50, 99]) * 1e3
        print(f"POST /v1/decide, 300 stations: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        metrics = client.get(f"{url}/metrics").text
        answered = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("dockline_decisions_total{")
        )
        assert answered >= 104, "every decision is counted on /metrics"
        assert 'dockline_decisions_total{health_gate="fallback",policy="predictive"}' in metrics
        assert "dockline_decide_duration_seconds_count" in metrics


def test_bad_requests_are_422_with_a_reason(served: tuple[str, City, str]) -> None:
    url, city, _ = served
    with httpx.Client(timeout=10) as client:
        empty = client.post(f"{url}{DECIDE_PATH}", json={"stations": []})
        assert empty.status_code == 422 and empty.json()["reason"] == "invalid_value"
        bad = client.post(f"{url}{DECIDE_PATH}", content=b"{nope")
        assert bad.status_code == 422 and bad.json()["reason"] == "invalid_json"
        wrong = client.post(f"{url}{DECIDE_PATH}", json=body(city, policy="oracle"))
        assert wrong.status_code == 422 and wrong.json()["reason"] == "invalid_request"
        huge = client.post(f"{url}{DECIDE_PATH}", content=b"[" + b" " * MAX_DECIDE_BODY + b"]")
        assert huge.status_code == 413 and huge.json()["reason"] == "body_too_large"
        metrics = client.get(f"{url}/metrics").text
        assert 'dockline_decide_errors_total{reason="invalid_json"}' in metrics
