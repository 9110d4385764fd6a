"""Online ``/v1/predict`` throughput and latency: the product path, stored vectors, the common
design with the same model, and the floor.

    .venv/bin/python benchmarks/bench_serving.py [--duration 5] [--repeats 3] [--rate 500]

Setup, in a temporary directory: a simulated ``--stations`` city's ``--days`` of history written as
an archive (``write_archive``), imported (``ingest_archive``), sunk offline and materialized into
a real data dir, exactly as ``dockline ingest`` and ``dockline features materialize`` do. Every
station's vector is evaluated at times over the day with the product's reader
(:class:`~dockline.features.served.ServedVectors`) to give training rows of the bike-share plan's
29 features (a noisy "low soon" label). Two scikit-learn pipelines are fitted on them — imputer +
RandomForest of 400 trees, and imputer + scaler + logistic regression — and each is exported as a
dockline bundle (ONNX, lineage naming the plan's hash) and registered as ``champion``. The same
fitted pipelines are what the common design serves. Then each system runs in its own process
pinned to core 0:

* ``dockline product (RF-400 | logistic)`` — what ``dockline serve`` runs:
  :func:`dockline.pipeline.serve.create_serving_app` over the data dir, each request's vector
  evaluated at request time from the entity's state, the clock fixed just after the data;
* ``dockline stored (RF-400 | logistic)`` — :func:`dockline.serve.create_app` with ``store=``:
  the same vectors (evaluated once at that time) stored ready-made and read as written;
* ``common design (RF-400 | logistic)`` — FastAPI + pydantic, the stored vector, a one-row pandas
  DataFrame and ``predict_proba`` of the same fitted pipeline;
* ``floor`` — the same FastAPI + uvicorn stack returning a constant.

Each server first answers one request per station (recorded: HTTP and body status). The load
generator is ``wrk`` (Debian package ``wrk``) pinned to core 1, cycling through the stations, for
``--duration`` s runs at concurrency 1, 8 and 64 after a warm-up, the systems interleaved. Then an
open-loop generator (also on core 1) sends ``--rate`` requests/s for ``--paced-duration`` s to
every dockline system and the floor, measuring latency from when each request was due (stalls
included). Percentiles of the paced runs are over every request of every repeat (≥ 1,000
samples); a request unanswered after ``TIMEOUT_S`` is a failure in both generators. Ratios are to
the floor and to the common design with the same model, in the same run. Writes
``benchmarks/results/serving.json``.
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
TIMEOUT_S = 2.0  # a request unanswered by then is a failure (both load generators)
SERVER_CORE = 0
CLIENT_CORE = 1

WRK_SCRIPT = """
local ids = {{{ids}}}
local n = #ids
local i = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  i = (i % n) + 1
  return wrk.format("POST", "/v1/predict", headers, '{{"entity":"' .. ids[i] .. '"}}')
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
START = datetime(2026, 5, 4, tzinfo=UTC)  # the simulated day (any past day)


class CommonRequest(BaseModel):
    """The common design's request model."""

    entity: str


class CommonResponse(BaseModel):
    """The common design's response model."""

    entity: str
    probability: float
    label: bool
    model_version: str


# -- setup (the parent process) ---------------------------------------------------------------


def _bundle(
    root: Path, model: Any, x: np.ndarray, names: list[str], candidate: str, plan_hash: str
) -> Path:
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

    classifier = model.steps[-1][1]
    onx = to_onnx(model, x[:1], options={id(classifier): {"zipmap": False}}, target_opset=17)
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
            plan_hash=plan_hash,  # serving refuses a bundle trained on another plan
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


