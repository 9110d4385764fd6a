"""Benchmark the PostgreSQL CDC source's catch-up rate: rows/s through logical replication
(wal2json), validation and the log append.

Run: ``.venv/bin/python benchmarks/bench_cdc.py [--stations 500] [--transactions 200]``.

Starts a private cluster (``tests/postgres_server.py``: needs the Debian ``postgresql`` and
``postgresql-15-wal2json`` packages), creates the slot, inserts ``--transactions`` transactions
of one row per station, then times one ``ingest_cdc(..., once=True)``.
"""

from __future__ import annotations

import argparse
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
        conn.close()
    print(
        f"{summary.received:,} rows in {args.transactions} transactions: {took:.2f} s,"
        f" {summary.received / took:,.0f} rows/s; accepted {summary.accepted:,}"
    )


if __name__ == "__main__":
    main()
