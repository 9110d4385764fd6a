"""What ``?explain=true`` costs per request, per candidate kind, against the same request without.

    .venv/bin/python benchmarks/bench_explain.py [--requests 1000] [--batch 100]

Setup, in a temporary directory: a synthetic matrix of ``--features`` columns (nulls included)
and ``--rows`` rows with a label that depends on a few of them; each trained candidate
(``logistic``, ``lightgbm``, ``extra_trees``) is fitted **with its default parameters** (LightGBM
200 trees of 31 leaves, ExtraTrees 100 trees of depth 10) and exported by training's own
``build_bundle`` (ONNX + ``explain.json``), registered in the real MLflow registry and promoted.
The online store (SQLite) holds a vector for ``--entities`` entities.

Per kind, :func:`dockline.serve.create_app` serves the champion with uvicorn
(``BackgroundServer``); after a warm-up, ``--requests`` single predictions are sent with and
without ``?explain=true``, alternating so both see the same machine load, and ``--batch-requests``
batches of ``--batch`` entities likewise. Recorded per request: the app's own ``latency_ms``
(the body's: decode to encode, what explaining adds) and the client's round trip. Also the
explainer alone on one row (:meth:`Explainer.explain`), and the model's size (leaves, path
features). Writes ``benchmarks/results/explain.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "explain.json"
KINDS = ("logistic", "lightgbm", "extra_trees")
T0 = datetime(2025, 6, 2, 12, tzinfo=UTC)


def _data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[:, 3] = np.round(x[:, 3] * 4)
    signal = x[:, 0] + 0.6 * x[:, 1] - 0.4 * x[:, 2] + 0.3 * x[:, 3] * (x[:, 4] > 0)
    y = (signal + rng.normal(scale=1.0, size=rows) > 0.8).astype(np.int64)
    x[rng.random(x.shape) < 0.03] = np.nan
    return x, y


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
    }


def _bundle(root: Path, kind: str, estimator: Any, names: list[str], x: np.ndarray) -> Any:
    from dockline.core.bundle import Calibration, Lineage, ThresholdChoice
    from dockline.core.config import TrainConfig
    from dockline.train.export import build_bundle

    return build_bundle(
        root,
        estimator=estimator,
        features=names,
        x_test=x[-2000:],
        x_train=x[:-2000],
        train_scores=None,
        project="bench",
        model_name=kind,
        label="y",
        candidate=kind,
        params={},
        calibration=Calibration(method="platt", a=1.1, b=-0.1),
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.6, recall=0.5
        ),
        lineage=Lineage(
            dataset_name="bench",
            dataset_hash="0" * 64,
            plan_hash="1" * 64,
            config_hash="2" * 64,
            code_version="0.1.0",
            seed=0,
        ),
        metrics={},
        train_start=T0 - timedelta(days=30),
        test_end=T0 - timedelta(days=1),
        tolerance=TrainConfig().parity_tolerance,
    )


def _measure(
    url: str, entities: list[str], requests: int, batch: int, batch_requests: int
) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(50):  # warm-up
            for query in ("", "?explain=true"):
                client.post(f"/v1/predict{query}", json={"entity": entities[i % len(entities)]})
        server: dict[str, list[float]] = {"off": [], "on": []}
        client_rt: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(requests):
            entity = entities[i % len(entities)]
            for mode, query in (("off", ""), ("on", "?explain=true"))[:: 1 if i % 2 else -1]:
                t0 = time.perf_counter()
                r = client.post(f"/v1/predict{query}", json={"entity": entity})
                client_rt[mode].append((time.perf_counter() - t0) * 1000)
                body = r.json()
                assert r.status_code == 200, r.text
                assert ("contributions" in body) == (mode == "on")
                server[mode].append(body["latency_ms"])
        out["single"] = {
            mode: {"server": _percentiles(server[mode]), "client": _percentiles(client_rt[mode])}
            for mode in ("off", "on")
        }
        bserver: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(batch_requests):
            start = (i * batch) % len(entities)
            chunk = (entities * 2)[start : start + batch]
            for mode, query in (("off", ""), ("on", "?explain=true"))[:: 1 if i % 2 else -1]:
                r = client.post(f"/v1/predict/batch{query}", json={"entities": chunk})
                assert r.status_code == 200, r.text
                bserver[mode].append(r.json()["latency_ms"])
        out[f"batch_{batch}"] = {mode: _percentiles(bserver[mode]) for mode in ("off", "on")}
    for key in ("single",):
        off, on = out[key]["off"]["server"], out[key]["on"]["server"]
        out[key]["added_p50_ms"] = round(on["p50_ms"] - off["p50_ms"], 4)
        out[key]["added_p99_ms"] = round(on["p99_ms"] - off["p99_ms"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batch-requests", type=int, default=30)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=29)
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import pyarrow as pa

    from dockline.core.config import DataDir, ServeConfig
    from dockline.core.contracts import TS_TYPE
    from dockline.core.explain import load_explainer
    from dockline.core.time import FixedClock, to_micros
    from dockline.pipeline.serve import BackgroundServer
    from dockline.serve import create_app
    from dockline.store import SqliteOnlineStore
    from dockline.train.candidates import TRAINED
    from dockline.train.registry import MlflowRegistry

    started = time.perf_counter()
    names = [f"f{i:02d}" for i in range(args.features)]
    x, y = _data(args.rows, args.features)
    tmp = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    results: dict[str, Any] = {}
    try:
        data = DataDir(tmp / "data")
        store = SqliteOnlineStore(data.online_sqlite)
        store.register("features", [*names, "features__as_of"])
        entities = [f"e{i:04d}" for i in range(args.entities)]
        vectors = x[: args.entities].astype(np.float64)
        table = pa.table(
            {
                "station_id": entities,
                "as_of": pa.array([T0 - timedelta(seconds=30)] * len(entities), TS_TYPE),
                **{
                    n: pa.array(vectors[:, j], mask=np.isnan(vectors[:, j]))
                    for j, n in enumerate(names)
                },
                "features__as_of": pa.array([T0] * len(entities), TS_TYPE),
            }
        )
        store.write("features", table, key="station_id", as_of="as_of", written_at_us=to_micros(T0))
        registry = MlflowRegistry.for_data_dir(data)
        for kind in args.kinds:
            t = time.perf_counter()
            estimator = TRAINED[kind].make(None, seed=0).fit(x[:-2000], y[:-2000])
            bundle = _bundle(tmp / "bundles", kind, estimator, names, x)
            version = registry.register(kind, bundle.path, run_id=None, gate=None).version
            registry.set_alias(
                kind, "champion", version, actor="bench", reason="bench", action="promote"
            )
            explainer = load_explainer(bundle)
            assert explainer is not None
            one = x[-1:]
            alone = []
            for _ in range(200):
                t1 = time.perf_counter()
                explainer.explain(one)
                alone.append((time.perf_counter() - t1) * 1000)
            app = create_app(
                store=store,
                registry=registry,
                model_name=kind,
                config=ServeConfig(reload_poll="1h"),
                data_dir=DataDir(tmp / f"out-{kind}"),
                clock=FixedClock(T0),
            )
            with BackgroundServer(app) as server:
                measured = _measure(
                    server.url, entities, args.requests, args.batch, args.batch_requests
                )
            results[kind] = {
                "model": {
                    "leaves": getattr(explainer, "leaves", None),
                    "max_path_features": getattr(explainer, "width", None),
                    "explain_json_bytes": (bundle.path / "explain.json").stat().st_size,
                },
                "explainer_alone_one_row": _percentiles(alone),
                **measured,
                "setup_s": round(time.perf_counter() - t, 1),
            }
            single = measured["single"]
            print(
                f"{kind:12s} server p50 off {single['off']['server']['p50_ms']:.3f} ms,"
                f" on {single['on']['server']['p50_ms']:.3f} ms;"
                f" p99 off {single['off']['server']['p99_ms']:.3f},"
                f" on {single['on']['server']['p99_ms']:.3f}",
                flush=True,
            )
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "benchmark": "explain",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "seconds": round(time.perf_counter() - started, 1),
        "kinds": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
