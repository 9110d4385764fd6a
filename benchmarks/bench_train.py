"""A full ``dockline train`` on the demo data, then ONNX bundle vs native model inference.

    .venv/bin/python benchmarks/bench_train.py [--stations 200] [--history-days 7]
        [--trials N] [--repeats 1] [--cores 2] [--data-dir DIR] [--all-candidates]

* **data** — the demo's training set, made by the real CLI in a subprocess (``dockline demo
  --no-train --json``) in a temporary data directory, or in ``--data-dir`` (reused when it
  already holds ``datasets/demo-empty_next_hour``): its rows and features are recorded.
* **train** — ``dockline train --dataset … --json`` as a subprocess pinned to ``--cores`` CPUs:
  the real full run (Optuna tuning of every candidate with the config's trials or ``--trials``,
  calibration, reports, ONNX export with parity, MLflow runs, registry). Wall time, and peak
  memory of the process tree two ways: psutil polling every 50 ms, summing RSS over the process
  and its children; and the kernel's ``ru_maxrss`` of the reaped child (``wait4``, the per-child
  form of ``getrusage(RUSAGE_CHILDREN)``). Each of ``--repeats`` runs gets a fresh train data
  directory (no Optuna study, MLflow store or bundle of an earlier run), so each does all the
  work; medians are reported, and the bundle ids of all runs must agree.
* **inference** — the run's bundle scored by :class:`dockline.core.bundle.BundleScorer` (ONNX
  Runtime, one thread) against the native scikit-learn-API model, rebuilt in this process by
  ``train_candidates`` with the run's config and Optuna storage: the finished studies are reused
  (no trial runs again, checked), so the same parameters are refitted with the same seed. The
  native raw scores must match ``BundleScorer.raw`` on the test split within 1e-5, or the
  benchmark stops. Per row: ``--rows`` distinct test rows after a warm-up; per batch:
  ``--batches`` 256-row test slices; p50/p99 in µs. The systems are called in turn, row by row,
  so outside load falls on all alike. Native runs with one thread (``n_jobs=1`` set on every
  step that has the parameter) and, when it was trained with more, also as trained. Ratios are
  native / ONNX. ``--all-candidates`` exports and measures the other trained candidates too.

Writes ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

from dockline.core.bundle import BundleScorer, load_bundle
from dockline.core.config import DataDir, TrainConfig
from dockline.pipeline.train import export_bundle
from dockline.train.candidates import positive_scores
from dockline.train.data import METADATA_FILE, TrainingData, load_training_set
from dockline.train.trainer import TrainOutcome, train_candidates

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "train.json"
DATASET = "demo-empty_next_hour"
POLL_S = 0.05
PARITY_TOLERANCE = 1e-5
BATCH = 256
BLOCK = 25
MIB = 1024 * 1024

Matrix = npt.NDArray[np.float32]
Call = Callable[[Matrix], Any]


# -- data ---------------------------------------------------------------------------------------


def dockline_cmd(data_dir: Path, *args: str) -> list[str]:
    """The CLI as a user runs it, with this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", "dockline", "--data-dir", str(data_dir), *args]


def make_dataset(data_dir: Path, stations: int, history_days: float) -> tuple[Path, float | None]:
    """The demo's training set in ``data_dir`` (built by ``dockline demo`` unless present)."""
    dataset = DataDir(data_dir).datasets / DATASET
    if (dataset / METADATA_FILE).exists():
        return dataset, None
    cmd = dockline_cmd(
        data_dir,
        "demo",
        "--no-train",
        "--json",
        "--stations",
        str(stations),
        "--history-days",
        f"{history_days:g}",
    )
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"dockline demo failed ({done.returncode}): {shlex.join(cmd)}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    built = report["features"]["dataset"]
    if not built:
        raise SystemExit("dockline demo built no training set (too little history?)")
    return Path(built), seconds


def dataset_info(dataset: Path) -> dict[str, Any]:
    """Rows and features as the dataset's metadata records them."""
    meta = json.loads((dataset / METADATA_FILE).read_text(encoding="utf-8"))
    return {
        "path": str(dataset),
        "rows": meta["row_count"],
        "feature_count": meta.get("feature_count"),
        "labels": meta.get("extra", {}).get("labels"),
        "time_range": [meta.get("time_range_start"), meta.get("time_range_end")],
        "bytes": sum(f.stat().st_size for f in dataset.iterdir() if f.is_file()),
    }


