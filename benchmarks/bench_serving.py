"""Online ``/v1/predict`` throughput and latency against the common design and the floor.

    .venv/bin/python benchmarks/bench_serving.py [--duration 10] [--repeats 3] [--rate 500]

Builds, in a temporary data directory, ``--entities`` feature vectors of ``--features`` values in
the real SQLite online store, trains a scikit-learn pipeline (imputer + RandomForest of 400 trees)
on synthetic rows of the same features, exports it as a dockline bundle (ONNX) registered as
``champion`` in the real MLflow registry, then serves, one system at a time, each in its own
process pinned to core 0:

* ``dockline`` — :func:`dockline.serve.create_app` over that store and registry (prediction log
  and metrics windows on), scoring the RandomForest bundle; and ``dockline (logistic)``, the same
  with a logistic-regression bundle, the kind of model whose ONNX run is a few microseconds;
* ``common design`` — FastAPI + pydantic request/response models, the vector read from the same
  online store, a one-row pandas DataFrame, ``Pipeline.predict_proba`` of the same RandomForest;
* ``floor`` — the same FastAPI + uvicorn stack returning a constant.

The load generator is ``wrk`` (Debian package ``wrk``) pinned to core 1, cycling through the
entities, for bounded ``--duration`` s runs at concurrency 1, 8 and 64 after a warm-up. Then an
open-loop generator (also on core 1) sends ``--rate`` requests/s for ``--paced-duration`` s to
every system whose capacity is above that rate, and measures latency from when each request was
due: the p99 at a fixed rate, stalls included. Each cell is the median over ``--repeats`` runs.
Prints tables with ratios (throughput to the floor and to the common design, p50 at concurrency
1 to the floor's) and writes ``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "serving.json"
GROUP = "features"
MODEL = "bench"
SERVER_CORE = 0
CLIENT_CORE = 1

WRK_SCRIPT = """
local n = {entities}
local i = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  i = (i % n) + 1
  return wrk.format("POST", "/v1/predict", headers, string.format('{{"entity":"s%05d"}}', i - 1))
end
done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT {{\\"requests\\":%d,\\"duration_us\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d,"
    .. "\\"p99_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,"
    .. "\\"timeout\\":%d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
"""


class CommonRequest(BaseModel):
    """The common design's request model."""

    entity: str


class CommonResponse(BaseModel):
    """The common design's response model."""

    entity: str
    probability: float
    label: bool
    model_version: str


def feature_names(k: int) -> list[str]:
    """The benchmark's feature columns."""
    return [f"f{i:02d}" for i in range(k)]


# -- setup (the parent process) ---------------------------------------------------------------


def _synthetic(rows: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, k)).astype(np.float32)
    w = rng.normal(size=k) * (rng.uniform(size=k) < 0.5)
    y = (x @ w + 0.5 * np.sin(3 * x[:, 0]) + rng.normal(scale=0.7, size=rows)) > 0.8
    return x, y


def _bundle(root: Path, estimator: Any, x: np.ndarray, k: int, candidate: str) -> Path:
    from skl2onnx import to_onnx

    from dockline.core.bundle import (
        BundleManifest,
        Calibration,
        DriftBaseline,
        FeatureBaseline,
        Lineage,
        OnnxSpec,
        ParityReport,
        ThresholdChoice,
        write_bundle,
    )

    onx = to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}}, target_opset=17)
    names = feature_names(k)
    now = datetime.now(UTC)
    manifest = BundleManifest(
        project="bench",
        model_name=MODEL,
        label="y",
        candidate=candidate,
        features=names,
        onnx=OnnxSpec(input_name="X", output_name="probabilities", opset=17),
        calibration=Calibration(method="none"),
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.5, recall=0.5
        ),
        parity=ParityReport(rows=1, max_abs_diff=0.0, tolerance=1e-5, passed=True),
        lineage=Lineage(
            dataset_name="bench",
            dataset_hash="0" * 64,
            plan_hash="0" * 64,
            config_hash="0" * 64,
            code_version="bench",
            seed=0,
        ),
        train_start=now - timedelta(days=1),
        test_end=now,
    )
    drift = DriftBaseline(
        features=[FeatureBaseline(name=n, count=1, null_fraction=0) for n in names]
    )
    bundle = write_bundle(root, manifest, {"model.onnx": onx.SerializeToString()}, drift)
    return bundle.path


