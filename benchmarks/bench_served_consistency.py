"""Served-vector consistency on a replayed Divvy day in which 30 % of stations go quiet.

The real Divvy archive (``../shared/data/divvy``), one day, is replayed in 15-minute chunks:
each chunk is imported (``ingest_archive``), sunk offline and materialized, then the serving app
(``dockline serve``'s wiring, real HTTP) is asked for every station at the chunk's newest
ingestion time. 30 % of the stations (seeded) go quiet once for 10–120 minutes: their snapshots
in that window are removed, so serving sees no new ``last_reported`` for them. At the end,
``dockline features consistency --served`` recomputes every logged vector offline at its request
time; the target is 0 mismatches (floats within 1e-9 relative).

    python benchmarks/bench_served_consistency.py [--day 2013-10-15] [--chunk 15m]

Writes ``benchmarks/results/served_consistency.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core.time import FixedClock, parse_duration
from dockline.pipeline.features import check_served_consistency, load_plan, materialize
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.train.registry import MlflowRegistry

HERE = Path(__file__).resolve().parent
DIVVY = HERE.parent.parent / "shared" / "data" / "divvy"


def _quiet_windows(
    stations: list[str], day: datetime, share: float, seed: int
) -> dict[str, tuple[datetime, datetime]]:
    rng = random.Random(seed)
    chosen = rng.sample(sorted(stations), round(share * len(stations)))
    windows = {}
    for station in chosen:
        minutes = rng.randint(10, 120)
        start = day + timedelta(minutes=rng.randint(0, 24 * 60 - minutes))
        windows[station] = (start, start + timedelta(minutes=minutes))
    return windows


def _register_model(platform: Platform, staging: Path) -> None:
    """A logistic bundle over features a quiet station keeps defined (the model is not what is
    measured here: every plan feature is logged and compared)."""
    import sys

    sys.path.insert(0, str(HERE.parent / "tests" / "serve"))
    from serve_helpers import _verdict, make_bundle

    plan = load_plan(platform)
    features = [n for n in plan.feature_names if n in ("hour_of_day", "day_of_week")]
    bundle = make_bundle(staging, 0, baseline=False, features=features)
    registry = MlflowRegistry.for_data_dir(platform.data)
    version = registry.register("divvy", bundle.path, run_id=None, gate=_verdict()).version
    registry.set_alias(
        "divvy", "champion", version, actor="bench", reason="bench", action="promote"
    )


def main() -> None:
    """Run the replay and print/save the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", default="2013-10-15", help="the Divvy day (UTC) to replay")
    parser.add_argument("--chunk", default="15m", help="replay step")
    parser.add_argument("--quiet-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=float, default=24.0, help="how much of the day")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "served_consistency.json")
    args = parser.parse_args()
    day = datetime.fromisoformat(args.day).replace(tzinfo=UTC)
    step = parse_duration(args.chunk)
    started = time.perf_counter()
    month = pq.read_table(DIVVY / "station_status" / f"{day:%Y-%m}.parquet")
    ts = month.column("obs_ts")
    rows = month.filter(pc.and_(pc.greater_equal(ts, day), pc.less(ts, day + timedelta(days=1))))
    stations = sorted(set(rows.column("station_id").to_pylist()))
    windows = _quiet_windows(stations, day, args.quiet_share, args.seed)
    keep = [
        not (s in windows and windows[s][0] <= t < windows[s][1])
        for s, t in zip(
            rows.column("station_id").to_pylist(), rows.column("obs_ts").to_pylist(), strict=True
        )
    ]
    rows = rows.filter(pa.array(keep))
    removed = len(keep) - rows.num_rows
    tmp = Path(tempfile.mkdtemp(prefix="dockline-served-"))
    clock = FixedClock(day)
    Platform.open(tmp / "data").data.config_file.write_text(
        '[serve]\nmodel_name = "divvy"\nreload_poll = "1h"\n'
    )
    platform = Platform.open(tmp / "data")  # ingest on the wall clock (the archive is dated)
    serving = dataclasses.replace(platform, clock=clock)  # requests at replayed times
    requests = statuses_ok = degraded = chunks = accepted = 0
    ages: list[float] = []
    server = None
    client = None
    try:
        t = day
        while t < day + timedelta(hours=args.hours):
            end = t + step
            part = rows.filter(pc.and_(pc.greater_equal(rows.column("obs_ts"), t),
                                       pc.less(rows.column("obs_ts"), end)))  # fmt: skip
            chunk_dir = tmp / f"chunk-{chunks:04d}"
            (chunk_dir / "station_status").mkdir(parents=True)
            pq.write_table(part, chunk_dir / "station_status" / f"{day:%Y-%m}.parquet")
            if chunks == 0:  # stations are described once
                shutil.copy(DIVVY / "station_information.parquet", chunk_dir)
            # one source per chunk: an archive import resumes by source name
            summary = ingest_archive(platform, chunk_dir, source=f"archive:divvy-{chunks:04d}")
            accepted += summary.accepted
            sink_offline(platform)
            materialize(platform)
            chunks += 1
            newest = pc.max(part.column("obs_ts")).as_py() if part.num_rows else None
            t = end
            if newest is None:
                continue
            if server is None:
                _register_model(platform, tmp / "staging")
                server = BackgroundServer(create_serving_app(serving))
                client = httpx.Client(base_url=server.url, timeout=30)
            # the request time: the chunk's newest ingestion (snapshot time + publication delay)
            delay = platform.config.ingest.publication_delay
            clock.set(max(clock.now(), newest + delay))
            assert client is not None
            for lo in range(0, len(stations), 200):  # max_batch is 256
                response = client.post(
                    "/v1/predict/batch", json={"entities": stations[lo : lo + 200]}
                )
                response.raise_for_status()
                for item in response.json()["predictions"]:
                    requests += 1
                    statuses_ok += item["status"] == "ok"
                    degraded += item["status"] == "degraded"
                    ages.append(item["age_s"] if item["age_s"] is not None else -1.0)
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
    report = check_served_consistency(platform)
    result = {
        "day": args.day,
        "chunk": args.chunk,
        "stations": len(stations),
        "quiet_stations": len(windows),
        "quiet_snapshots_removed": removed,
        "accepted_events": accepted,
        "chunks": chunks,
        "requests": requests,
        "ok": statuses_ok,
        "degraded": degraded,
        "age_s_p50": sorted(ages)[len(ages) // 2] if ages else None,
        "compared": report.compared,
        "mismatches": report.mismatches,
        "mismatching_features": {
            n: f["mismatches"] for n, f in report.features.items() if f["mismatches"]
        },
        "skipped": report.skipped,
        "seconds": round(time.perf_counter() - started, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
