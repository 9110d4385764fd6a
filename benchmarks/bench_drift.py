"""Benchmark drift detection: dockline vs Evidently's DataDriftPreset on the same frames.

Run: ``.venv/bin/python benchmarks/bench_drift.py [--stations 300] [--features 30]
[--reference-hours 24] [--repeats 5] [--big-rows 1000000] [--no-evidently]``.

Frames are station-feature-like columns (gaussian means, exponential "minutes since", beta
fractions, Poisson counts, rare flags, small integer counts, lognormal), one row per station
per minute. Measured, each in its own child process pinned to one thread (``*_NUM_THREADS=1``):

* **hour** — the goal's case: a reference day (stations × 1440 rows) against one hour
  (stations × 60 rows), all features. ``dockline`` times frames → verdicts (building the
  reference bins included); ``dockline_baseline`` times what a live monitor pays per hour once
  the bundle's baseline exists (sketch + compare); **Evidently 0.7** ``Report([DataDriftPreset()])
  .run(current, reference)`` in a separate venv (``benchmarks/.venv-evidently``, created on demand).
* **null** — ``--big-rows`` reference and current rows from the same distribution: features
  flagged (the goal: none).
* **shift** — the same, with one feature's mean moved by 0.25 σ: features flagged (the goal:
  that feature only).

Medians over ``--repeats`` of the timed section (inputs loaded, imports done, one warm-up).
Writes ``benchmarks/results/drift.json``.

``--divvy`` instead replays a stable real week: the bike-share features of every Divvy station
every 10 minutes over two weeks of April 2014 (ingested from ``../shared/data/divvy`` into
``--divvy-data``, kept for the next run), the first week summarized by training's own drift
baseline, the second judged hour by hour as the live monitor would (prediction-log path:
``reference_from_baseline`` → ``sketch_many`` per hour → ``compare``): the dataset-level verdict
on the merged trailing 24 h (``dataset_window``), each hour's own verdict for comparison, the
daily verdicts, and each day's riding activity. The goal: at most one false dataset-level
alert. Writes ``benchmarks/results/drift_divvy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EVIDENTLY_VENV = HERE / ".venv-evidently"
# pandas 3 removed a helper Evidently 0.7 imports.
EVIDENTLY_REQUIREMENTS = ["evidently==0.7.*", "pandas<3"]
TARGET_SECONDS = 1.0
TARGET_VS_EVIDENTLY = 10.0
SHIFTED = "f07_bikes_mean_60m"

EVIDENTLY_CHILD = r"""
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

ref_path, cur_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
ref = pd.DataFrame(dict(np.load(ref_path)))
cur = pd.DataFrame(dict(np.load(cur_path)))

def once():
    return Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)

snap = once()  # warm-up
times = []
for _ in range(repeats):
    t = time.perf_counter()
    snap = once()
    times.append(time.perf_counter() - t)
flagged, methods = [], {}
for m in snap.dict()["metrics"]:
    cfg = m["config"]
    if cfg.get("type", "").endswith("ValueDrift"):
        methods[cfg["column"]] = cfg["method"]
        p_value = "p_value" in cfg["method"]
        if (m["value"] < cfg["threshold"]) if p_value else (m["value"] >= cfg["threshold"]):
            flagged.append(cfg["column"])
import evidently
print(json.dumps({"seconds": statistics.median(times), "runs": times, "flagged": sorted(flagged),
                  "methods": sorted(set(methods.values())), "version": evidently.__version__}))