def setup(root: Path, entities: int, k: int, train_rows: int) -> dict[str, Any]:
    """Store, models, bundles and registry under ``root``; returns what was built."""
    import joblib
    import pandas as pd
    import pyarrow as pa
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from dockline.core.config import DataDir
    from dockline.core.contracts import TS_TYPE, GateVerdict
    from dockline.core.time import to_micros
    from dockline.store import SqliteOnlineStore
    from dockline.train.registry import MlflowRegistry

    names = feature_names(k)
    data = DataDir(root)
    store = SqliteOnlineStore(data.online_sqlite)
    store.register(GROUP, names)
    rng = np.random.default_rng(1)
    values = rng.normal(size=(entities, k))
    now = datetime.now(UTC)
    table = pa.table(
        {
            "station_id": [f"s{i:05d}" for i in range(entities)],
            "as_of": pa.array([now] * entities, TS_TYPE),
            **{n: values[:, j] for j, n in enumerate(names)},
        }
    )
    store.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=to_micros(now))
    store.close()

    x, y = _synthetic(train_rows, k, seed=0)
    t0 = time.perf_counter()
    forest = RandomForestClassifier(n_estimators=400, min_samples_leaf=5, random_state=0, n_jobs=2)
    frame = pd.DataFrame(x, columns=names)  # the common design trains on a DataFrame
    pipeline = Pipeline([("impute", SimpleImputer()), ("model", forest)]).fit(frame, y)
    forest.n_jobs = 1  # serving scores one row at a time, on one core
    train_s = time.perf_counter() - t0
    joblib.dump({"pipeline": pipeline, "features": names}, root / "common.joblib")
    logistic = LogisticRegression(max_iter=1000).fit(x, y)
    staging = root / "staging"
    forest_path = _bundle(staging, forest, x, k, "random_forest")
    logistic_path = _bundle(staging, logistic, x, k, "logistic")

    registry = MlflowRegistry.for_data_dir(data)
    verdict = GateVerdict(
        passed=True, primary_metric="pr_auc", higher_is_better=True, value=1.0, margin=0.0,
        ece=0.0, max_ece=0.05,
    )  # fmt: skip
    for name, path in ((MODEL, forest_path), (f"{MODEL}-logistic", logistic_path)):
        version = registry.register(name, path, run_id=None, gate=verdict)
        registry.set_alias(
            name, "champion", version.version, actor="bench", reason="bench", action="promote"
        )
    nodes = sum(e.tree_.node_count for e in forest.estimators_)
    return {
        "entities": entities,
        "features": k,
        "train_rows": train_rows,
        "forest": {"trees": 400, "min_samples_leaf": 5, "nodes": int(nodes)},
        "forest_train_s": round(train_s, 1),
        "forest_onnx_bytes": (forest_path / "model.onnx").stat().st_size,
    }


# -- servers (child processes) ----------------------------------------------------------------


def serve_dockline(root: Path, port: int, model: str) -> None:
    """dockline's app over the benchmark's store and registry."""
    import uvicorn

    from dockline.core.config import DataDir, ServeConfig
    from dockline.serve import create_app
    from dockline.store import SqliteOnlineStore
    from dockline.train.registry import MlflowRegistry

    data = DataDir(root)
    store = SqliteOnlineStore(data.online_sqlite)
    app = create_app(
        store=store,
        registry=MlflowRegistry.for_data_dir(data),
        model_name=model,
        config=ServeConfig(max_feature_age="1h", reload_poll="5s"),
        data_dir=data,
        group=GROUP,
        on_close=[store.close],
    )
    # The product's uvicorn settings: the guarded protocol (read deadlines) and keep-alive.
    options = app.state.uvicorn_options
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options)


