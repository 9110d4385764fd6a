"""The Spark executor gives the DuckDB executor's rows: on a simulated week (every feature of the
bike-share project, labels and the unknown-label rule) and on the point-in-time edge cases.

Spark needs Java: without it these tests skip and say how to install it — except under
``CI=true``, where a missing Java is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_features_offline_cases import plan_of, spine, status
from test_features_offline_reference import (
    INFO_SCHEMA,
    LAGS,
    STATUS_SCHEMA,
    T0,
    TS,
    M,
    full_plan,
    table,
)
from typer.testing import CliRunner

from dockline.cli import app
from dockline.core.errors import ConfigError
from dockline.features import compile_project, load_project
from dockline.features.offline import OfflineExecutor
from dockline.features.plan import Plan
from dockline.pipeline.features import build_dataset_published
from dockline.pipeline.platform import Platform

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 5, 6, 5, tzinfo=UTC)  # simulated_city's first instant
REL = 1e-9

SLOW = pytest.mark.slow  # a Spark session and a simulated week: tens of seconds


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The process's local Spark session (skips without Java; fails instead under CI=true)."""
    from dockline.features.spark import JAVA_HINT, java_available, spark_session

    if not java_available():
        hint = f"the Spark tests need Java: {JAVA_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{hint}; under CI=true this is a failure", pytrace=False)
        pytest.skip(hint)
    pytest.importorskip("pyspark", reason="pip install 'dockline[spark]'")
    yield spark_session()


def spark_features(plan: Plan, sources: dict[str, Any], points: pa.Table, **kw: Any) -> pa.Table:
    from dockline.features.spark import SparkExecutor

    with SparkExecutor(plan, sources) as ex:
        return ex.features(points, **kw)


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    """Same schema, keys, times, nulls and booleans; floats within 1e-9 relative."""
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        if not pa.types.is_floating(want.schema.field(name).type):
            assert a == b, name
            continue
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x is None or y is None:
                assert x is None and y is None, (name, i, x, y)
            else:
                # a float sum depends on its order (DuckDB sums in value order): last bits only
                assert x == pytest.approx(y, rel=REL, abs=1e-12), (name, i, x, y)


# -- a simulated week ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(simulated_city: Platform) -> dict[str, str]:
    return {
        t: str(simulated_city.data.offline(t)) for t in ("station_status", "station_information")
    }


@pytest.fixture(scope="module")
def bikeshare() -> Plan:
    return compile_project(load_project(REPO / "examples" / "bikeshare"))


@SLOW
def test_dataset_build_on_spark_is_the_duckdb_dataset(
    spark: Any, simulated_city: Platform, bikeshare: Plan, tmp_path: Path
) -> None:
    # 18 hours from the last simulated day on: every feature kind (profiles over the week,
    # neighbourhoods, deltas, static, calendar across midnight), and a spine that runs past the
    # data, so the unknown-label rule must null the same rows
    begin = START + timedelta(days=7, hours=8)
    end = begin + timedelta(hours=18)
    args = ["--data-dir", str(simulated_city.data.root), "dataset", "build", "--every", "15m"]
    args += ["--label", "empty_next_hour", "--start", begin.isoformat(), "--end", end.isoformat()]
    runner = CliRunner()
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--engine", "flink"])
    assert isinstance(bad.exception, ConfigError)  # main() prints it in one line, exit 2
    assert "--engine must be one of ['duckdb', 'spark']; got 'flink'" in str(bad.exception)
    ran = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "--engine", "spark", "--json"])
    assert ran.exit_code == 0, ran.output
    duck = build_dataset_published(
        simulated_city,
        label="empty_next_hour",
        start=begin,
        end=end,
        every=timedelta(minutes=15),
        out=tmp_path / "d",
        name="s",
    )
    got = pq.read_table(tmp_path / "s" / "data.parquet")
    want = pq.read_table(tmp_path / "d" / "data.parquet")
    assert want.num_rows == 12 * 18 * 4
    assert_same_rows(got, want)
    spk = json.loads(ran.output)
    for key in ("label_unknown_rows", "label_known_until", "label_rate", "plan_hash"):
        assert spk["extra"][key] == duck.metadata.extra[key], key
    # the comparison is not vacuous: every feature has values, the label both values and nulls
    for name in (*bikeshare.feature_names, "bikes_in_60m"):
        assert want.column(name).null_count < want.num_rows, name
    labels = set(want.column("empty_next_hour").to_pylist())
    assert labels == {True, False, None}


# -- point-in-time edge cases (the DuckDB executor's tests) ----------------------------------


