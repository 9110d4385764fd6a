"""Telemetry and routing over real HTTP: shadow and canary in the Parquet prediction log,
serving metrics windows against the contract, Prometheus counters."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest
from fastapi import FastAPI
from serve_helpers import FRESH, STALE, T0, ServeFactory, World

from dockline.core.config import DataDir
from dockline.core.contracts import ServingMetricsWindow
from dockline.core.time import FixedClock
from dockline.serve import PREDICTION_LOG_SCHEMA, canary_bucket

AUTH = {"authorization": "Bearer secret"}
ENTITIES = [e for e in FRESH if not e.endswith("7")]  # no nulls: every one scores


def _log(root: Path) -> list[dict[str, object]]:
    files = sorted((root / "serving" / "predictions").rglob("*.parquet"))
    assert files, "no prediction log files"
    table = ds.dataset(files, format="parquet").to_table()
    assert table.schema.equals(PREDICTION_LOG_SCHEMA)
    rows: list[dict[str, object]] = table.to_pylist()
    return rows


def test_shadow_and_canary_are_logged_and_tagged(
    world: World, serve: ServeFactory, tmp_path: Path
) -> None:
    world.promote("main", 2, alias="challenger")
    data = DataDir(tmp_path / "routed")
    server, _ = serve(data=data, prediction_flush_interval="0.1s")
    with httpx.Client(base_url=server.url) as client:
        r = client.post("/v1/admin/routing", headers=AUTH, json={"mode": "shadow"})
        assert r.json() == {"mode": "shadow", "canary_share": 0.1}
        shadow_ids = {
            client.post("/v1/predict", json={"entity": e}).json()["request_id"]
            for e in ENTITIES[:10]
        }
        batch = client.post("/v1/predict/batch", json={"entities": ENTITIES[:4]}).json()
        assert {p["model"]["version"] for p in batch["predictions"]} == {1}

        r = client.post(
            "/v1/admin/routing", headers=AUTH, json={"mode": "canary", "canary_share": 0.5}
        )
        assert r.json() == {"mode": "canary", "canary_share": 0.5}
        answered = {}
        for e in ENTITIES:
            body = client.post("/v1/predict", json={"entity": e}).json()
            answered[e] = (body["model"]["version"], body["model"]["role"])
        for e, (version, role) in answered.items():
            expected = (2, "canary") if canary_bucket(e) < 5000 else (1, "champion")
            assert (version, role) == expected, e
        assert {v for v, _ in answered.values()} == {1, 2}  # both sides got traffic
        # deterministic: the same entity always goes the same way
        again = client.post("/v1/predict", json={"entity": ENTITIES[0]}).json()
        assert again["model"]["version"] == answered[ENTITIES[0]][0]
    server.stop()  # flushes the log

    rows = _log(data.root)
    shadow = [r for r in rows if r["role"] == "shadow"]
    assert len(shadow) == 10 + 4
    assert all(r["served"] is False and r["model_version"] == 2 for r in shadow)
    assert {r["request_id"] for r in shadow} >= shadow_ids
    for s in shadow:  # each shadow row sits beside the champion answer of the same request
        (champion,) = [
            r
            for r in rows
            if r["request_id"] == s["request_id"]
            and r["entity"] == s["entity"]
            and r["role"] == "champion"
        ]
        assert champion["served"] is True and champion["model_version"] == 1
        assert champion["features"] == pytest.approx(s["features"])
    canary = [r for r in rows if r["role"] == "canary"]
    assert canary and all(r["model_version"] == 2 and r["served"] for r in canary)
    assert {r["entity"] for r in canary} == {e for e, (v, _) in answered.items() if v == 2}
    assert all(len(r["features"]) == 5 and r["latency_ms"] > 0 for r in rows)  # type: ignore[arg-type]
    world.registry.set_alias(
        "main", "challenger", None, actor="test", reason="cleanup", action="demote"
    )


def test_metrics_windows_follow_the_clock_and_match_the_contract(
    world: World, serve: ServeFactory, tmp_path: Path
) -> None:
    clock = FixedClock(T0)
    data = DataDir(tmp_path / "windows")
    server, _ = serve(clock=clock, data=data, stale_policy="reject")
    with httpx.Client(base_url=server.url) as client:
        for e in ENTITIES[:5]:
            assert client.post("/v1/predict", json={"entity": e}).status_code == 200
        assert client.post("/v1/predict", json={"entity": "ghost"}).status_code == 404
        assert client.post("/v1/predict", json={"entity": 1}).status_code == 422
        assert client.post("/v1/predict", json={}).status_code == 422
        assert client.post("/v1/predict", json={"entity": STALE[0]}).status_code == 503
        assert client.post("/v1/predict", json={"entity": "s007"}).status_code == 500
        r = client.post("/v1/predict/batch", json={"entities": ENTITIES[:3]})
        assert r.status_code == 200
        clock.advance(timedelta(seconds=61))
        hour_dir = data.serving_metrics / "2024-05-01" / "12"
        deadline = time.monotonic() + 10
        while not list(hour_dir.glob("*.jsonl")):
            assert time.monotonic() < deadline, "no metrics window was written"
            time.sleep(0.1)
        time.sleep(0.2)
        lines = [line for f in hour_dir.glob("*.jsonl") for line in f.read_bytes().splitlines()]
        windows = {w.endpoint_name: w for w in map(ServingMetricsWindow.model_validate_json, lines)}
        single = windows["/v1/predict"]
        assert single.window_start == T0 and single.window_end == T0 + timedelta(seconds=60)
        assert single.request_count == 10
        assert single.success_count == 5 and single.failure_count == 5
        assert single.feature_lookup_error_count == 1
        assert single.validation_error_count == 2 and single.input_schema_failure_count == 2
        assert single.invalid_type_count == 1 and single.missing_required_field_count == 1
        assert single.rejected_count == 1
        assert single.prediction_count == 6 and single.prediction_non_finite_count == 1
        assert single.model_name == "main" and single.model_version == "1"
        assert single.bundle_id == world.bundles[0].bundle_id
        assert single.input_dataset_name == "serve-test-set"
        assert single.latency_p50_ms is not None and single.latency_p50_ms > 0
        batch = windows["/v1/predict/batch"]
        assert batch.request_count == 1 and batch.prediction_count == 3
        # Exactly the contract's fields, nothing more.
        assert set(ServingMetricsWindow.model_validate_json(lines[0]).model_dump()) == set(
            ServingMetricsWindow.model_fields
        )

        metrics = client.get("/metrics").text
        for needle in (
            'dockline_serve_requests_total{endpoint="/v1/predict",outcome="ok"} 5.0',
            'dockline_serve_requests_total{endpoint="/v1/predict",outcome="unknown_entity"} 1.0',
            "dockline_serve_request_duration_seconds_bucket",
            "dockline_serve_prediction_probability_bucket",
            "dockline_serve_feature_age_seconds_count 8.0",
            'dockline_serve_model_info{bundle_id="',
            'dockline_serving_rows_dropped_total{sink="prediction_log"} 0.0',
            'dockline_serving_rows_dropped_total{sink="metrics_windows"} 0.0',
            "dockline_serve_metrics_windows_total",
        ):
            assert needle in metrics, needle


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _sample(app: FastAPI, name: str, sink: str) -> float:
    value = app.state.telemetry.registry.get_sample_value(name, {"sink": sink})
    return float(value or 0.0)


def test_prediction_log_rows_survive_a_failing_disk_and_drops_are_counted(
    serve: ServeFactory, tmp_path: Path
) -> None:
    data = DataDir(tmp_path / "failing-log")
    blocker = data.serving_predictions
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")  # a file where the log's directory belongs: every write fails
    server, app = serve(
        data=data,
        prediction_flush_interval="0.05s",
        prediction_flush_rows=5,
        write_buffer_rows=10,
    )
    with httpx.Client(base_url=server.url) as client:
        for e in ENTITIES[:8]:
            assert client.post("/v1/predict", json={"entity": e}).status_code == 200
        failures = "dockline_serving_write_failures_total"
        _wait(lambda: _sample(app, failures, "prediction_log") >= 2, "no failed write was counted")
        assert _sample(app, "dockline_serving_rows_dropped_total", "prediction_log") == 0
        blocker.unlink()  # the disk is back: the kept rows are written by the next flush
        _wait(lambda: len(list(blocker.rglob("*.parquet"))) > 0, "the kept rows were not written")
        assert sorted(r["entity"] for r in _log(data.root)) == sorted(ENTITIES[:8])

        blocker.rename(tmp_path / "moved-away")
        blocker.write_bytes(b"")  # broken again: 10 rows fit the buffer, 5 are dropped
        for e in ENTITIES[:15]:
            assert client.post("/v1/predict", json={"entity": e}).status_code == 200
        assert _sample(app, "dockline_serving_rows_dropped_total", "prediction_log") == 5
    server.stop()  # still broken at shutdown: the 10 kept rows are lost, and counted
    assert _sample(app, "dockline_serving_rows_dropped_total", "prediction_log") == 15


def test_metrics_windows_survive_a_failing_disk(
    world: World, serve: ServeFactory, tmp_path: Path
) -> None:
    clock = FixedClock(T0)
    data = DataDir(tmp_path / "failing-windows")
    blocker = data.serving_metrics
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")
    server, app = serve(clock=clock, data=data)
    telemetry = app.state.telemetry
    with httpx.Client(base_url=server.url) as client:
        for e in ENTITIES[:4]:
            assert client.post("/v1/predict", json={"entity": e}).status_code == 200
        clock.advance(timedelta(seconds=61))
        _wait(lambda: len(telemetry.unwritten) == 2, "the failed windows were not kept")
        assert _sample(app, "dockline_serving_write_failures_total", "metrics_windows") >= 1
        blocker.unlink()
        _wait(lambda: not telemetry.unwritten, "the kept windows were not retried")
    lines = [
        ServingMetricsWindow.model_validate_json(line)
        for f in blocker.rglob("*.jsonl")
        for line in f.read_bytes().splitlines()
    ]
    single = [w for w in lines if w.endpoint_name == "/v1/predict" and w.window_start == T0]
    assert len(single) == 1 and single[0].request_count == 4
    assert _sample(app, "dockline_serving_rows_dropped_total", "metrics_windows") == 0


def test_idle_minutes_are_heartbeat_windows_not_gaps(serve: ServeFactory, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    data = DataDir(tmp_path / "heartbeats")
    server, app = serve(clock=clock, data=data)
    r = httpx.post(f"{server.url}/v1/predict", json={"entity": ENTITIES[0]})
    assert r.status_code == 200
    # The writer thread may not run between two minutes (a stalled process, a jumping clock):
    # the minutes it missed are still written, as idle heartbeats.
    clock.advance(timedelta(minutes=3, seconds=1))
    hour_dir = data.serving_metrics / "2024-05-01" / "12"
    _wait(lambda: len(app.state.telemetry.written) >= 6, "not every minute was written")
    windows = [
        ServingMetricsWindow.model_validate_json(line)
        for f in hour_dir.glob("*.jsonl")
        for line in f.read_bytes().splitlines()
    ]
    for endpoint in ("/v1/predict", "/v1/predict/batch"):
        mine = sorted(
            (w for w in windows if w.endpoint_name == endpoint), key=lambda w: w.window_start
        )
        assert [w.window_start for w in mine] == [T0 + timedelta(minutes=m) for m in range(3)]
        counts = [w.request_count for w in mine]
        assert counts == ([1, 0, 0] if endpoint == "/v1/predict" else [0, 0, 0])
        assert all(w.heartbeat_emitted_at == T0 + timedelta(minutes=3, seconds=1) for w in mine)
