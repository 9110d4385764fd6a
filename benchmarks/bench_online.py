"""Latency of the online stores against their raw floors (run by hand, not by pytest).

    .venv/bin/python benchmarks/bench_online.py [--entities 1000] [--single 20000] [--many 2000]

Loads ``--entities`` entities × one group of 20 feature values into SqliteOnlineStore and
RedisOnlineStore, then measures per call (after a warm-up), with the client pinned to one core:

* ``read`` of one entity and ``read_many`` of 100 entities: p50/p99 in microseconds;
* the floors, measured the same way: a raw ``sqlite3`` prepared ``SELECT vals ... WHERE
  entity=? AND grp=?`` (single) and ``IN (...)`` (100); raw redis-py ``HGET`` and 100 pipelined
  ``HGET``\\ s — no decoding, no result objects;
* ``write`` throughput (rows/s) for ``--write-rows`` rows.

The script starts its own redis-server on a free 127.0.0.1 port (pinned to core 0 with
``taskset`` when available) and stops it at the end. It prints a table with ratios to each
system's floor and writes ``benchmarks/results/online.json``.

Other in-process systems join by adding a :class:`Peer` to the list that :func:`peers` returns:
each peer names its floor, and the table and JSON pick it up.

Feast 0.67 ``get_online_features`` (SQLite online store, ``.to_dict()`` of the response) is
measured on the same rows and the same seeded entity choices (the first ``--feast-single`` /
``--feast-many`` of them), in a child process of Feast's own venv (``benchmarks/.venv-feast``,
the one ``bench_pit.py`` creates; Feast cannot be imported into dockline's venv), pinned to the
same core. Its ratio is to the raw sqlite3 floor. ``--no-feast`` skips it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import redis

from dockline.core.ports import OnlineStore
from dockline.store import SqliteOnlineStore
from dockline.store.online.redis import RedisOnlineStore

HERE = Path(__file__).resolve().parent
FEAST_PYTHON = HERE / ".venv-feast" / "bin" / "python"
GROUP = "station"
START_US = 1_714_521_600_000_000  # 2024-05-01T00:00:00Z
MANY = 100


@dataclass(frozen=True)
class Peer:
    """One system under test: how it reads one entity and many, and which floor it is held to.

    ``write`` (optional) writes an Arrow table of ``rows`` and returns the row count.
    """

    name: str
    floor: str
    read_one: Callable[[str], object]
    read_many: Callable[[list[str]], object]
    write: Callable[[pa.Table], int] | None = None


def feature_rows(entities: Sequence[str], seed: int) -> pa.Table:
    """One row per entity: key, event time and 20 station-like feature values."""
    rng = np.random.default_rng(seed)
    n = len(entities)
    bikes = rng.integers(0, 40, n)
    columns: dict[str, Any] = {
        "station_id": pa.array(list(entities), pa.string()),
        "as_of": pa.array(START_US + rng.integers(0, 3_600_000_000, n), pa.timestamp("us", "UTC")),
        "num_bikes_available__last": bikes,
        "num_docks_available__last": 40 - bikes,
        "capacity__last": np.full(n, 40),
        "fill_ratio__last": bikes / 40.0,
        "is_renting__last": rng.random(n) > 0.05,
        "is_returning__last": rng.random(n) > 0.05,
    }
    for window in ("15m", "60m"):
        columns[f"num_bikes_available__mean_{window}"] = rng.random(n) * 40
        columns[f"num_bikes_available__min_{window}"] = rng.integers(0, 40, n)
        columns[f"num_bikes_available__max_{window}"] = rng.integers(0, 40, n)
        columns[f"num_bikes_available__delta_{window}"] = rng.integers(-20, 20, n)
    columns["empty_minutes__60m"] = rng.integers(0, 60, n)
    columns["minutes_since_empty"] = rng.random(n) * 1e4
    columns["minutes_since_full"] = rng.random(n) * 1e4
    columns["hour_of_week"] = rng.integers(0, 168, n)
    columns["weather_temp_c"] = np.round(rng.normal(15, 8, n), 1)
    columns["zone"] = pa.array(rng.choice(["residential", "business", "leisure"], n).tolist())
    return pa.table(columns)


def value_columns(table: pa.Table) -> list[str]:
    """The feature columns of a :func:`feature_rows` table."""
    return [c for c in table.column_names if c not in ("station_id", "as_of")]


def pin(core: int) -> int | None:
    """Pin this process to ``core`` (or the last available core); the core, or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    chosen = core if core in available else available[-1]
    os.sched_setaffinity(0, {chosen})
    return chosen


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1 (core 0 when ``taskset`` exists); yields its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir)]
    if shutil.which("taskset") and hasattr(os, "sched_getaffinity"):
        command = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        probe = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.02)
        probe.close()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def latencies(call: Callable[[Any], object], args: Sequence[Any]) -> np.ndarray:
    """Per-call wall time in microseconds of ``call(arg)`` for each of ``args``."""
    out = np.empty(len(args), dtype=np.int64)
    clock = time.perf_counter_ns
    for i, arg in enumerate(args):
        t0 = clock()
        call(arg)
        out[i] = clock() - t0
    result: np.ndarray = out / 1000.0
    return result


