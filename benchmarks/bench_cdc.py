"""Benchmark the PostgreSQL CDC source's catch-up rate: rows/s through logical replication
(wal2json), validation and the log append.

Run: ``.venv/bin/python benchmarks/bench_cdc.py [--stations 500] [--transactions 200]``.

Starts a private cluster (``tests/postgres_server.py``: needs the Debian ``postgresql`` and
``postgresql-15-wal2json`` packages), creates the slot, inserts ``--transactions`` transactions
of one row per station, then times one ``ingest_cdc(..., once=True)`` against the peer measured
in the same run: the same rows fetched with a plain ``SELECT`` (psycopg2, no replication, no
validation, nothing written) — the floor of reading them at all. Then the **initial snapshot**:
a new data dir's first run over the same table (``[cdc] snapshot = "initial"``), with
``--snapshot-batch`` rows per read and with the default ``batch_rows``. Writes
``benchmarks/results/cdc.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import psycopg2

from dockline.pipeline.cdc import ingest_cdc
from dockline.pipeline.platform import Platform
from postgres_server import find_bindir, postgres_cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=500)
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--snapshot-batch", type=int, default=10_000)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed: apt-get install postgresql")
    with postgres_cluster(bindir) as pg, tempfile.TemporaryDirectory() as tmp:
        conn = psycopg2.connect(pg.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE station_status (station_id text, num_bikes_available int,"
            " num_docks_available int, last_reported timestamptz)"
        )
        platform = Platform.open(Path(tmp) / "data")
        ingest_cdc(platform, pg.dsn(), slot="bench", once=True)  # creates the slot
        t0 = datetime.now(UTC) - timedelta(hours=12)
        for k in range(args.transactions):
            cur.execute("BEGIN")
            cur.execute(
                "INSERT INTO station_status SELECT 'st' || i, (i + %s) %% 20, 20, %s"
                " FROM generate_series(1, %s) i",
                (k, t0 + timedelta(minutes=k), args.stations),
            )
            cur.execute("COMMIT")
        started = time.perf_counter()
        summary = ingest_cdc(platform, pg.dsn(), slot="bench", once=True)
        took = time.perf_counter() - started
        started = time.perf_counter()
        cur.execute("SELECT * FROM station_status")
        fetched = len(cur.fetchall())
        select_s = time.perf_counter() - started
        snapshots: dict[str, dict[str, float]] = {}
        for name, batch in (("batch_rows", args.snapshot_batch), ("default", None)):
            data = Path(tmp) / f"snapshot-{name}"
            data.mkdir()
            if batch is not None:
                (data / "dockline.toml").write_text(f"[ingest]\nbatch_rows = {batch}\n")
            fresh = Platform.open(data)
            started = time.perf_counter()
            snap = ingest_cdc(fresh, pg.dsn(), slot=f"snap_{name}", once=True)
            snap_s = time.perf_counter() - started
            cur.execute("SELECT pg_drop_replication_slot(%s)", (f"snap_{name}",))
            snapshots[name] = {
                "batch_rows": fresh.config.ingest.batch_rows,
                "rows": snap.snapshot_rows,
                "accepted": snap.accepted,
                "seconds": round(snap_s, 3),
                "rows_per_s": round(snap.snapshot_rows / snap_s),
            }
        conn.close()
    cdc_rate, select_rate = summary.received / took, fetched / select_s
    print(
        f"{summary.received:,} rows in {args.transactions} transactions: {took:.2f} s,"
        f" {cdc_rate:,.0f} rows/s; accepted {summary.accepted:,}\n"
        f"peer, a plain SELECT of the same {fetched:,} rows: {select_rate:,.0f} rows/s;"
        f" CDC runs at {cdc_rate / select_rate:.2f}x the bare read"
    )
    for name, snap in snapshots.items():
        print(
            f"initial snapshot ({name}, batch_rows {snap['batch_rows']:,.0f}): {snap['rows']:,.0f}"
            f" rows in {snap['seconds']:.2f} s, {snap['rows_per_s']:,.0f} rows/s;"
            f" {snap['rows_per_s'] / cdc_rate:.2f}x streaming,"
            f" {snap['rows_per_s'] / select_rate:.2f}x the bare read"
        )
    out = Path(__file__).parent / "results" / "cdc.json"
    out.write_text(
        json.dumps(
            {
                "stations": args.stations,
                "transactions": args.transactions,
                "rows": summary.received,
                "accepted": summary.accepted,
                "cdc_seconds": round(took, 3),
                "cdc_rows_per_s": round(cdc_rate),
                "select_seconds": round(select_s, 3),
                "select_rows_per_s": round(select_rate),
                "ratio_cdc_over_select": round(cdc_rate / select_rate, 3),
                "snapshot": snapshots,
                "measured_at": datetime.now(UTC).isoformat(),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
