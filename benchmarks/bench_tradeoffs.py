"""scikit-learn vs ONNX FP32 vs ONNX INT8: latency, throughput by batch size, accuracy (seed 002).

    .venv/bin/python benchmarks/bench_tradeoffs.py [--data-dir DIR] [--stations 60]
        [--history-days 3] [--calls 1000] [--out benchmarks/results/tradeoffs.json]
        [--plot docs/img/tradeoffs.png]

* **data** — the demo's training set (``dockline demo --no-train``, as ``bench_train.py`` makes
  it; reused when ``--data-dir`` already holds it).
* **models** — every trained candidate (``logistic``, ``lightgbm``, ``extra_trees``) fitted once
  by the product's trainer with default parameters (``n_trials = 0``), then exported as the
  product's bundle with ``train.quantize = "int8"``: the FP32 ONNX model, and the INT8 variant
  with its parity gate where ONNX Runtime's quantizer applies (the logistic's MatMul; tree
  ensembles are not quantizable and are reported so). The same fitted model is on every side.
* **systems** — scikit-learn (``predict_proba`` with every ``n_jobs`` set to 1), ONNX FP32 (the
  bundle's model), and for the logistic the FP32 MatMul form the INT8 model is quantized from
  (so the rewrite's cost is not blamed on INT8) and ONNX INT8 (ONNX Runtime, one thread,
  sequential: serving's settings). Each returns what
  serving answers: the calibrated probability (the bundle's calibration applied to the score).
  The INT8 model is measured even when its gate fails (the gate's verdict is recorded beside).
* **latency** — ``--calls`` calls of batch 1 and of batch 16 (distinct test rows per call,
  cycling), the systems called in turn on each step so outside load falls on all alike: p50,
  p99 in µs. **throughput** — rows/s at batch 1, 16, 256 and 4,096 (median call time; fewer
  calls for the large batches; test rows tiled when fewer than 4,096). **accuracy** — PR-AUC and
  Brier of each system's probabilities on the test split.

Writes ``benchmarks/results/tradeoffs.json`` and the accuracy-vs-latency plot with its Pareto
front (``docs/img/tradeoffs.png``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import dataset_info, make_dataset
from dockline.core.bundle import INT8_FILE, Calibration, OnnxSpec, apply_calibration
from dockline.core.config import TrainConfig
from dockline.pipeline.train import export_bundle
from dockline.train.data import load_training_set
from dockline.train.evaluate import metric
from dockline.train.export import export_onnx
from dockline.train.quantize import int8_parity, quantize_int8
from dockline.train.trainer import train_candidates

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 16, 256, 4096)
SYSTEMS = ("sklearn", "onnx_fp32", "onnx_fp32_matmul", "onnx_int8")
Matrix = npt.NDArray[np.float32]
Scorer = Callable[[Matrix], npt.NDArray[np.float64]]


def _single_threaded(estimator: Any) -> Any:
    """A copy with every ``n_jobs`` set to 1: ONNX Runtime runs on one thread too."""
    clone = copy.deepcopy(estimator)
    steps = [s for _, s in clone.steps] if hasattr(clone, "steps") else [clone]
    for step in steps:
        if "n_jobs" in step.get_params():
            step.set_params(n_jobs=1)
    return clone


def _sklearn(estimator: Any, calibration: Calibration) -> Scorer:
    def score(x: Matrix) -> npt.NDArray[np.float64]:
        return apply_calibration(calibration, estimator.predict_proba(x)[:, 1])

    return score


def _onnx(onnx_bytes: bytes, spec: OnnxSpec, calibration: Calibration) -> Scorer:
    import onnxruntime as ort

    options = ort.SessionOptions()  # BundleScorer's settings
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )
    names, feed = [spec.output_name], spec.input_name

    def score(x: Matrix) -> npt.NDArray[np.float64]:
        (out,) = session.run(names, {feed: x})
        return apply_calibration(calibration, np.asarray(out)[:, spec.positive_index])

    return score


def _batches(x: Matrix, size: int, count: int) -> list[Matrix]:
    rows = x if x.shape[0] >= size else np.resize(x, (size, x.shape[1]))
    starts = [(i * size) % max(1, rows.shape[0] - size + 1) for i in range(count)]
    return [np.ascontiguousarray(rows[s : s + size]) for s in starts]


def _time(systems: dict[str, Scorer], batches: list[Matrix]) -> dict[str, list[float]]:
    """Call every system on each batch in turn (rotating who goes first); µs per call."""
    names = list(systems)
    times: dict[str, list[float]] = {n: [] for n in names}
    for batch in batches[:5]:  # warm-up
        for n in names:
            systems[n](batch)
    for i, batch in enumerate(batches):
        for n in names[i % len(names) :] + names[: i % len(names)]:
            began = time.perf_counter_ns()
            systems[n](batch)
            times[n].append((time.perf_counter_ns() - began) / 1000)
    return times


def _summary(us: list[float], batch: int) -> dict[str, float]:
    a = np.asarray(us)
    p50 = float(np.percentile(a, 50))
    return {
        "calls": len(us),
        "p50_us": round(p50, 1),
        "p99_us": round(float(np.percentile(a, 99)), 1),
        "rows_per_s": round(batch / (p50 / 1e6)),
    }


def _pareto(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats on both latency (lower) and PR-AUC (higher)."""
    front = []
    for name, lat, acc in points:
        dominated = any(
            (lat2 <= lat and acc2 >= acc) and (lat2 < lat or acc2 > acc)
            for n2, lat2, acc2 in points
            if n2 != name
        )
        if not dominated:
            front.append(name)
    return front


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"sklearn": "s", "onnx_fp32": "o", "onnx_fp32_matmul": "D", "onnx_int8": "^"}
    colours = {"logistic": "#0072B2", "lightgbm": "#E69F00", "extra_trees": "#009E73"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    points = []
    for cand, entry in result["candidates"].items():
        for system, measured in entry["systems"].items():
            lat = measured["latency"]["1"]["p50_us"]
            acc = measured["accuracy"]["pr_auc"]
            points.append((f"{cand}/{system}", lat, acc))
            left.scatter(lat, acc, marker=markers[system], color=colours[cand], s=70, alpha=0.85)
            sizes = sorted(int(b) for b in measured["throughput"])
            right.plot(
                sizes,
                [measured["throughput"][str(b)]["rows_per_s"] for b in sizes],
                marker=markers[system],
                color=colours[cand],
                label=f"{cand}/{system}",
            )
    front = sorted((p for p in points if p[0] in result["pareto_front"]), key=lambda p: p[1])
    left.step(
        [p[1] for p in front],
        [p[2] for p in front],
        where="post",
        color="black",
        linestyle="--",
        label="Pareto front",
    )
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=c, marker="o", linestyle="", label=n) for n, c in colours.items()
    ] + [Line2D([], [], color="grey", marker=m, linestyle="", label=n) for n, m in markers.items()]
    handles.append(Line2D([], [], color="black", linestyle="--", label="Pareto front"))
    left.legend(handles=handles, loc="lower right", fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("p50 latency, batch 1 (µs, log)")
    left.set_ylabel("PR-AUC on the test split")
    left.set_title("Accuracy vs speed: PR-AUC against batch-1 latency")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("batch size (rows)")
    right.set_ylabel("rows per second (median call)")
    right.set_title("Throughput by batch size, one thread")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="holds (or receives) the demo dataset")
    parser.add_argument("--stations", type=int, default=60)
    parser.add_argument("--history-days", type=float, default=3)
    parser.add_argument("--calls", type=int, default=1000, help="calls at batch 1 and 16")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tradeoffs.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs/img/tradeoffs.png")
    parser.add_argument("--replot", action="store_true", help="only redraw --plot from --out")
    args = parser.parse_args()
    if args.replot:
        _plot(json.loads(args.out.read_text(encoding="utf-8")), args.plot)
        return
    os.nice(10)
    calls = {1: args.calls, 16: args.calls, 256: max(50, args.calls // 5), 4096: 30}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dockline-bench-tradeoffs-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        print(f"demo training set in {data_dir} ...", flush=True)
        dataset, _ = make_dataset(data_dir, args.stations, args.history_days)
        info = dataset_info(dataset)
        data = load_training_set(dataset, None)
        config = TrainConfig(n_trials=0, label=data.label, quantize="int8")
        print("training the candidates (defaults) ...", flush=True)
        outcome = train_candidates(
            data, config, storage=f"sqlite:///{Path(tmp) / 'optuna.db'}", out_dir=Path(tmp)
        )
        x_test, y_test = outcome.test_X, outcome.test_y
        candidates: dict[str, Any] = {}
        for name, result in outcome.candidates.items():
            print(f"{name}: bundle, INT8, timing ...", flush=True)
            bundle = export_bundle(Path(tmp) / "bundles", data, outcome, config, candidate=name)
            manifest = bundle.manifest
            fp32 = bundle.file(manifest.onnx.file).read_bytes()
            quantized = quantize_int8(
                result.estimator, fp32, manifest.onnx, len(manifest.features), outcome.train_X
            )
            systems: dict[str, Scorer] = {
                "sklearn": _sklearn(_single_threaded(result.estimator), manifest.calibration),
                "onnx_fp32": _onnx(fp32, manifest.onnx, manifest.calibration),
            }
            gate = manifest.int8.model_dump(mode="json") if manifest.int8 else None
            if quantized.onnx is not None:
                # the FP32 graph the INT8 one was quantized from: isolates quantization's effect
                # from the LinearClassifier -> MatMul rewrite
                matmul, _ = export_onnx(
                    result.estimator,
                    len(manifest.features),
                    black_op=frozenset({"LinearClassifier", "Scaler"}),
                )
                systems["onnx_fp32_matmul"] = _onnx(matmul, manifest.onnx, manifest.calibration)
                systems["onnx_int8"] = _onnx(quantized.onnx, manifest.onnx, manifest.calibration)
                if manifest.int8 is not None and manifest.int8.status == "failed":
                    # measured anyway (the bundle ships no INT8 file): recompute to show it
                    again = int8_parity(
                        fp32, quantized.onnx, manifest.onnx, manifest.calibration, x_test
                    )
                    assert again.max_abs_diff == manifest.int8.max_abs_diff
            measured: dict[str, Any] = {
                s: {"latency": {}, "throughput": {}, "accuracy": {}} for s in systems
            }
            for s, scorer in systems.items():
                p = scorer(x_test)
                measured[s]["accuracy"] = {
                    "pr_auc": round(metric("pr_auc", y_test, p), 5),
                    "brier": round(metric("brier", y_test, p), 6),
                }
            for size in BATCHES:
                times = _time(systems, _batches(x_test, size, calls[size]))
                for s, us in times.items():
                    summary = _summary(us, size)
                    measured[s]["throughput"][str(size)] = summary
                    if size in (1, 16):
                        measured[s]["latency"][str(size)] = summary
            ratios = {
                f"{s}_over_onnx_fp32_p50_b{b}": round(
                    measured[s]["throughput"][str(b)]["p50_us"]
                    / measured["onnx_fp32"]["throughput"][str(b)]["p50_us"],
                    2,
                )
                for s in systems
                if s != "onnx_fp32"
                for b in BATCHES
            }
            candidates[name] = {
                "selected": name == outcome.selected,
                "bundle_id": bundle.bundle_id,
                "int8_gate": gate,
                "int8_file_in_bundle": INT8_FILE in manifest.lineage.files,
                "fp32_parity_max_abs_diff": manifest.parity.max_abs_diff,
                "systems": measured,
                "ratios": ratios,
            }
    points = [
        (f"{c}/{s}", m["latency"]["1"]["p50_us"], m["accuracy"]["pr_auc"])
        for c, e in candidates.items()
        for s, m in e["systems"].items()
    ]
    result = {
        "benchmark": "tradeoffs",
        "command": "python " + shlex.join(["benchmarks/bench_tradeoffs.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "setup": {
            "dataset": info,
            "test_rows": int(x_test.shape[0]),
            "train_rows": int(outcome.train_X.shape[0]),
            "features": len(outcome.features),
            "calls": {str(k): v for k, v in calls.items()},
            "threads": 1,
            "n_trials": 0,
        },
        "candidates": candidates,
        "pareto_front": _pareto(points),
        "seconds": round(time.perf_counter() - began, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    _plot(result, args.plot)
    print(json.dumps({k: v["ratios"] for k, v in candidates.items()}, indent=1))
    print(f"wrote {args.out} and {args.plot} in {result['seconds']} s")


if __name__ == "__main__":
    main()