def stats(samples: np.ndarray) -> dict[str, float]:
    """p50, p99 and mean in microseconds."""
    return {
        "p50_us": round(float(np.percentile(samples, 50)), 2),
        "p99_us": round(float(np.percentile(samples, 99)), 2),
        "mean_us": round(float(samples.mean()), 2),
    }


def sqlite_floor(path: Path) -> tuple[Peer, sqlite3.Connection]:
    """Raw sqlite3 on the same file: prepared statements, no decoding."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    one = "SELECT vals FROM vectors WHERE entity = ? AND grp = ?"
    many = f"SELECT entity, vals FROM vectors WHERE entity IN ({', '.join('?' * MANY)}) AND grp = ?"

    def read_one(entity: str) -> object:
        return conn.execute(one, (entity, GROUP)).fetchone()

    def read_many(entities: list[str]) -> object:
        return conn.execute(many, (*entities, GROUP)).fetchall()

    return Peer("sqlite3 (raw)", "sqlite3 (raw)", read_one, read_many), conn


def redis_floor(url: str, namespace: str) -> tuple[Peer, redis.Redis]:
    """Raw redis-py: ``HGET`` and pipelined ``HGET``\\ s, no decoding."""
    client = redis.Redis.from_url(url)
    prefix = f"{namespace}:v:"

    def read_one(entity: str) -> object:
        return client.hget(prefix + entity, GROUP)

    def read_many(entities: list[str]) -> object:
        pipe = client.pipeline(transaction=False)
        for entity in entities:
            pipe.hget(prefix + entity, GROUP)
        return pipe.execute()

    return Peer("redis-py (raw)", "redis-py (raw)", read_one, read_many), client


def store_peer(name: str, floor: str, store: OnlineStore) -> Peer:
    """A dockline OnlineStore as a peer."""
    groups = [GROUP]

    def write(table: pa.Table) -> int:
        return store.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=START_US)

    return Peer(
        name,
        floor,
        lambda entity: store.read(entity, groups),
        lambda entities: store.read_many(entities, groups),
        write,
    )


def peers(sqlite_store: OnlineStore, redis_store: OnlineStore) -> list[Peer]:
    """The systems compared to the floors; add a peer here to have it measured too."""
    return [
        store_peer("dockline SqliteOnlineStore", "sqlite3 (raw)", sqlite_store),
        store_peer("dockline RedisOnlineStore", "redis-py (raw)", redis_store),
    ]


FEAST_CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import pyarrow.parquet as pq
import feast
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Bool, Float64, Int64, String

repo, rows_path, calls_path = sys.argv[1:4]
calls = json.loads(open(calls_path).read())
table = pq.read_table(rows_path)
store = FeatureStore(
    config=RepoConfig(
        project="online",
        registry=f"{repo}/registry.db",
        provider="local",
        offline_store={"type": "file"},
        online_store={"type": "sqlite", "path": f"{repo}/online.db"},
        entity_key_serialization_version=3,
    )
)
station = Entity(name="station", join_keys=["station_id"], value_type=ValueType.STRING)
kinds = {"int64": Int64, "double": Float64, "bool": Bool, "string": String}
fields = [
    Field(name=f.name, dtype=kinds[str(f.type)])
    for f in table.schema
    if f.name not in ("station_id", "as_of")
]
view = FeatureView(
    name="station",
    entities=[station],
    schema=fields,
    source=FileSource(path=rows_path, timestamp_field="as_of"),
    online=True,
)
store.apply([station, view])
store.write_to_online_store("station", table.to_pandas())
refs = [f"station:{f.name}" for f in fields]


def one(entity):
    rows = [{"station_id": entity}]
    return store.get_online_features(features=refs, entity_rows=rows).to_dict()


def many(entities):
    rows = [{"station_id": e} for e in entities]
    return store.get_online_features(features=refs, entity_rows=rows).to_dict()


assert one(calls["ones"][0])[fields[0].name][0] is not None
clock = time.perf_counter_ns
out = {"feast_version": feast.__version__}
for name, call, args in (("read", one, calls["ones"]), ("read_many_100", many, calls["batches"])):
    for arg in args[: max(1, len(args) // 10)]:
        call(arg)  # warm-up
    samples = np.empty(len(args))
    for i, arg in enumerate(args):
        t0 = clock()
        call(arg)
        samples[i] = (clock() - t0) / 1000.0
    out[name] = {
        "p50_us": round(float(np.percentile(samples, 50)), 2),
        "p99_us": round(float(np.percentile(samples, 99)), 2),
        "mean_us": round(float(samples.mean()), 2),
    }
print(json.dumps(out))
"""