def setup(root: Path, stations: int, days: float, every_min: int) -> dict[str, Any]:
    """Data dir, served vectors, models, bundles and registries under ``root``."""
    import warnings

    import joblib
    import pyarrow as pa
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from dockline.core.config import DataDir
    from dockline.core.contracts import TS_TYPE, GateVerdict
    from dockline.core.time import to_micros
    from dockline.features.offline import OfflineExecutor
    from dockline.features.served import ServedVectors
    from dockline.pipeline.features import (
        load_plan,
        materialize,
        offline_sources,
        open_online_store,
    )
    from dockline.pipeline.ingest import ingest_archive, sink_offline
    from dockline.pipeline.platform import Platform
    from dockline.sim import CityConfig, write_archive
    from dockline.store import SqliteOnlineStore
    from dockline.train.registry import MlflowRegistry

    warnings.filterwarnings("ignore", category=UserWarning)  # joblib's per-call config notice
    timings: dict[str, float] = {}
    began = time.perf_counter()
    config = CityConfig(stations=stations, seed=1, start=START)
    archive = write_archive(config, days, root / "archive")
    platform = Platform.open(root / "data")
    platform.data.config_file.write_text('[serve]\nreload_poll = "5s"\n')
    platform = Platform.open(root / "data")
    summary = ingest_archive(platform, root / "archive", source="archive:bench")
    summary.check_accounting()
    sink_offline(platform)
    materialize(platform)
    timings["data_s"] = round(time.perf_counter() - began, 1)
    # the requests' time: just after the newest event was ingested
    delay = platform.config.ingest.publication_delay
    t_serve = archive.last_ts + delay + timedelta(seconds=1)
    (root / "t_serve").write_text(t_serve.isoformat())

    plan = load_plan(platform)
    names = list(plan.feature_names)
    store = open_online_store(platform)
    offline = OfflineExecutor(plan, offline_sources(platform, plan))
    reader = ServedVectors(plan, store, batch_provider=offline.batch_run)
    entities = sorted(archive_station_ids(root / "archive"))
    (root / "entities.json").write_text(json.dumps(entities))
    # training rows: every station every ``every_min`` minutes of the second half of the day,
    # evaluated exactly as serving evaluates them
    began = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    t = t_serve - timedelta(days=days / 2)
    while t <= t_serve:
        rows += [v.values for v in reader.read_at(entities, to_micros(t)) if v is not None]
        t += timedelta(minutes=every_min)
    served_now = reader.read_at(entities, to_micros(t_serve))
    reader.close()
    offline.close()
    store.close()
    timings["training_rows_s"] = round(time.perf_counter() - began, 1)
    x = np.array([[np.nan if v is None else float(v) for v in r] for r in rows], np.float32)
    bikes = x[:, names.index("num_bikes_available__last")]
    rng = np.random.default_rng(0)
    # "low soon": a noisy label (about 30 % positive), so the forest grows real trees
    noisy = np.nan_to_num(bikes) + rng.normal(scale=3.0, size=len(x))
    y = noisy < np.percentile(noisy, 30)
    began = time.perf_counter()
    forest = RandomForestClassifier(n_estimators=400, min_samples_leaf=5, random_state=0, n_jobs=2)
    rf = Pipeline([("impute", SimpleImputer(keep_empty_features=True)), ("model", forest)])
    rf.fit(x, y)
    forest.n_jobs = 1  # serving scores one row at a time, on one core
    timings["forest_fit_s"] = round(time.perf_counter() - began, 1)
    logistic = Pipeline(
        [
            ("impute", SimpleImputer(keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=2000)),
        ]
    ).fit(x, y)
    # The common design serves the very same fitted pipelines, from a DataFrame per request.
    joblib.dump({"pipeline": rf, "features": names}, root / "common-rf.joblib")
    joblib.dump({"pipeline": logistic, "features": names}, root / "common-logistic.joblib")
    staging = root / "staging"
    paths = {
        MODEL: _bundle(staging, rf, x, names, "random_forest", plan.hash),
        f"{MODEL}-logistic": _bundle(staging, logistic, x, names, "logistic", plan.hash),
    }

    # The stored-vector path: the same vectors (evaluated at t_serve) written to a plain group.
    stored = DataDir(root / "stored")
    flat = SqliteOnlineStore(stored.online_sqlite)
    flat.register(GROUP, names)
    now = datetime.now(UTC)
    kept = [(e, v) for e, v in zip(entities, served_now, strict=True) if v is not None]
    table = pa.table(
        {
            "station_id": [e for e, _ in kept],
            "as_of": pa.array([now] * len(kept), TS_TYPE),
            **{
                n: pa.array([v.values[j] for _, v in kept], pa.float64())
                for j, n in enumerate(names)
            },
        }
    )
    flat.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=to_micros(now))
    flat.close()

    verdict = GateVerdict(
        passed=True, primary_metric="pr_auc", higher_is_better=True, value=1.0, margin=0.0,
        ece=0.0, max_ece=0.05,
    )  # fmt: skip
    for data in (platform.data, stored):
        registry = MlflowRegistry.for_data_dir(data)
        for name, path in paths.items():
            version = registry.register(name, path, run_id=None, gate=verdict)
            registry.set_alias(
                name, "champion", version.version, actor="bench", reason="bench", action="promote"
            )
    nodes = sum(e.tree_.node_count for e in forest.estimators_)
    return {
        "stations": stations,
        "archive_rows": archive.rows,
        "archive_days": days,
        "t_serve": t_serve.isoformat(),
        "plan_hash": plan.hash,
        "features": len(names),
        "train_rows": len(x),
        "positive_rate": round(float(y.mean()), 3),
        "forest": {"trees": 400, "min_samples_leaf": 5, "nodes": int(nodes)},
        "forest_onnx_bytes": (paths[MODEL] / "model.onnx").stat().st_size,
        "timings": timings,
    }