"""


# -- frames ---------------------------------------------------------------------------------


def make_frame(rows: int, features: int, seed: int, shift: str | None = None) -> dict[str, Any]:
    """``features`` columns cycling through seven station-feature shapes."""
    rng = np.random.default_rng(seed)
    shapes = [
        ("bikes_mean_60m", lambda k: rng.normal(8.0 + k, 3.0, rows)),
        ("minutes_since_empty", lambda k: rng.exponential(60.0 + 10 * k, rows)),
        ("fill_ratio", lambda k: rng.beta(2.0, 3.0 + k % 3, rows)),
        ("count_60m", lambda k: rng.poisson(30.0 + k, rows).astype(np.float64)),
        ("is_renting", lambda k: (rng.random(rows) < 0.97).astype(np.float64)),
        ("empty_snapshots", lambda k: rng.integers(0, 5 + k % 4, rows).astype(np.float64)),
        ("gap", lambda k: rng.lognormal(0.0, 0.5 + 0.05 * k, rows)),
    ]
    cols: dict[str, Any] = {}
    for i in range(features):
        name, draw = shapes[i % len(shapes)]
        cols[f"f{i:02d}_{name}"] = draw(i // len(shapes))
    if shift is not None:
        cols[shift] = cols[shift] + 0.25 * cols[shift].std()
    return cols


def save(path: Path, frame: dict[str, Any]) -> Path:
    np.savez(path, **frame)
    return path


# -- children -------------------------------------------------------------------------------


def child_dockline(ref_path: str, cur_path: str, repeats: int) -> dict[str, Any]:
    from dockline.core.config import MonitorDriftConfig
    from dockline.monitor import compare, drift_frames, reference_from_values, sketch_many

    config = MonitorDriftConfig()
    ref = dict(np.load(ref_path))
    cur = dict(np.load(cur_path))
    result = drift_frames(ref, cur, config)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = drift_frames(ref, cur, config)
        times.append(time.perf_counter() - t)
    # The live path: references exist (the bundle's baseline); each hour pays sketch + compare.
    refs = [reference_from_values(n, ref[n]) for n in ref]
    live = []
    for _ in range(repeats):
        t = time.perf_counter()
        sketches = {r.name: sketch_many(r, cur[r.name])[0] for r in refs}
        compare(refs, sketches, config)
        live.append(time.perf_counter() - t)
    return {
        "seconds": statistics.median(times),
        "runs": times,
        "baseline_seconds": statistics.median(live),
        "flagged": sorted(n for n, f in result.features.items() if f.drift),
        "dataset_drift": result.drift,
        "max_score": {
            m: max((f.score for f in result.features.values() if f.method == m), default=None)
            for m in ("wasserstein", "jensenshannon")
        },
        "shifted_score": result.features[SHIFTED].score if SHIFTED in result.features else None,
    }


def spawn(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run a child pinned to one thread; its last stdout line as JSON, or the error."""
    env = dict(os.environ)
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ):
        env[var] = "1"
    env["PYTHONPATH"] = str(REPO / "src")
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-3:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 3)
    return result


def ensure_evidently() -> Path:
    """The Evidently venv's python, creating the venv on first use."""
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {EVIDENTLY_VENV} with {EVIDENTLY_REQUIREMENTS} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *EVIDENTLY_REQUIREMENTS], check=True
        )
    return python


def measure(
    name: str,
    ref: Path,
    cur: Path,
    args: argparse.Namespace,
    evidently: Path | None,
    workdir: Path,
) -> dict[str, Any]:
    me = [sys.executable, str(Path(__file__).resolve())]
    out: dict[str, Any] = {
        "dockline": spawn([*me, "--child", str(ref), str(cur), str(args.repeats)], args.timeout)
    }
    print(f"  {name} dockline  {out['dockline']}", flush=True)
    if evidently is not None:
        script = workdir / "evidently_child.py"
        script.write_text(EVIDENTLY_CHILD)
        out["evidently"] = spawn(
            [str(evidently), str(script), str(ref), str(cur), str(args.evidently_repeats)],
            args.timeout,
        )
        print(f"  {name} evidently {out['evidently']}", flush=True)
        d, e = out["dockline"].get("seconds"), out["evidently"].get("seconds")
        out["evidently_vs_dockline"] = round(e / d, 1) if d and e else None
    return out