@SLOW
def test_hand_computed_point_in_time_values(spark: Any) -> None:
    day = 24 * 60
    events = status(
        # a late event (minute 12, known at 40), a window edge, a TTL; "c" is unknown
        ("a", 0, 0, 0), ("a", 5, 5, 4), ("a", 10, 10, 6), ("a", 12, 40, 9), ("b", 3, 3, 1),
        # a delta reaching back past a three-day gap ("g"), and one with nothing to reach ("h")
        ("g", 0, 0, 2), ("g", 3 * day, 3 * day, 7), ("h", 3 * day, 3 * day + 1, 1),
    )  # fmt: skip
    points = spine(
        ("a", 15), ("a", 40), ("b", 40), ("c", 15), ("a", 15), ("g", 3 * day + 5),
        ("h", 3 * day + 5),
    )  # fmt: skip
    got = spark_features(plan_of(), {"s": events}, points)
    with OfflineExecutor(plan_of(), {"s": events}) as ex:
        assert_same_rows(got, ex.features(points))
    rows = {(r["id"], r["as_of"].minute): r for r in got.to_pylist()}
    a15, a40, g = rows["a", 15], rows["a", 40], rows["g", 5]
    assert (a15["x__last"], a15["x__mean_15m"], a15["x__delta_10m"]) == (6.0, 5.0, 2.0)
    assert (a40["x__last"], a40["events__count_15m"], a40["x__delta_10m"]) == (9.0, 0.0, 0.0)
    assert rows["b", 40]["g__as_of"] is None  # 37 minutes old: TTL
    assert (g["x__delta_10m"], rows["h", 5]["x__delta_10m"]) == (7.0 - 2.0, None)


def wild(seed: int, entities: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Any order of arrival, as the reference tests draw it: ties, duplicates, late and
    future-stamped events, nulls, points on and 1 µs off the events' minute grid, a DST change."""
    rng = random.Random(seed)
    names = [f"e{i:02d}" for i in range(entities)]
    rows = []
    for name in names:
        for _ in range(rng.randint(0, 40)):
            ets = T0 + rng.randint(0, 80) * M + rng.choice([0, 0, 0, 1, M // 2])
            row = {
                "id": name,
                "event_ts": ets,
                "ingested_at": ets + rng.choice(LAGS),
                "x": rng.choice([None, 0, 0, 1, 2, 5]),
                "ok": rng.choice([None, True, False, False]),
            }
            rows += [row, row] if rng.random() < 0.05 else [row]  # a log replay repeats one
    infos = []
    for name in names:
        for _ in range(rng.randint(0, 3)):
            ets = T0 + rng.randint(-10, 150) * M
            infos.append(
                {
                    "id": name,
                    "event_ts": ets,
                    "ingested_at": ets + rng.choice([0, 20 * M, -5 * M]),
                    "lat": rng.choice([None, 41.5, 42.0]),
                    "lon": -87.6,
                    "cap": rng.choice([None, 0, 10]),
                }
            )
    points = [
        (rng.choice([*names, "zz"]), T0 + rng.randint(-5, 100) * M + rng.choice([0, 0, 1, -1]))
        for _ in range(40 * entities)
    ]
    spine_table = pa.table(
        {
            "id": pa.array([p[0] for p in points], pa.string()),
            "as_of": pa.array([p[1] for p in points], pa.int64()).cast(TS),
        }
    )
    return table(rows, STATUS_SCHEMA), table(infos, INFO_SCHEMA), spine_table


@SLOW
def test_any_arrival_order_gives_the_duckdb_rows(spark: Any) -> None:
    # the DuckDB executor's general path (checked against the reference) on every entity
    status_table, info_table, points = wild(seed=17, entities=30)
    plan = full_plan()
    sources = {"s": status_table, "info": info_table}
    with OfflineExecutor(plan, sources, threads=1) as ex:
        want = ex.features(points, labels=True)
    got = spark_features(plan, sources, points, labels=True)
    assert_same_rows(got, want)
    assert want.column("x__delta_5m").null_count < want.num_rows


def test_string_literals_spark_would_read_differently_are_refused() -> None:
    # DuckDB escapes a quote by doubling it; Spark reads that as two adjacent literals
    from dockline.features import _spark_sql
    from dockline.features.expr import col

    assert _spark_sql.expr_sql(col("x") == "ok") == "((`x`) = ('ok'))"
    with pytest.raises(ConfigError, match="cannot render string literal"):
        _spark_sql.expr_sql(col("x") == "it's")
