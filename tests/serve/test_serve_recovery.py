"""``kill -9`` of a serving process: a restart recovers its metrics windows from the crash
checkpoint, counts the prediction-log rows it lost and repairs the partial files it left."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_helpers import FRESH, T0, ServeFactory, World

from dockline.core.config import DataDir
from dockline.core.contracts import ServingMetricsWindow
from dockline.core.time import FixedClock

HERE = Path(__file__).parent
PREDICT = "/v1/predict"
ENTITIES = [e for e in FRESH if not e.endswith("7")]


@pytest.fixture
def child(world: World, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, DataDir]]:
    """A serving process over the session's store and registry, writing to its own data dir."""
    out = DataDir(tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "serve_child.py"), str(world.data.root), str(out.root)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), "the serving process did not start"
    yield proc, url, out
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()


def _sample(app: object, name: str, sink: str) -> float:
    registry = app.state.telemetry.registry  # type: ignore[attr-defined]
    return float(registry.get_sample_value(name, {"sink": sink}) or 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("deployment", ["local", "other"])
def test_a_restart_after_kill_9_recovers_windows_and_counts_what_was_lost(
    child: tuple[subprocess.Popen[str], str, DataDir],
    serve: ServeFactory,
    caplog: pytest.LogCaptureFixture,
    deployment: str,
) -> None:
    """``local``: the same deployment restarts in the same minute, the killed windows merge
    into its own; ``other``: another deployment takes over, they are written as they were."""
    proc, url, out = child
    with httpx.Client(base_url=url) as client:
        for e in ENTITIES[:7]:
            assert client.post("/v1/predict", json={"entity": e}).status_code == 200
        r = client.post("/v1/predict/batch", json={"entities": ENTITIES[:3]})
        assert r.status_code == 200
    answered = time.time()
    state = out.serving_metrics.parent / "state"
    deadline = time.monotonic() + 15
    while not [p for p in state.glob("*.ckpt") if p.stat().st_mtime > answered]:
        assert time.monotonic() < deadline, "no checkpoint after the last request"
        time.sleep(0.1)
    time.sleep(1.5)  # one more tick: the checkpoint holds every request
    # The writer was killed in the middle of a prediction-log file.
    day = out.serving_predictions / "date=2024-05-01"
    day.mkdir(parents=True)
    torn_tmp = day / f"part-1714564800000000-{proc.pid}-000001.parquet.tmp"
    torn_tmp.write_bytes(b"PAR1\x00\x01")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not list(out.serving_predictions.rglob("*.parquet")), "rows were flushed: no loss"
    assert not list(out.serving_metrics.rglob("*.jsonl")), "a window was written before the kill"

    caplog.set_level(logging.WARNING)
    clock = FixedClock(T0)  # the same minute as the killed windows
    server, app = serve(data=out, clock=clock, deployment_id=deployment)
    report = app.state.recovery
    merged = 2 if deployment == "local" else 0
    assert (report.predecessors, report.windows_recovered, report.windows_merged) == (1, 2, merged)
    assert report.rows_missing == 10  # 7 single + 3 batch rows, accepted and never written
    assert report.partial_files == 1 and not torn_tmp.exists()
    assert _sample(app, "dockline_serving_restart_missing_total", "prediction_log") == 10
    assert _sample(app, "dockline_serving_restart_recovered_total", "metrics_windows") == 2
    assert _sample(app, "dockline_serving_partial_files_total", "prediction_log") == 1
    assert any("did not stop cleanly" in r.getMessage() for r in caplog.records)
    assert not list(state.glob(f"{proc.pid}-*")), "the dead process's files were not cleaned"

    r = httpx.post(f"{server.url}/v1/predict", json={"entity": ENTITIES[0]})
    assert r.status_code == 200
    server.stop()
    lines = [
        ServingMetricsWindow.model_validate_json(line)
        for f in out.serving_metrics.rglob("*.jsonl")
        for line in f.read_bytes().splitlines()
    ]
    single = [(w.deployment_id, w.request_count) for w in lines if w.endpoint_name == PREDICT]
    batch = [
        (w.deployment_id, w.request_count, w.prediction_count)
        for w in lines
        if w.endpoint_name == "/v1/predict/batch" and w.request_count
    ]
    assert {w.window_start for w in lines} == {T0}
    assert all(w.latency_p50_ms is not None for w in lines if w.request_count)
    if deployment == "local":  # one window per key: 7 killed requests + 1
        assert single == [("local", 8)]
    else:  # the killed deployment's windows as they were, and the new one's own
        assert sorted(single) == [("local", 7), ("other", 1)]
    assert batch == [("local", 1, 3)]
    assert not list(state.glob("*.ckpt")) and not list(state.glob("*.lock"))  # a clean stop


def test_a_torn_metrics_line_stays_one_bad_line(serve: ServeFactory, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    out = DataDir(tmp_path / "torn")
    hour = out.serving_metrics / "2024-05-01" / "12"
    hour.mkdir(parents=True)
    (hour / "local.jsonl").write_bytes(b'{"window_start": "2024-05-01T11:5')  # a cut line
    server, app = serve(data=out, clock=clock)
    assert httpx.post(f"{server.url}/v1/predict", json={"entity": "s001"}).status_code == 200
    server.stop()
    lines = (hour / "local.jsonl").read_bytes().splitlines()
    assert lines[0] == b'{"window_start": "2024-05-01T11:5'
    assert ServingMetricsWindow.model_validate_json(lines[1]).request_count == 1
    assert _sample(app, "dockline_serving_partial_files_total", "metrics_windows") == 1