def serve_common(root: Path, port: int) -> None:
    """The common design: FastAPI + pydantic + a pandas DataFrame + a scikit-learn pipeline."""
    import joblib
    import pandas as pd
    import uvicorn
    from fastapi import FastAPI, HTTPException

    from dockline.store import SqliteOnlineStore

    saved = joblib.load(root / "common.joblib")
    pipeline, names = saved["pipeline"], saved["features"]
    store = SqliteOnlineStore(root / "online.sqlite")
    columns = store.columns(GROUP)

    app = FastAPI()

    @app.post("/v1/predict")
    def predict(request: CommonRequest) -> CommonResponse:
        vector = store.read(request.entity, [GROUP])[GROUP]
        if vector is None:
            raise HTTPException(status_code=404, detail="unknown entity")
        frame = pd.DataFrame([dict(zip(columns, vector.values, strict=True))])[names]
        probability = float(pipeline.predict_proba(frame)[0, 1])
        return CommonResponse(
            entity=request.entity,
            probability=probability,
            label=probability >= 0.5,
            model_version="1",
        )

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_floor(port: int) -> None:
    """The floor: the same FastAPI + uvicorn stack returning a constant."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    constant = {"probability": 0.5, "label": False}

    @app.post("/v1/predict")
    async def predict() -> dict[str, Any]:
        return constant

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- running ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def _start(kind: str, root: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--serve", kind, "--root", str(root), "--port", str(port)]
    proc = subprocess.Popen(cmd, preexec_fn=lambda: _pin(SERVER_CORE))
    body = b'{"entity":"s00000"}'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(
                    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{kind} server did not answer 200 in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wrk(port: int, concurrency: int, duration: float, script: Path) -> dict[str, Any]:
    cmd = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "60s",
        "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(CLIENT_CORE), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    raw = json.loads(line[len("RESULT ") :])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "errors": errors,
    }


def _paced(port: int, rate: float, duration: float, entities: int) -> dict[str, Any]:
    """Open-loop load: request i is due at ``i / rate`` s whatever the server does.

    wrk is closed-loop (a slow answer delays the next request, so stalls hide), and wrk2 is not
    packaged here. Latency runs from when a request was *due* to the end of its answer, so
    queueing behind a stall is counted (no coordinated omission). Keep-alive connections come
    from a pool that grows when all are busy.
    """
    import asyncio

    async def run() -> dict[str, Any]:
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        latencies: list[float] = []
        service: list[float] = []
        lags: list[float] = []
        errors = 0
        opened = 0
        slow: list[tuple[float, float]] = []  # (due s into the run, latency ms) over 50 ms

        async def one(i: int, due: float) -> None:
            nonlocal errors, opened
            body = f'{{"entity":"s{i % entities:05d}"}}'.encode()
            request = (
                b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            for attempt in range(2):
                reused = bool(idle) and attempt == 0
                if reused:
                    reader, writer = idle.pop()
                else:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    opened += 1
                try:
                    sent = loop.time()
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                except (OSError, asyncio.IncompleteReadError):
                    writer.close()
                    # uvicorn closes keep-alive connections idle for 5 s; like any HTTP
                    # client, send again once on a new connection
                    if reused:
                        continue
                    errors += 1
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                done = loop.time()
                latencies.append(done - due)
                if done - due > 0.05:
                    slow.append((round(due - start, 3), round((done - due) * 1000, 1)))
                service.append(done - sent)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                idle.append((reader, writer))
                return

        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        tasks = []
        for i in range(int(rate * duration)):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0.002:  # the loop's timers overshoot by up to ~1 ms: sleep short, then spin
                await asyncio.sleep(delay - 0.0015)
            while loop.time() < due:
                await asyncio.sleep(0)  # lets answers be read meanwhile
            lags.append(loop.time() - due)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        for _, writer in idle:
            writer.close()
        ms = np.array(latencies) * 1000.0
        return {
            "rate": rate,
            "requests": len(tasks),
            "answered": len(latencies),
            "errors": errors,
            "connections": opened,
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "p999_ms": round(float(np.percentile(ms, 99.9)), 3),
            "max_ms": round(float(ms.max()), 3),
            # from the send instead of the due time: the server's share, without client lag
            "sent_p50_ms": round(float(np.percentile(np.array(service) * 1000.0, 50)), 3),
            "sent_p99_ms": round(float(np.percentile(np.array(service) * 1000.0, 99)), 3),
            # how late this client sent (a busy client inflates the latencies above)
            "client_lag_p99_ms": round(float(np.percentile(np.array(lags) * 1000.0, 99)), 3),
            "over_50ms": slow[:50],
        }

    # This process holds the setup's imports and models: a full GC here stalled the client for
    # ~150 ms (seen as client lag), so it stays off while the requests are timed.
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(run())
    finally:
        gc.enable()


WRK_CELL = ("rps", "p50_ms", "p90_ms", "p99_ms")
PACED_CELL = (
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "sent_p50_ms",
    "sent_p99_ms",
    "client_lag_p99_ms",
)


def _median(runs: list[dict[str, Any]], keys: tuple[str, ...], listed: str) -> dict[str, Any]:
    """A cell: medians of ``keys``, summed requests and errors, and each run's ``listed``."""
    cell: dict[str, Any] = {key: round(statistics.median(r[key] for r in runs), 3) for key in keys}
    cell["requests"] = sum(r["requests"] for r in runs)
    cell["errors"] = sum(r["errors"] for r in runs)
    cell[f"runs_{listed}"] = [round(r[listed], 3) for r in runs]
    return cell