def divvy_week(args: argparse.Namespace) -> dict[str, Any]:
    """Hourly drift over a real week against the week before (see the module docstring)."""
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dockline.core.config import MonitorDriftConfig
    from dockline.features import compile_project, load_project
    from dockline.features.offline import OfflineExecutor, grid_spine
    from dockline.monitor import compare, reference_from_baseline, sketch_many, window_ids
    from dockline.pipeline.ingest import ingest_archive, sink_offline
    from dockline.pipeline.platform import Platform
    from dockline.train.export import drift_baseline

    data = Path(args.divvy_data)
    divvy = REPO.parent / "shared" / "data" / "divvy"
    if not (REPO.parent / "shared").is_dir():
        divvy = REPO.parents[2] / "shared" / "data" / "divvy"
    if not (data / "offline" / "station_status").is_dir():
        archive = data.parent / "divvy-archive"
        (archive / "station_status").mkdir(parents=True, exist_ok=True)
        for name in (
            "station_status/2014-03.parquet",
            "station_status/2014-04.parquet",
            "station_information.parquet",
        ):
            link = archive / name
            if not link.exists():
                link.symlink_to(divvy / name)
        platform = Platform.open(data)
        t = time.perf_counter()
        ingest_archive(platform, archive)
        sink_offline(platform)
        print(f"  ingested Divvy 2014-03..04 in {time.perf_counter() - t:.0f} s", flush=True)
    plan = compile_project(load_project(REPO / "examples" / "bikeshare"))
    store = {t: str(data / "offline" / t) for t in ("station_status", "station_information")}
    week1 = datetime(2014, 4, 7, 5, tzinfo=UTC)  # Monday 00:00 in Chicago
    week2, end = week1 + timedelta(days=7), week1 + timedelta(days=14)
    cache = data / "features-2014-04-07-2w-10m.parquet"
    t = time.perf_counter()
    if cache.exists():
        table = pq.read_table(cache)
        stations = pc.unique(table[plan.key]).to_pylist()
    else:
        executor = OfflineExecutor(plan, store, threads=1)
        stations = executor.entities(week1, end)
        spine = grid_spine(stations, week1, end, timedelta(minutes=10), key=plan.key)
        table = executor.features(spine)
        executor.close()
        pq.write_table(table, cache)
    features_s = time.perf_counter() - t
    names = list(plan.feature_names)
    as_of = pc.cast(table["as_of"], pa.int64()).to_numpy()
    matrix = np.column_stack(
        [table[n].cast(pa.float64()).to_numpy(zero_copy_only=False) for n in names]
    )
    first = as_of < int(week2.timestamp() * 1_000_000)
    config = MonitorDriftConfig()
    baseline = drift_baseline(matrix[first], names)
    refs = [
        reference_from_baseline(fb, categorical_max_values=config.categorical_max_values)
        for fb in baseline.features
        if fb.bin_counts
    ]
    column = {n: i for i, n in enumerate(names)}
    t = time.perf_counter()
    # Hour sketches over both weeks: the live monitor's trailing 24 h on Monday morning of the
    # second week reaches back into the first, as the prediction log would.
    ids, n_windows, _ = window_ids(as_of, 3_600_000_000)
    sketches = {r.name: sketch_many(r, matrix[:, column[r.name]], ids, n_windows) for r in refs}
    hours = range(n_windows // 2, n_windows)  # the second week

    def merged(lo: int, hi: int) -> dict[str, Any]:
        out = {}
        for name, parts in sketches.items():
            acc = parts[lo]
            for k in range(lo + 1, hi):
                acc = acc.merge(parts[k])
            out[name] = acc
        return out

    hourly = [compare(refs, {n: p[h] for n, p in sketches.items()}, config) for h in hours]
    trailing = [compare(refs, merged(h - 23, h + 1), config) for h in hours]
    daily = [
        compare(refs, merged(d * 24, d * 24 + 24), config)
        for d in range(n_windows // 48, n_windows // 24)
    ]
    drift_s = time.perf_counter() - t
    alert_hours = [i for i, r in enumerate(trailing) if r.drift]
    episodes = sum(1 for i in alert_hours if i == 0 or (i - 1) not in alert_hours)
    delta = matrix[:, column["num_bikes_available__delta_15m"]]
    day_of = (as_of - as_of.min()) // 86_400_000_000
    activity = [round(float(np.nanmean(np.abs(delta[day_of == d]))), 3) for d in range(14)]
    feature_alerts = {r.name: sum(res.features[r.name].drift for res in hourly) for r in refs}
    return {
        "stations": len(stations),
        "rows": table.num_rows,
        "features": len(refs),
        "every": "10m",
        "reference_week": week1.isoformat(),
        "current_week": week2.isoformat(),
        "hours": len(hours),
        "rows_per_hour": round(float(np.sum(~first)) / len(hours)),
        "dataset_alert_hours": len(alert_hours),
        "dataset_alert_episodes": episodes,
        "dataset_alert_hours_utc": [
            (week2 + timedelta(hours=i)).strftime("%a %H:%M") for i in alert_hours
        ],
        "daily_dataset_drift": {
            (week2 + timedelta(days=d)).strftime("%a %m-%d"): [r.drift, r.share]
            for d, r in enumerate(daily)
        },
        "activity_mean_abs_delta_15m_by_day": {
            (week1 + timedelta(days=d)).strftime("%a %m-%d"): a for d, a in enumerate(activity)
        },
        "hourly_window_dataset_alerts": sum(r.drift for r in hourly),
        "hourly_window_feature_alerts": dict(sorted(feature_alerts.items(), key=lambda kv: -kv[1])),
        "features_seconds": round(features_s, 1),
        "drift_seconds_all_verdicts": round(drift_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=300)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--reference-hours", type=int, default=24)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--evidently-repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--evidently-big", action="store_true", help="Evidently on 1M rows too.")
    parser.add_argument("--child", nargs=3, metavar=("REF", "CUR", "REPEATS"))
    parser.add_argument("--divvy", action="store_true", help="Replay a stable Divvy week instead.")
    parser.add_argument("--divvy-data", default="/tmp/monitor-work/divvy-data")
    args = parser.parse_args()
    if args.divvy:
        result = divvy_week(args)
        report = {
            "benchmark": "drift_divvy",
            "command": "python benchmarks/bench_drift.py " + " ".join(sys.argv[1:]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "goal": "at most one false dataset-level alert over the week",
            "alert_episodes": result["dataset_alert_episodes"],
            **result,
        }
        out = HERE / "results" / "drift_divvy.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return
    if args.child:
        ref, cur, repeats = args.child
        print(json.dumps(child_dockline(ref, cur, int(repeats))))
        return

    load_before = os.getloadavg()
    evidently = None if args.no_evidently else ensure_evidently()
    workdir = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    hour_rows = args.stations * 60
    ref_rows = args.stations * 60 * args.reference_hours
    cases: dict[str, Any] = {}
    try:
        ref = save(workdir / "ref.npz", make_frame(ref_rows, args.features, 1))
        cur = save(workdir / "cur.npz", make_frame(hour_rows, args.features, 2))
        cases["hour"] = {
            "reference_rows": ref_rows,
            "current_rows": hour_rows,
            "features": args.features,
            **measure("hour", ref, cur, args, evidently, workdir),
        }
        big = args.big_rows
        ref = save(workdir / "big_ref.npz", make_frame(big, args.features, 3))
        for name, shift in (("null", None), ("shift", SHIFTED)):
            cur = save(workdir / f"big_{name}.npz", make_frame(big, args.features, 4, shift))
            cases[name] = {
                "reference_rows": big,
                "current_rows": big,
                "features": args.features,
                "shifted": shift,
                **measure(name, ref, cur, args, evidently if args.evidently_big else None, workdir),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    hour = cases["hour"]
    goals = {
        "hour_under_1s": (hour["dockline"].get("seconds") or 1e9) < TARGET_SECONDS,
        "hour_10x_evidently": (hour.get("evidently_vs_dockline") or 0) >= TARGET_VS_EVIDENTLY,
        "null_none_flagged": cases["null"]["dockline"].get("flagged") == [],
        "shift_only_that_feature": cases["shift"]["dockline"].get("flagged") == [SHIFTED],
    }
    report = {
        "benchmark": "drift",
        "command": "python benchmarks/bench_drift.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": 1,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "numpy": np.__version__,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": {"hour_seconds_max": TARGET_SECONDS, "evidently_vs_dockline_min": 10.0},
        "goals_met": goals,
        "cases": cases,
    }
    out = HERE / "results" / "drift.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(goals))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