def archive_station_ids(archive: Path) -> set[str]:
    """The station ids of a simulated archive."""
    import pyarrow.parquet as pq

    return set(
        pq.read_table(archive / "station_information.parquet").column("station_id").to_pylist()
    )


# -- servers (child processes) ----------------------------------------------------------------


def serve_product(root: Path, port: int, model: str) -> None:
    """dockline's product path: ``create_serving_app`` over the data dir (vectors evaluated at
    request time from per-entity state), the clock fixed just after the data."""
    import dataclasses

    import uvicorn

    from dockline.core.time import FixedClock
    from dockline.pipeline.platform import Platform
    from dockline.pipeline.serve import create_serving_app

    clock = FixedClock(datetime.fromisoformat((root / "t_serve").read_text()))
    platform = Platform.open(root / "data", clock=clock)
    config = platform.config.model_copy(
        update={"serve": platform.config.serve.model_copy(update={"model_name": model})}
    )
    app = create_serving_app(dataclasses.replace(platform, config=config))
    options = app.state.uvicorn_options
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options)


def serve_dockline(root: Path, port: int, model: str) -> None:
    """dockline's app over stored vectors (``create_app(store=...)``): no evaluation at
    request time, the vector is read as written."""
    import uvicorn

    from dockline.core.config import DataDir, ServeConfig
    from dockline.serve import create_app
    from dockline.store import SqliteOnlineStore
    from dockline.train.registry import MlflowRegistry

    data = DataDir(root / "stored")
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


def serve_common(root: Path, port: int, which: str) -> None:
    """The common design: FastAPI + pydantic + a pandas DataFrame + the scikit-learn pipeline
    ``which`` (``rf`` or ``logistic``: the very pipelines the dockline bundles were exported
    from), reading the stored vectors."""
    import warnings

    import joblib
    import pandas as pd
    import uvicorn
    from fastapi import FastAPI, HTTPException

    warnings.filterwarnings("ignore", category=UserWarning)  # joblib's per-call config notice

    from dockline.core.config import DataDir
    from dockline.store import SqliteOnlineStore

    saved = joblib.load(root / f"common-{which}.joblib")
    pipeline, names = saved["pipeline"], saved["features"]
    store = SqliteOnlineStore(DataDir(root / "stored").online_sqlite)
    columns = store.columns(GROUP)

    app = FastAPI()

    @app.post("/v1/predict")
    def predict(request: CommonRequest) -> CommonResponse:
        vector = store.read(request.entity, [GROUP])[GROUP]
        if vector is None:
            raise HTTPException(status_code=404, detail="unknown entity")
        row = dict(zip(columns, vector.values, strict=True))
        frame = pd.DataFrame([row])[names].astype("float64")
        probability = float(pipeline.predict_proba(frame.to_numpy())[0, 1])
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


