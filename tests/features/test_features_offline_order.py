"""The offline executor's storage-order scan: which entities may take the ASOF fast path.

The scan must never call an entity ordered when the SQL definition (ordered by avail, event time
never goes back and no avail repeats) says otherwise; rows merely not stored in order may only
cost the fast path. Results must not depend on how the rows are stored.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from reference import reference_features

from dockline.features import Entity, FeatureGroup, Project, Source, compile_project, last, mean
from dockline.features.offline import OfflineExecutor, _file_batches, _scan_order, _table_batches

M = 60_000_000
T0 = 1_710_054_000 * 1_000_000
TS = pa.timestamp("us", tz="UTC")
COLS = ("id", "event_ts", "ingested_at")
SCHEMA = pa.schema([("id", pa.string()), ("event_ts", TS), ("ingested_at", TS), ("x", pa.int64())])


def rows(seed: int, n: int, wild: bool) -> list[dict[str, int | str | None]]:
    """Events of three entities: in order (feed-like) or with late/duplicate ones (wild)."""
    rng = random.Random(seed)
    out: list[dict[str, int | str | None]] = []
    for key in ("a", "b", "c"):
        ets = T0
        for _ in range(n):
            ets += rng.choice([M // 2, M, 3 * M])
            lag = rng.choice([0, 1, M // 4])
            if wild and rng.random() < 0.15:
                lag = rng.choice([5 * M, -M, 0])
                if rng.random() < 0.3:
                    ets -= rng.choice([0, M])  # a repeat or a step back in event time
            out.append(
                {"id": key, "event_ts": ets, "ingested_at": ets + lag, "x": rng.randint(0, 9)}
            )
    return out


def table(data: list[dict[str, int | str | None]]) -> pa.Table:
    return pa.Table.from_pylist(data, SCHEMA)


def sql_bad(data: pa.Table) -> set[str]:
    """The definition: entities whose avail order is not also an event-time order."""
    con = duckdb.connect()
    con.register("e", data)
    found = con.execute(
        "SELECT DISTINCT id FROM (SELECT id, epoch_us(event_ts) AS ets,"
        " greatest(epoch_us(event_ts), epoch_us(ingested_at)) AS av,"
        " lag(epoch_us(event_ts)) OVER w AS pe, lag(greatest(epoch_us(event_ts),"
        " epoch_us(ingested_at))) OVER w AS pa FROM e WINDOW w AS (PARTITION BY id ORDER BY"
        " greatest(epoch_us(event_ts), epoch_us(ingested_at)))) WHERE pe > ets OR pa = av"
    ).fetchall()
    con.close()
    return {str(r[0]) for r in found}


def store_sorted(data: pa.Table) -> pa.Table:
    return data.sort_by(
        [("id", "ascending"), ("event_ts", "ascending"), ("ingested_at", "ascending")]
    )


@pytest.mark.parametrize("seed", range(40))
def test_scan_agrees_with_the_definition_on_store_sorted_rows(seed: int) -> None:
    data = store_sorted(table(rows(seed, 12, wild=seed % 2 == 1)))
    order = _scan_order([(data, COLS)], _table_batches, 1)
    assert order is not None
    assert set(order.bad.to_pylist()) == sql_bad(data)
    assert order.n_keys == 3


@pytest.mark.parametrize("seed", range(20))
def test_scan_never_trusts_unsorted_rows(seed: int) -> None:
    data = table(rows(seed, 12, wild=seed % 2 == 1))
    shuffled = data.take(pa.array(random.Random(seed).sample(range(data.num_rows), data.num_rows)))
    order = _scan_order([(shuffled, COLS)], _table_batches, 1)
    assert order is not None
    assert set(order.bad.to_pylist()) >= sql_bad(data)


def test_runs_across_files_are_checked_against_each_other(tmp_path: Path) -> None:
    data = store_sorted(table(rows(3, 10, wild=False)))
    first, second = (
        data.filter(pc.less(data["x"], 5)),
        data.filter(pc.greater_equal(data["x"], 5)),
    )
    for name, part in (("1", first), ("2", second)):
        pq.write_table(store_sorted(part), tmp_path / f"{name}.parquet", row_group_size=4)
    units = [
        ((str(tmp_path / f"{name}.parquet"), g), COLS)
        for name in ("1", "2")
        for g in range(pq.read_metadata(tmp_path / f"{name}.parquet").num_row_groups)
    ]
    order = _scan_order(units, _file_batches, 2)
    assert order is not None and order.n_keys == 3
    # interleaved files are not each other's continuation: not trusted, though in order
    assert set(order.bad.to_pylist()) == {"a", "b", "c"}
    # one file per entity range in order: trusted
    for i, key in enumerate(("a", "b", "c")):
        pq.write_table(data.filter(pc.equal(data["id"], key)), tmp_path / f"k{i}.parquet")
    units = [((str(tmp_path / f"k{i}.parquet"), 0), COLS) for i in range(3)]
    order = _scan_order(units, _file_batches, 1)
    assert order is not None and set(order.bad.to_pylist()) == sql_bad(data)


def test_undecidable_types_fall_back_to_sql() -> None:
    data = table(rows(1, 5, wild=False))
    as_float = data.set_column(0, "id", pa.array([1.5] * data.num_rows))
    assert _scan_order([(as_float, COLS)], _table_batches, 1) is None


@pytest.mark.parametrize("seed", range(12))
def test_results_do_not_depend_on_storage_order(seed: int, tmp_path: Path) -> None:
    station = Entity("station", key="id")
    src = Source("s", entity=station)
    group = FeatureGroup("g", source=src, ttl="10m", features=[last("x"), mean("x", "5m")])
    plan = compile_project(Project(name="p", entity=station, groups=[group]))
    events = rows(seed, 15, wild=seed % 3 == 0)
    rng = random.Random(seed)
    points = [(rng.choice("abcd"), T0 + rng.randint(0, 40) * M // 2) for _ in range(40)]
    spine = pa.table(
        {
            "id": pa.array([p[0] for p in points]),
            "as_of": pa.array([p[1] for p in points], pa.int64()).cast(TS),
        }
    )
    data = table(events)
    pq.write_table(store_sorted(data), tmp_path / "sorted.parquet", row_group_size=7)
    outs = []
    for source in (data, store_sorted(data), str(tmp_path / "sorted.parquet")):
        with OfflineExecutor(plan, {"s": source}, threads=1) as ex:
            outs.append(ex.features(spine))
    assert outs[0].equals(outs[1]) and outs[0].equals(outs[2])
    want = reference_features(plan, {"s": events}, points)
    got = outs[0].to_pylist()
    by_point = sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0]))
    for row, i in zip(got, by_point, strict=True):
        for name, value in want[i].items():
            actual = row[name]
            if hasattr(actual, "timestamp"):
                actual = int(actual.timestamp() * 1_000_000)
            assert actual == pytest.approx(value) if value is not None else actual is None
