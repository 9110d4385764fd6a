"""Benchmark the slice check: masks, point metrics, and the station bootstrap in the worst case.

Run: ``.venv/bin/python benchmarks/bench_slices.py [--stations 600] [--days 14] [--bootstrap 200]``.

A synthetic training set (the train tests' random walks, stations scattered over a city) is
loaded; the test split is its last fifth, the history its first 60 %. Timed: ``slice_masks``
(all five families) and ``compare_slices`` twice — a candidate better than persistence everywhere
(no slice looks worse, so no bootstrap runs) and one worse everywhere (every judged slice is
bootstrapped). Writes ``benchmarks/results/slices.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "train"))  # the train tests' synthetic set

from train_synth import write_synthetic  # noqa: E402

from dockline.core.config import TrainSlicesConfig  # noqa: E402
from dockline.train.data import load_training_set  # noqa: E402
from dockline.train.slices import compare_slices, slice_masks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=600)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    positions = {
        s: (41.7 + 0.3 * float(rng.random()), -87.8 + 0.3 * float(rng.random()))
        for s in range(args.stations)
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(
            Path(tmp), stations=args.stations, days=args.days, positions=positions
        )
        data = load_training_set(root, None)
    n = data.n_rows
    history, test = np.arange(int(n * 0.6)), np.arange(int(n * 0.8), n)
    config = TrainSlicesConfig(bootstrap=args.bootstrap)
    start = time.perf_counter()
    masks = slice_masks(data, test, history, config)
    masks_s = time.perf_counter() - start
    y = data.y[test].astype(np.float64)
    good = np.clip(0.5 * y + 0.5 * rng.random(y.size), 0, 1)
    bad = rng.random(y.size)
    results = {
        "rows": n,
        "test_rows": int(test.size),
        "stations": args.stations,
        "slices": sum(len(g) for g in masks.values()),
        "bootstrap": args.bootstrap,
        "slice_masks_s": round(masks_s, 3),
    }
    for name, candidate, reference in (("better", good, bad), ("worse_everywhere", bad, good)):
        start = time.perf_counter()
        compare_slices(
            y,
            data.station_ids[test],
            masks,
            {"candidate": candidate, "persistence": reference},
            candidate="candidate",
            config=config,
            seed=0,
        )
        results[f"compare_{name}_s"] = round(time.perf_counter() - start, 3)
    out = REPO / "benchmarks" / "results" / "slices.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