# -- the measured subprocess --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    """Wall time, memory and CPU time of one child process tree."""

    returncode: int
    wall_s: float
    peak_rss_tree: int
    """Largest sum of RSS over the process and its descendants seen by polling (bytes)."""
    max_children: int
    ru_maxrss: int
    """The kernel's peak RSS of the child (or its largest waited-for descendant), bytes."""
    cpu_user_s: float
    cpu_sys_s: float


def _tree_rss(proc: psutil.Process) -> tuple[int, int]:
    total, count = 0, 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for member in members:
        try:
            total += member.memory_info().rss
            count += 1
        except psutil.Error:  # exited between listing and reading
            pass
    return total, max(0, count - 1)


def run_measured(cmd: list[str], cores: list[int], stdout: Path, stderr: Path) -> Measured:
    """Run ``cmd`` pinned to ``cores``; poll its tree's RSS until ``wait4`` reaps it."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        began = time.perf_counter()
        # Output goes to files, not pipes: nothing reads a pipe while this loop polls.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, cwd=REPO, preexec_fn=lambda: os.sched_setaffinity(0, cores)
        )
        watched = psutil.Process(proc.pid)
        peak, children = 0, 0
        while True:
            # wait4 rather than Popen.poll: it also returns the child's own rusage, which
            # getrusage(RUSAGE_CHILDREN) would mix with the demo subprocess run earlier.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss, n = _tree_rss(watched)
            peak, children = max(peak, rss), max(children, n)
            time.sleep(POLL_S)
        wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_tree=peak,
        max_children=children,
        ru_maxrss=usage.ru_maxrss * 1024,  # KiB on Linux
        cpu_user_s=usage.ru_utime,
        cpu_sys_s=usage.ru_stime,
    )


def fresh_train_dir(path: Path, data_dir: Path) -> Path:
    """An empty data directory for one train run, with the data directory's config if any.

    The run's state — ``mlruns/`` (MLflow store, Optuna ``optuna.db``, alias history),
    ``bundles/``, ``runs/`` and ``lineage/`` — starts absent, so the run tunes from scratch.
    """
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    config = DataDir(data_dir).config_file
    if config.exists():
        shutil.copy2(config, DataDir(path).config_file)
    return path


def train_once(
    dataset: Path, train_dir: Path, trials: int | None, cores: list[int]
) -> tuple[Measured, dict[str, Any]]:
    """One ``dockline train --json`` run in ``train_dir``: measurements and its summary."""
    cmd = dockline_cmd(train_dir, "train", "--dataset", str(dataset), "--json")
    if trials is not None:
        cmd += ["--trials", str(trials)]
    stdout, stderr = train_dir / "train.stdout", train_dir / "train.stderr"
    measured = run_measured(cmd, cores, stdout, stderr)
    if measured.returncode != 0:
        sys.stderr.write(stderr.read_text(errors="replace")[-4000:])
        raise SystemExit(f"dockline train failed ({measured.returncode}): {shlex.join(cmd)}")
    lines = [ln for ln in stdout.read_text().splitlines() if ln.startswith("{")]
    return measured, json.loads(lines[-1])


# -- the native model, rebuilt in process -------------------------------------------------------


def run_config(train_dir: Path, trials: int | None) -> TrainConfig:
    """The TrainConfig the CLI run used (its data directory's config, ``--trials`` applied)."""
    config = DataDir(train_dir).config().train
    return config if trials is None else config.model_copy(update={"n_trials": trials})


def count_trials(db: Path) -> int:
    """Optuna trials stored in ``db`` (all studies, all states)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])


def rebuild_native(
    dataset: Path, train_dir: Path, config: TrainConfig, out_dir: Path
) -> tuple[TrainingData, TrainOutcome, dict[str, Any]]:
    """``train_candidates`` as the CLI ran it, on the CLI run's Optuna storage.

    The whole config, not one restricted to the selected candidate: the study name hashes the
    config, ``candidates`` included, so a restricted config would search a new study.
    """
    db = DataDir(train_dir).tuning_db
    before = count_trials(db)
    began = time.perf_counter()
    data = load_training_set(dataset, config.label, max_rows=config.max_rows)
    outcome = train_candidates(data, config, storage=f"sqlite:///{db.resolve()}", out_dir=out_dir)
    seconds = time.perf_counter() - began
    after = count_trials(db)
    if after != before:
        raise SystemExit(
            f"rebuilding the native models ran {after - before} new Optuna trials: the CLI run's"
            " studies were not reused, so the models need not be the same"
        )
    info = {
        "seconds": round(seconds, 2),
        "stored_trials": after,
        "new_trials": after - before,
        "model_features": len(data.features),
        "test_rows": int(outcome.test_X.shape[0]),
    }
    return data, outcome, info


def single_threaded(estimator: Any) -> tuple[Any, dict[str, Any]]:
    """A copy of ``estimator`` with ``n_jobs=1`` on every step having it; what was changed."""
    clone = copy.deepcopy(estimator)
    changed: dict[str, Any] = {}
    for name, step in getattr(clone, "steps", [("model", clone)]):
        params = step.get_params(deep=False)
        threads = params.get("n_jobs", 1)
        # None is one job for scikit-learn (joblib) but every core for LightGBM (OpenMP).
        if threads is None and not type(step).__module__.startswith("lightgbm"):
            threads = 1
        if threads != 1:
            changed[f"{name}.n_jobs"] = params["n_jobs"]
            step.set_params(n_jobs=1)
    return clone, changed


def check_same_model(name: str, native: Any, scorer: BundleScorer, x: Matrix) -> float:
    """Max |native − ONNX| raw score on ``x``; stops the benchmark beyond the tolerance."""
    diff = np.abs(positive_scores(native, x) - scorer.raw(x))
    worst = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
    if worst > PARITY_TOLERANCE:
        raise SystemExit(
            f"{name}: the rebuilt native model and the bundle disagree on the test split:"
            f" max |Δ raw| {worst:.3g} > {PARITY_TOLERANCE:g} over {x.shape[0]} rows"
        )
    return worst


def same_metrics(mine: dict[str, float], printed: dict[str, Any]) -> bool:
    """Whether two metric dicts agree (JSON printed NaN as null)."""
    if mine.keys() != printed.keys():
        return False
    for key, value in mine.items():
        other = printed[key]
        if np.isnan(value) != (other is None or np.isnan(other)):
            return False
        if not np.isnan(value) and abs(value - other) > 1e-12:
            return False
    return True


# -- timing -------------------------------------------------------------------------------------


def time_interleaved(
    calls: dict[str, Call], inputs: list[Matrix], warmup: list[Matrix]
) -> dict[str, npt.NDArray[np.float64]]:
    """Seconds per call of each system on each input, after ``warmup`` (untimed).

    The systems take turns block by block (``BLOCK`` inputs): outside load then falls on all
    alike, while each call still follows calls of the same system, as in serving. (Turns call
    by call flattered whichever system ran second on an input the first had just touched.)
    """
    names = list(calls)
    for x in warmup:
        for name in names:
            calls[name](x)
    samples = {name: np.empty(len(inputs)) for name in names}
    clock = time.perf_counter_ns
    # A collection triggered by one call's garbage would be charged to whichever system ran
    # next; it is noise, not a property of either.
    gc.collect()
    gc.disable()
    try:
        for b, start in enumerate(range(0, len(inputs), BLOCK)):
            for k in range(len(names)):
                name = names[(b + k) % len(names)]  # rotate: no system always runs first
                fn, out = calls[name], samples[name]
                for i in range(start, min(start + BLOCK, len(inputs))):
                    x = inputs[i]
                    t0 = clock()
                    fn(x)
                    out[i] = (clock() - t0) / 1e9
    finally:
        gc.enable()
    return samples


def stats(seconds: npt.NDArray[np.float64], rows: int) -> dict[str, float]:
    """p50/p99 per call in µs, and the p50 per row."""
    p50, p99 = (float(v) * 1e6 for v in np.percentile(seconds, [50, 99]))
    return {
        "p50_us": round(p50, 2),
        "p99_us": round(p99, 2),
        "p50_us_per_row": round(p50 / rows, 3),
        "calls": int(seconds.size),
    }


def compare(
    native: Any, scorer: BundleScorer, x: Matrix, n_rows: int, n_batches: int, seed: int
) -> dict[str, Any]:
    """Per-row and 256-row latency of the native model (1 thread, as trained) and ONNX."""
    one_thread, changed = single_threaded(native)
    if changed and not np.array_equal(positive_scores(one_thread, x), positive_scores(native, x)):
        raise SystemExit(f"{changed} → 1 changed the native model's scores")
    calls: dict[str, Call] = {
        "native_1_thread": lambda m: one_thread.predict_proba(m)[:, 1],
        "onnx_raw": scorer.raw,
        "onnx_score": scorer.score,
    }
    if changed:
        calls["native_as_trained"] = lambda m: native.predict_proba(m)[:, 1]
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    picks = np.resize(order, n_rows)  # distinct rows while the test split has enough
    warmup = [x[i : i + 1] for i in rng.integers(0, n, 200)]
    single = time_interleaved(calls, [x[i : i + 1] for i in picks], warmup)
    size = min(BATCH, n)
    starts = rng.integers(0, n - size + 1, n_batches + 20)
    slices = [x[s : s + size] for s in starts]
    batch = time_interleaved(calls, slices[20:], slices[:20])
    result: dict[str, Any] = {
        "native_threads_changed": changed,
        "distinct_rows": int(min(n_rows, n)),
        "batch_rows": size,
        "per_row": {k: stats(v, 1) for k, v in single.items()},
        "batch": {k: stats(v, size) for k, v in batch.items()},
    }
    ratios: dict[str, dict[str, float]] = {}
    for mode in ("per_row", "batch"):
        cells = result[mode]
        for native_key in ("native_1_thread", "native_as_trained"):
            for onnx_key in ("onnx_raw", "onnx_score"):
                if native_key in cells:
                    ratios[f"{mode}:{native_key}/{onnx_key}"] = {
                        q: round(cells[native_key][q] / cells[onnx_key][q], 2)
                        for q in ("p50_us", "p99_us")
                    }
    result["ratios"] = ratios
    return result


# -- report -------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of the libraries whose speed is measured."""
    import lightgbm
    import onnxruntime
    import optuna
    import sklearn

    return {
        "lightgbm": lightgbm.__version__,
        "scikit_learn": sklearn.__version__,
        "onnxruntime": onnxruntime.__version__,
        "optuna": optuna.__version__,
        "numpy": np.__version__,
    }


def print_report(result: dict[str, Any]) -> None:
    """The readable tables."""
    setup, train = result["setup"], result["train"]
    ds = setup["dataset"]
    print(
        f"\ndataset {ds['rows']:,} rows × {ds['feature_count']} features"
        f" ({setup['stations']} stations, {setup['history_days']:g} days);"
        f" {setup['n_trials']} trials per candidate; cores {setup['cores']}"
    )
    print(f"{'dockline train':<16} {'wall s':>8} {'peak RSS MiB':>13} {'ru_maxrss MiB':>14}"
          f" {'cpu s':>8} {'procs':>6}")  # fmt: skip
    for i, run in enumerate(train["runs"], 1):
        print(
            f"{'run ' + str(i):<16} {run['wall_s']:>8.1f} {run['peak_rss_tree_mib']:>13.0f}"
            f" {run['ru_maxrss_mib']:>14.0f} {run['cpu_s']:>8.1f} {run['max_children'] + 1:>6}"
        )
    med = train["median"]
    print(
        f"{'median':<16} {med['wall_s']:>8.1f} {med['peak_rss_tree_mib']:>13.0f}"
        f" {med['ru_maxrss_mib']:>14.0f} {med['cpu_s']:>8.1f}"
    )
    print(
        f"selected {train['selected']} (bundle {train['bundle_id']}, test"
        f" {train['primary_metric']} {train['test_metrics'][train['primary_metric']]:.4f},"
        f" gate {'passed' if train['gate']['passed'] else 'failed'})"
    )
    print(
        f"\n{'candidate':<12} {'calls':<8} {'system':<18} {'p50 µs':>9} {'p99 µs':>9}"
        f" {'µs/row':>8} {'p50 ÷ ONNX raw':>15}"
    )
    for name, cell in result["inference"].items():
        for mode, label in (("per_row", "1 row"), ("batch", f"{cell['batch_rows']} rows")):
            onnx = cell[mode]["onnx_raw"]["p50_us"]
            for system, s in cell[mode].items():
                print(
                    f"{name:<12} {label:<8} {system:<18} {s['p50_us']:>9.1f} {s['p99_us']:>9.1f}"
                    f" {s['p50_us_per_row']:>8.2f} {s['p50_us'] / onnx:>15.2f}"
                )
        if cell["native_threads_changed"]:
            print(f"{'':<12} native_1_thread: set {cell['native_threads_changed']} → 1")


def main() -> None:
    """Build the data, time the train runs, compare inference, print and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--trials", type=int, default=None, help="default: the config's")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cores", type=int, default=2, help="CPUs the train run is pinned to")
    parser.add_argument("--data-dir", type=Path, help="holds (or receives) the demo dataset")
    parser.add_argument("--rows", type=int, default=2000, help="single-row calls timed")
    parser.add_argument("--batches", type=int, default=200, help="256-row calls timed")
    parser.add_argument("--all-candidates", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    available = sorted(os.sched_getaffinity(0))
    cores = available[: args.cores]
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="dockline-bench-train-"))
    try:
        data_dir = args.data_dir or work / "data"
        print(f"demo training set in {data_dir} ...", flush=True)
        dataset, demo_s = make_dataset(data_dir, args.stations, args.history_days)
        info = dataset_info(dataset)
        print(f"  {info['rows']:,} rows, {info['feature_count']} features", flush=True)

        runs: list[dict[str, Any]] = []
        summaries: list[dict[str, Any]] = []
        train_dir = work / "train"
        for rep in range(args.repeats):
            fresh_train_dir(train_dir, data_dir)
            measured, summary = train_once(dataset, train_dir, args.trials, cores)
            run = {
                "wall_s": round(measured.wall_s, 2),
                "train_seconds_reported": summary["seconds"],
                "peak_rss_tree_mib": round(measured.peak_rss_tree / MIB, 1),
                "ru_maxrss_mib": round(measured.ru_maxrss / MIB, 1),
                "cpu_s": round(measured.cpu_user_s + measured.cpu_sys_s, 2),
                "cpu_user_s": round(measured.cpu_user_s, 2),
                "cpu_sys_s": round(measured.cpu_sys_s, 2),
                "max_children": measured.max_children,
                "bundle_id": summary["bundle_id"],
            }
            print(f"train {rep + 1}/{args.repeats}: {run}", flush=True)
            runs.append(run)
            summaries.append(summary)
        summary = summaries[-1]
        bundle_ids = sorted({s["bundle_id"] for s in summaries})
        config = run_config(train_dir, args.trials)

        print("rebuilding the native models in process ...", flush=True)
        data, outcome, rebuild = rebuild_native(dataset, train_dir, config, work / "native")
        if outcome.selected != summary["selected"]:
            raise SystemExit(
                f"the rebuild selected {outcome.selected}, the CLI run {summary['selected']}"
            )
        bundle = load_bundle(Path(summary["bundle_path"]))
        if list(bundle.manifest.features) != list(outcome.features):
            raise SystemExit("the bundle's features differ from the rebuilt training set's")
        scorers: dict[str, tuple[Any, BundleScorer]] = {
            outcome.selected: (outcome.best.estimator, BundleScorer(bundle))
        }
        if args.all_candidates:
            for name, res in outcome.candidates.items():
                if name != outcome.selected:
                    other = export_bundle(work / "bundles", data, outcome, config, candidate=name)
                    scorers[name] = (res.estimator, BundleScorer(other))
        x_test = np.ascontiguousarray(outcome.test_X, dtype=np.float32)
        inference: dict[str, Any] = {}
        for name, (native, scorer) in scorers.items():
            worst = check_same_model(name, native, scorer, x_test)
            print(f"timing {name} (native vs ONNX max |Δ raw| {worst:.2g}) ...", flush=True)
            inference[name] = {
                "bundle_id": scorer.bundle.bundle_id,
                "onnx_bytes": scorer.bundle.file(scorer.bundle.manifest.onnx.file).stat().st_size,
                "params": outcome.candidates[name].params,
                "max_abs_diff_raw": worst,
                **compare(native, scorer, x_test, args.rows, args.batches, args.seed),
            }
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    median = {
        key: round(statistics.median(r[key] for r in runs), 2)
        for key in ("wall_s", "peak_rss_tree_mib", "ru_maxrss_mib", "cpu_s")
    }
    result = {
        "benchmark": "train",
        "command": shlex.join(["python", "benchmarks/bench_train.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "train_pinned_to_cpus": cores,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
            **versions(),
        },
        "setup": {
            "stations": args.stations,
            "history_days": args.history_days,
            "n_trials": config.n_trials,
            "trials_option": args.trials,
            "candidates": list(config.candidates),
            "cv_folds": config.cv_folds,
            "repeats": args.repeats,
            "cores": len(cores),
            "demo_seconds": None if demo_s is None else round(demo_s, 1),
            "dataset": info,
            "rss_poll_s": POLL_S,
            "timed_rows": args.rows,
            "timed_batches": args.batches,
        },
        "train": {
            "runs": runs,
            "median": median,
            "bundle_ids_agree": len(bundle_ids) == 1,
            "bundle_id": summary["bundle_id"],
            "selected": summary["selected"],
            "model_name": summary["model_name"],
            "version": summary["version"],
            "alias": summary["alias"],
            "gate": summary["gate"],
            "primary_metric": summary["primary_metric"],
            "test_metrics": summary["test_metrics"],
            "candidates": summary["candidates"],
            "baselines": summary["baselines"],
            "parity_max_abs_diff": summary["parity_max_abs_diff"],
            "rows": summary["rows"],
        },
        "native_rebuild": {
            **rebuild,
            "selected_matches": True,
            "test_metrics_match": same_metrics(outcome.best.test_metrics, summary["test_metrics"]),
        },
        "inference": inference,
    }
    if len(bundle_ids) != 1:
        print(f"WARNING: the repeats produced different bundles: {bundle_ids}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    print_report(result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