def choices(
    entities: list[str], single: int, many: int, seed: int
) -> tuple[list[str], list[list[str]]]:
    """The seeded entities of the single reads and of the 100-entity reads."""
    rng = np.random.default_rng(seed)
    ones = [entities[i] for i in rng.integers(0, len(entities), single).tolist()]
    batches = [
        [entities[i] for i in rng.choice(len(entities), MANY, replace=False).tolist()]
        for _ in range(many)
    ]
    return ones, batches


def feast_online(
    table: pa.Table, ones: list[str], batches: list[list[str]], workdir: Path, core: int | None
) -> dict[str, Any]:
    """Feast's ``get_online_features`` latencies, measured in a child of Feast's venv."""
    import pyarrow.parquet as pq

    if not FEAST_PYTHON.exists():
        return {"error": f"{FEAST_PYTHON} missing: run benchmarks/bench_pit.py once to create it"}
    repo = workdir / "feast"
    repo.mkdir()
    rows = repo / "rows.parquet"
    pq.write_table(table, rows)
    calls = repo / "calls.json"
    calls.write_bytes(orjson.dumps({"ones": ones, "batches": batches}))
    script = repo / "child.py"
    script.write_text(FEAST_CHILD)
    command = [str(FEAST_PYTHON), str(script), str(repo), str(rows), str(calls)]
    if core is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(core), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-3:]}"}
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(
    systems: Sequence[Peer], entities: list[str], single: int, many: int, rounds: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Single-entity and 100-entity read latency of each system, over seeded random entities.

    The systems take turns over ``rounds`` rounds, so a load change on the machine during the
    run hits them all alike instead of whichever ran last.
    """
    ones, batches = choices(entities, single, many, seed)
    for peer in systems:  # every system must find the data it is timed on
        assert peer.read_one(entities[0]) and peer.read_many(entities[:MANY]), peer.name
    for peer in systems:  # warm-up: statement caches, connections, allocator
        latencies(peer.read_one, ones[:2000])
        latencies(peer.read_many, batches[:200])
    one_samples: dict[str, list[np.ndarray]] = {peer.name: [] for peer in systems}
    many_samples: dict[str, list[np.ndarray]] = {peer.name: [] for peer in systems}
    for r in range(rounds):
        for peer in systems:
            one_samples[peer.name].append(latencies(peer.read_one, ones[r::rounds]))
            many_samples[peer.name].append(latencies(peer.read_many, batches[r::rounds]))
    return {
        peer.name: {
            "read": stats(np.concatenate(one_samples[peer.name])),
            f"read_many_{MANY}": stats(np.concatenate(many_samples[peer.name])),
        }
        for peer in systems
    }


def write_throughput(peer: Peer, table: pa.Table, repeats: int) -> float:
    """Best of ``repeats`` rows/s of ``peer.write`` on ``table`` (upserts after the first)."""
    assert peer.write is not None
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert peer.write(table) == table.num_rows
        best = min(best, time.perf_counter() - t0)
    return float(table.num_rows / best)


def table_text(results: dict[str, Any]) -> str:
    """The human-readable table: p50/p99 per system and its ratio to its floor."""
    systems: dict[str, Any] = results["systems"]
    lines = [
        f"{'system':<40} {'op':<14} {'p50 µs':>8} {'p99 µs':>8} {'p50 ×floor':>11}"
        f" {'p99 ×floor':>11}",
    ]
    for name, entry in systems.items():
        if "error" in entry:
            lines.append(f"{name:<40} error: {entry['error']}")
            continue
        for op in ("read", f"read_many_{MANY}"):
            got = entry[op]
            ratio = entry.get("ratio_to_floor", {}).get(op, {})
            lines.append(
                f"{name:<40} {op:<14} {got['p50_us']:>8.1f} {got['p99_us']:>8.1f}"
                f" {ratio.get('p50', 1.0):>11.2f} {ratio.get('p99', 1.0):>11.2f}"
            )
        if "write_rows_per_s" in entry:
            lines.append(f"{name:<40} {'write':<14} {entry['write_rows_per_s']:>,.0f} rows/s")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark, print the table and write the JSON result to ``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--single", type=int, default=20_000)
    parser.add_argument("--many", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--write-rows", type=int, default=100_000)
    parser.add_argument("--write-repeats", type=int, default=3)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--feast-single", type=int, default=5000)
    parser.add_argument("--feast-many", type=int, default=300)
    parser.add_argument("--no-feast", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "online.json"
    )
    args = parser.parse_args()
    core = pin(args.client_core)
    load_before = os.getloadavg()[0]
    entities = [f"station-{i:05d}" for i in range(args.entities)]
    table = feature_rows(entities, args.seed)
    columns = value_columns(table)
    write_entities = [f"w-{i:06d}" for i in range(args.write_rows)]
    write_table = feature_rows(write_entities, args.seed + 1)
    namespace = "bench"

    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        sqlite_store = SqliteOnlineStore(Path(tmp) / "online.sqlite")
        redis_store = RedisOnlineStore(url, namespace=namespace)
        systems: dict[str, Any] = {}
        floors: list[tuple[Peer, Any]] = [
            sqlite_floor(sqlite_store.path),
            redis_floor(url, namespace),
        ]
        compared = peers(sqlite_store, redis_store)
        for store in (sqlite_store, redis_store):
            store.register(GROUP, columns)
            store.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=START_US)
        everyone = [peer for peer, _ in floors] + compared
        measured = measure(everyone, entities, args.single, args.many, args.rounds, args.seed)
        for peer in everyone:
            systems[peer.name] = {"floor": peer.floor} | measured[peer.name]
        for peer in compared:
            floor = systems[peer.floor]
            entry = systems[peer.name]
            entry["ratio_to_floor"] = {
                op: {
                    q: round(entry[op][f"{q}_us"] / floor[op][f"{q}_us"], 2) for q in ("p50", "p99")
                }
                for op in ("read", f"read_many_{MANY}")
            }
            if peer.write is not None:
                entry["write_rows_per_s"] = round(
                    write_throughput(peer, write_table, args.write_repeats)
                )
        if not args.no_feast:
            ones, batches = choices(entities, args.single, args.many, args.seed)
            feast = feast_online(
                table, ones[: args.feast_single], batches[: args.feast_many], Path(tmp), core
            )
            name = f"Feast {feast.get('feast_version', '0.67')} get_online_features"
            systems[name] = {"floor": "sqlite3 (raw)"} | feast
            if "error" not in feast:
                floor = systems["sqlite3 (raw)"]
                systems[name]["ratio_to_floor"] = {
                    op: {
                        q: round(feast[op][f"{q}_us"] / floor[op][f"{q}_us"], 2)
                        for q in ("p50", "p99")
                    }
                    for op in ("read", f"read_many_{MANY}")
                }
        for _, handle in floors:
            handle.close()
        sqlite_store.close()
        redis_store.close()
        info = redis.Redis.from_url(url)
        server_version = str(info.info("server")["redis_version"])
        info.close()

    result = {
        "benchmark": "online",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "client_core": core,
            # Other work on the machine shows up in p99 first: judge the tails against this.
            "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "sqlite": sqlite3.sqlite_version,
            "redis_server": server_version,
            "redis_py": redis.__version__,
            "msgspec": msgspec.__version__,
            "pyarrow": pa.__version__,
        },
        "setup": {
            "entities": args.entities,
            "groups": 1,
            "values_per_vector": len(columns),
            "single_calls": args.single,
            "many_calls": args.many,
            "many_batch": MANY,
            "write_rows": args.write_rows,
            "feast_single_calls": 0 if args.no_feast else min(args.single, args.feast_single),
            "feast_many_calls": 0 if args.no_feast else min(args.many, args.feast_many),
        },
        "systems": systems,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.write(table_text(result) + "\n")


if __name__ == "__main__":
    main()