SYSTEMS = {
    "floor": "floor",
    "dockline": "dockline",
    "dockline (logistic)": "dockline-logistic",
    "common design": "common",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--rate", type=float, default=500.0, help="open-loop req/s for the paced runs (0: none)"
    )
    parser.add_argument("--paced-duration", type=float, default=10.0)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", choices=sorted(set(SYSTEMS.values())), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        if args.serve == "floor":
            serve_floor(args.port)
        elif args.serve == "common":
            serve_common(args.root, args.port)
        else:
            model = f"{MODEL}-logistic" if args.serve == "dockline-logistic" else MODEL
            serve_dockline(args.root, args.port, model)
        return

    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="dockline-bench-serving-"))
    try:
        print("setting up (store, RandomForest(400), bundles, registry) ...", flush=True)
        setup_info = setup(root, args.entities, args.features, args.train_rows)
        _pin(CLIENT_CORE)  # keep this process off the server's core from now on
        script = root / "bench.lua"
        script.write_text(WRK_SCRIPT.format(entities=args.entities))
        # Every server runs for the whole benchmark (idle ones cost nothing) and the runs
        # interleave the systems, so load from outside the benchmark falls on all of them alike.
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for name in args.systems:
                port = _free_port()
                servers[name] = (_start(SYSTEMS[name], root, port), port)
                _wrk(port, 8, args.warmup, script)
            runs: dict[str, dict[int, list[dict[str, Any]]]] = {n: {} for n in servers}
            paced_runs: dict[str, list[dict[str, Any]]] = {}
            for repeat in range(args.repeats):
                for c in args.concurrency:
                    for name, (_, port) in servers.items():
                        run = _wrk(port, c, args.duration, script)
                        runs[name].setdefault(c, []).append(run)
                        print(
                            f"[{repeat + 1}/{args.repeats}] {name:<20} c={c:<3}"
                            f" {run['rps']:>9.1f} req/s  p50 {run['p50_ms']:.3f} ms"
                            f"  p99 {run['p99_ms']:.3f} ms  errors {run['errors']}",
                            flush=True,
                        )
                if args.rate > 0:
                    for name, (_, port) in servers.items():
                        if name == "common design":
                            continue  # its capacity (≈ 80 req/s here) is below any useful rate
                        run = _paced(port, args.rate, args.paced_duration, args.entities)
                        paced_runs.setdefault(name, []).append(run)
                        print(
                            f"[{repeat + 1}/{args.repeats}] {name:<20} paced {args.rate:g}/s"
                            f"  p50 {run['p50_ms']:.3f} ms  p99 {run['p99_ms']:.3f} ms"
                            f"  p99.9 {run['p999_ms']:.3f} ms  errors {run['errors']}",
                            flush=True,
                        )
        finally:
            for proc, _ in servers.values():
                _stop(proc)
        results = {
            name: {str(c): _median(cells, WRK_CELL, "rps") for c, cells in by_c.items()}
            for name, by_c in runs.items()
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()[0]

    ratios: dict[str, dict[str, Any]] = {}
    floor = results.get("floor", {})
    common = results.get("common design", {})
    for name in results:
        ratios[name] = {}
        for c, cell in results[name].items():
            entry: dict[str, Any] = {}
            if c in floor:
                entry["rps_vs_floor"] = round(cell["rps"] / floor[c]["rps"], 3)
                entry["p50_vs_floor"] = round(cell["p50_ms"] / floor[c]["p50_ms"], 3)
            if c in common:
                entry["rps_vs_common"] = round(cell["rps"] / common[c]["rps"], 1)
            ratios[name][c] = entry
    import fastapi
    import onnxruntime
    import sklearn
    import uvicorn

    report = {
        "benchmark": "serving",
        "command": "python benchmarks/bench_serving.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "server_core": SERVER_CORE,
            "client_core": CLIENT_CORE,
            "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_generator": subprocess.run(
                ["wrk", "--version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
            "fastapi": fastapi.__version__,
            "uvicorn": uvicorn.__version__,
            # what uvicorn's "auto" picked for every server: the C parser and loop, when present
            "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "onnxruntime": onnxruntime.__version__,
            "scikit_learn": sklearn.__version__,
        },
        "setup": {
            **setup_info,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "cell": "median over repeats of throughput and wrk's latency percentiles",
        },
        "results": results,
        "ratios": ratios,
        "paced": {
            "rate": args.rate,
            "duration_s": args.paced_duration,
            "cell": "median over repeats; latency from when each request was due",
            "results": {name: _median(r, PACED_CELL, "p99_ms") for name, r in paced_runs.items()},
            "runs": paced_runs,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    print(f"{'system':<20} {'c':>3} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs floor':>9}"
          f" {'vs common':>10} {'errors':>7}")  # fmt: skip
    for name, cells in results.items():
        for c, cell in cells.items():
            r = ratios[name][c]
            print(
                f"{name:<20} {c:>3} {cell['rps']:>10.1f} {cell['p50_ms']:>8.3f}"
                f" {cell['p99_ms']:>8.3f} {r.get('rps_vs_floor', float('nan')):>9.3f}"
                f" {r.get('rps_vs_common', float('nan')):>10.1f} {cell['errors']:>7}"
            )
    if paced_runs:
        print(f"\nopen loop at {args.rate:g} req/s for {args.paced_duration:g} s (median of runs)")
        print(
            f"{'system':<20} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}"
            f" {'sent p50':>9} {'sent p99':>9} {'lag p99':>8} {'errors':>7}"
        )
        for name, cell in report["paced"]["results"].items():
            print(
                f"{name:<20} {cell['p50_ms']:>8.3f} {cell['p99_ms']:>8.3f}"
                f" {cell['p999_ms']:>9.3f} {cell['max_ms']:>8.3f} {cell['sent_p50_ms']:>9.3f}"
                f" {cell['sent_p99_ms']:>9.3f} {cell['client_lag_p99_ms']:>8.3f}"
                f" {cell['errors']:>7}"
            )


if __name__ == "__main__":
    main()
