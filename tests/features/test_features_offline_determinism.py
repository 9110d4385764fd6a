"""Windowed float aggregations give the same bits every run, whatever DuckDB's threads do.

A float sum depends on the order of its terms; DuckDB's parallel join and hash aggregate feed
terms in an order that varies run to run, which changed the last bits of means, sums and
standard deviations between two builds of the same training set (so its hash, and the model's).
"""

from __future__ import annotations

import random
import statistics

import pyarrow as pa
import pytest

from dockline.features import (
    Entity,
    FeatureGroup,
    HourOfWeekProfile,
    Project,
    Source,
    col,
    compile_project,
    last,
    mean,
    stddev,
    sum_,
)
from dockline.features.offline import OfflineExecutor
from dockline.features.plan import Plan

M = 60_000_000
T0 = 1_710_054_000 * 1_000_000
TS = pa.timestamp("us", tz="UTC")


def minutely(stations: int, minutes: int, seed: int) -> pa.Table:
    """Per-minute events with fractional values (integer sums would be exact in any order)."""
    rng = random.Random(seed)
    ets = [T0 + i * M for i in range(minutes)] * stations
    return pa.table(
        {
            "id": [f"s{k}" for k in range(stations) for _ in range(minutes)],
            "event_ts": pa.array(ets, pa.int64()).cast(TS),
            "ingested_at": pa.array(ets, pa.int64()).cast(TS),
            "x": pa.array([rng.random() * 100 for _ in ets], pa.float64()),
        }
    )


def spine_of(points: list[tuple[str, int]]) -> pa.Table:
    return pa.table(
        {
            "id": [p[0] for p in points],
            "as_of": pa.array([p[1] for p in points], pa.int64()).cast(TS),
        }
    )


def runs_of(plan: Plan, events: pa.Table, spine: pa.Table, n: int = 3) -> list[pa.Table]:
    out = []
    for _ in range(n):
        with OfflineExecutor(plan, {"s": events}, threads=2) as ex:
            out.append(ex.features(spine))
    return out


def test_windowed_float_aggregates_are_bit_identical_across_runs() -> None:
    station = Entity("station", key="id")
    src = Source("s", entity=station)
    group = FeatureGroup(
        "g",
        source=src,
        ttl="10m",
        features=[last("x"), mean("x", "60m"), stddev("x", "60m"), sum_("x", "60m")],
    )
    plan = compile_project(Project(name="p", entity=station, groups=[group]))
    stations, minutes = 150, 3000
    events = minutely(stations, minutes, seed=0)
    points = [
        (f"s{k}", T0 + i * M + M // 2) for k in range(stations) for i in range(70, minutes, 3)
    ]
    runs = runs_of(plan, events, spine_of(points))
    for other in runs[1:]:
        for name in ("x__mean_60m", "x__stddev_60m", "x__sum_60m"):
            assert runs[0].column(name).equals(other.column(name)), name
    row = runs[0].slice(0, 1).to_pylist()[0]
    window = events.column("x").to_pylist()[11:71]  # the 60 minutes up to 70.5 m
    assert row["x__sum_60m"] == pytest.approx(sum(window))
    assert row["x__stddev_60m"] == pytest.approx(statistics.stdev(window))


def test_hour_of_week_profiles_are_bit_identical_across_runs() -> None:
    station = Entity("station", key="id")
    src = Source("s", entity=station)
    group = FeatureGroup("g", source=src, ttl="10m", features=[last("x")])
    profile = HourOfWeekProfile(
        "x_how", source=src, value=col("x"), lookback="7d", every="1d", lag="1m"
    )
    plan = compile_project(Project(name="p", entity=station, groups=[group], profiles=[profile]))
    stations, minutes = 40, 9 * 24 * 60
    events = minutely(stations, minutes, seed=1)
    start = T0 + 8 * 24 * 60 * M
    spine = spine_of([(f"s{k}", start + i * 7 * M) for k in range(stations) for i in range(200)])
    runs = runs_of(plan, events, spine)
    assert runs[0].column("x_how").null_count == 0
    for other in runs[1:]:
        assert runs[0].column("x_how").equals(other.column("x_how"))