def _start(kind: str, model: str, root: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--serve", kind, "--model", model, "--root", str(root),
           "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, preexec_fn=lambda: _pin(SERVER_CORE))
    first = json.loads((root / "entities.json").read_text())[0]
    body = json.dumps({"entity": first}).encode()
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


def _probe(port: int, entities: list[str]) -> dict[str, int]:
    """What the server answers for every entity: HTTP status and the body's ``status``."""
    import httpx

    seen: dict[str, int] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for entity in entities:
            response = client.post("/v1/predict", json={"entity": entity})
            status = response.json().get("status", "-") if response.status_code == 200 else "-"
            key = f"{response.status_code} {status}"
            seen[key] = seen.get(key, 0) + 1
    return seen


def _wrk(port: int, concurrency: int, duration: float, script: Path) -> dict[str, Any]:
    cmd = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", f"{TIMEOUT_S:g}s",
        "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(CLIENT_CORE), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    raw = json.loads(line[len("RESULT ") :])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "timeouts": raw["timeout"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "errors": errors,
    }


def _paced(port: int, rate: float, duration: float, entities: list[str]) -> dict[str, Any]:
    """Open-loop load: request i is due at ``i / rate`` s whatever the server does.

    wrk is closed-loop (a slow answer delays the next request, so stalls hide), and wrk2 is not
    packaged here. Latency runs from when a request was *due* to the end of its answer, so
    queueing behind a stall is counted (no coordinated omission). Keep-alive connections come
    from a pool that grows when all are busy. A request unanswered after ``TIMEOUT_S`` is a
    failure (counted in ``errors`` and ``timeouts``) and enters the percentiles as an infinite
    latency, so a tail cannot improve by dropping it.
    """
    import asyncio

    async def run() -> dict[str, Any]:
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        latencies: list[float] = []
        service: list[float] = []
        lags: list[float] = []
        errors = 0
        timeouts = 0
        opened = 0
        slow: list[tuple[float, float]] = []  # (due s into the run, latency ms) over 50 ms

        async def timed(i: int, due: float) -> None:
            nonlocal errors, timeouts
            try:
                await asyncio.wait_for(one(i, due), TIMEOUT_S)
            except TimeoutError:
                errors += 1
                timeouts += 1
                latencies.append(float("inf"))

        async def one(i: int, due: float) -> None:
            nonlocal errors, opened
            body = json.dumps({"entity": entities[i % len(entities)]}).encode()
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
            tasks.append(asyncio.create_task(timed(i, due)))
        await asyncio.gather(*tasks)
        for _, writer in idle:
            writer.close()
        ms = np.array(latencies) * 1000.0
        return {
            "rate": rate,
            "requests": len(tasks),
            "answered": len(latencies),
            "errors": errors,
            "timeouts": timeouts,
            "connections": opened,
            "p50_ms": _ms(np.percentile(ms, 50, method="higher")),
            "p99_ms": _ms(np.percentile(ms, 99, method="higher")),
            "p999_ms": _ms(np.percentile(ms, 99.9, method="higher")),
            "max_ms": _ms(ms.max()),
            # from the send instead of the due time: the server's share, without client lag
            "sent_p50_ms": round(float(np.percentile(np.array(service) * 1000.0, 50)), 3),
            "sent_p99_ms": round(float(np.percentile(np.array(service) * 1000.0, 99)), 3),
            # how late this client sent (a busy client inflates the latencies above)
            "client_lag_p99_ms": round(float(np.percentile(np.array(lags) * 1000.0, 99)), 3),
            "over_50ms": slow[:50],
            "latencies_ms": ms,  # pooled across runs by main(), not saved
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
    cell["timeouts"] = sum(r.get("timeouts", 0) for r in runs)
    cell[f"runs_{listed}"] = [round(r[listed], 3) for r in runs]
    return cell


def _ms(value: float) -> float:
    """A latency, rounded; ``inf`` (``Infinity`` in the JSON) when it is a timed-out request."""
    return round(float(value), 3)


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles over every paced request of every run (timeouts as infinite latencies)."""
    ms = np.concatenate([r.pop("latencies_ms") for r in runs])
    return {
        "samples": int(ms.size),
        "p50_ms": _ms(np.percentile(ms, 50, method="higher")),
        "p99_ms": _ms(np.percentile(ms, 99, method="higher")),
        "p999_ms": _ms(np.percentile(ms, 99.9, method="higher")),
        "max_ms": _ms(ms.max()),
    }


# name -> (server kind, model); "product" is what `dockline serve` runs
SYSTEMS: dict[str, tuple[str, str]] = {
    "floor": ("floor", ""),
    "dockline product (RF-400)": ("product", MODEL),
    "dockline product (logistic)": ("product", f"{MODEL}-logistic"),
    "dockline stored (RF-400)": ("stored", MODEL),
    "dockline stored (logistic)": ("stored", f"{MODEL}-logistic"),
    "common design (RF-400)": ("common", "rf"),
    "common design (logistic)": ("common", "logistic"),
}
SAME_MODEL = {
    "dockline product (RF-400)": "common design (RF-400)",
    "dockline stored (RF-400)": "common design (RF-400)",
    "dockline product (logistic)": "common design (logistic)",
    "dockline stored (logistic)": "common design (logistic)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--stations", type=int, default=1000, help="simulated city (entities)")
    parser.add_argument("--days", type=float, default=1.0, help="simulated history")
    parser.add_argument("--train-every", type=int, default=30, help="training rows: minutes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--rate", type=float, default=500.0, help="open-loop req/s for the paced runs (0: none)"
    )
    parser.add_argument("--paced-duration", type=float, default=5.0)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", choices=["floor", "product", "stored", "common"],
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        if args.serve == "floor":
            serve_floor(args.port)
        elif args.serve == "common":
            serve_common(args.root, args.port, args.model)
        elif args.serve == "stored":
            serve_dockline(args.root, args.port, args.model)
        else:
            serve_product(args.root, args.port, args.model)
        return

    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    load_before = os.getloadavg()[0]
    started = datetime.now(UTC)
    root = Path(tempfile.mkdtemp(prefix="dockline-bench-serving-"))
    try:
        print("setting up (simulated city, ingest, materialize, models, bundles) ...", flush=True)
        setup_info = setup(root, args.stations, args.days, args.train_every)
        print(json.dumps(setup_info), flush=True)
        entities = json.loads((root / "entities.json").read_text())
        _pin(CLIENT_CORE)  # keep this process off the server's core from now on
        script = root / "bench.lua"
        script.write_text(WRK_SCRIPT.format(ids=", ".join(json.dumps(e) for e in entities)))
        # Every server runs for the whole benchmark (idle ones cost nothing) and the runs
        # interleave the systems, so load from outside the benchmark falls on all of them alike.
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        probes: dict[str, dict[str, int]] = {}
        try:
            for name in args.systems:
                port = _free_port()
                kind, model = SYSTEMS[name]
                servers[name] = (_start(kind, model, root, port), port)
                probes[name] = _probe(port, entities)
                _wrk(port, 8, args.warmup, script)
            runs: dict[str, dict[int, list[dict[str, Any]]]] = {n: {} for n in servers}
            paced_runs: dict[str, list[dict[str, Any]]] = {}
            for repeat in range(args.repeats):
                for c in args.concurrency:
                    for name, (_, port) in servers.items():
                        run = _wrk(port, c, args.duration, script)
                        runs[name].setdefault(c, []).append(run)
                        print(
                            f"[{repeat + 1}/{args.repeats}] {name:<28} c={c:<3}"
                            f" {run['rps']:>9.1f} req/s  p50 {run['p50_ms']:.3f} ms"
                            f"  p99 {run['p99_ms']:.3f} ms  errors {run['errors']}",
                            flush=True,
                        )
                if args.rate > 0:
                    for name, (_, port) in servers.items():
                        if name.startswith("common design"):
                            continue  # its capacity is below any useful rate (see the table)
                        run = _paced(port, args.rate, args.paced_duration, entities)
                        paced_runs.setdefault(name, []).append(run)
                        print(
                            f"[{repeat + 1}/{args.repeats}] {name:<28} paced {args.rate:g}/s"
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
    for name in results:
        ratios[name] = {}
        common = results.get(SAME_MODEL.get(name, ""), {})
        for c, cell in results[name].items():
            entry: dict[str, Any] = {}
            if c in floor:
                entry["rps_vs_floor"] = round(cell["rps"] / floor[c]["rps"], 3)
                entry["p50_vs_floor"] = round(cell["p50_ms"] / floor[c]["p50_ms"], 3)
            if c in common:
                entry["rps_vs_common_same_model"] = round(cell["rps"] / common[c]["rps"], 1)
            ratios[name][c] = entry
    paced_pooled = {name: _pooled(r) for name, r in paced_runs.items()}
    for r in paced_runs.values():
        for run in r:
            run.pop("latencies_ms", None)
    import fastapi
    import onnxruntime
    import sklearn
    import uvicorn

    report = {
        "benchmark": "serving",
        "command": "python benchmarks/bench_serving.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "started": started.isoformat(timespec="seconds"),
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
            "timeout_s": TIMEOUT_S,
            "cell": "median over repeats of throughput and wrk's latency percentiles",
        },
        "answers_per_entity": probes,  # one request per entity before the runs
        "results": results,
        "ratios": ratios,
        "paced": {
            "rate": args.rate,
            "duration_s": args.paced_duration,
            "cell": "median over repeats; latency from when each request was due",
            "pooled": paced_pooled,
            "results": {name: _median(r, PACED_CELL, "p99_ms") for name, r in paced_runs.items()},
            "runs": paced_runs,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    print(f"{'system':<28} {'c':>3} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs floor':>9}"
          f" {'vs common':>10} {'errors':>7}")  # fmt: skip
    for name, cells in results.items():
        for c, cell in cells.items():
            r = ratios[name][c]
            print(
                f"{name:<28} {c:>3} {cell['rps']:>10.1f} {cell['p50_ms']:>8.3f}"
                f" {cell['p99_ms']:>8.3f} {r.get('rps_vs_floor', float('nan')):>9.3f}"
                f" {r.get('rps_vs_common_same_model', float('nan')):>10.1f} {cell['errors']:>7}"
            )
    if paced_runs:
        print(f"\nopen loop at {args.rate:g} req/s, {args.repeats} x {args.paced_duration:g} s,"
              " percentiles over all runs' requests")  # fmt: skip
        print(f"{'system':<28} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"
              f" {'max ms':>8} {'errors':>7}")  # fmt: skip
        for name, pooled in paced_pooled.items():
            cell = report["paced"]["results"][name]
            print(
                f"{name:<28} {pooled['samples']:>8} {pooled['p50_ms']:>8.3f}"
                f" {pooled['p99_ms']:>8.3f} {pooled['p999_ms']:>9.3f} {pooled['max_ms']:>8.3f}"
                f" {cell['errors']:>7}"
            )


if __name__ == "__main__":
    main()
