"""The offline executor on hand-computed cases, its API contract and its input checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dockline.core.errors import ConfigError, ValidationError
from dockline.features import (
    Calendar,
    Derived,
    Entity,
    FeatureGroup,
    HourOfWeekProfile,
    Neighbourhood,
    Project,
    Source,
    Static,
    col,
    compile_project,
    count,
    delta,
    future_any,
    future_value,
    last,
    mean,
    time_since,
)
from dockline.features import offline as offline_module
from dockline.features.offline import (
    OfflineExecutor,
    entities_in,
    grid_spine,
    profile_columns,
)
from dockline.features.plan import Plan

M = 60_000_000
H = 60 * M
T0 = 1_714_971_600 * 1_000_000  # 2024-05-06 05:00 UTC: Monday 00:00 in Chicago
TS = pa.timestamp("us", tz="UTC")

station = Entity("station", key="id")
src = Source("s", entity=station, tz="America/Chicago")
info = Source("info", entity=station, tz="America/Chicago")
zero = col("x") == 0


def plan_of(**kwargs: Any) -> Plan:
    group = FeatureGroup(
        "g",
        source=src,
        ttl="30m",
        features=[
            last("x"),
            mean("x", "15m"),
            count("15m"),
            delta("x", "10m"),
            time_since(zero, name="since_zero"),
        ],
    )
    return compile_project(Project(name="p", entity=station, groups=[group], **kwargs))


def status(*rows: tuple[str, float, float, int | None]) -> pa.Table:
    """(entity, event minute, ingested minute, x) rows."""
    return pa.table(
        {
            "id": pa.array([r[0] for r in rows], pa.string()),
            "event_ts": pa.array([T0 + int(r[1] * M) for r in rows], pa.int64()).cast(TS),
            "ingested_at": pa.array([T0 + int(r[2] * M) for r in rows], pa.int64()).cast(TS),
            "x": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


def spine(*points: tuple[str, float]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([p[0] for p in points], pa.string()),
            "as_of": pa.array([T0 + int(p[1] * M) for p in points], pa.int64()).cast(TS),
        }
    )


def test_hand_computed_point_in_time_values() -> None:
    events = status(
        ("a", 0, 0, 0), ("a", 5, 5, 4), ("a", 10, 10, 6), ("a", 12, 40, 9), ("b", 3, 3, 1)
    )
    with OfflineExecutor(plan_of(), {"s": events}) as ex:
        out = ex.features(spine(("a", 15), ("a", 40), ("b", 40), ("c", 15))).to_pylist()
    a15, a40, b40, c15 = out[0], out[2], out[3], out[1]
    assert (a15["id"], c15["id"]) == ("a", "c")
    assert a15["g__as_of"] == datetime(2024, 5, 6, 5, 10, tzinfo=UTC)
    assert a15["x__last"] == 6.0  # the minute-12 event is only known at minute 40
    assert a15["x__mean_15m"] == pytest.approx((4 + 6) / 2)  # minute 0 is exactly 15m old: out
    assert a15["events__count_15m"] == 2.0
    assert a15["x__delta_10m"] == 6.0 - 4.0  # newest at or before minute 5
    assert a15["since_zero"] == 15.0
    assert a40["x__last"] == 9.0 and a40["x__delta_10m"] == 0.0  # minute 12 is <= 40 - 10
    assert a40["events__count_15m"] == 0.0  # live group (TTL 30m), empty window
    assert b40["g__as_of"] is None and b40["x__last"] is None  # 37 minutes old: TTL
    assert b40["events__count_15m"] is None
    assert c15["x__last"] is None and c15["g__as_of"] is None


def test_output_columns_types_order_and_duplicates() -> None:
    plan = plan_of(
        calendar=Calendar(tz="America/Chicago"),
        derived=[Derived("half", col("x__last") / 2)],
        labels=[
            future_any(zero, "10m", name="empty_soon", source=src),
            future_value("x", "20m", name="x_later", source=src),
        ],
    )
    events = status(("a", 0, 0, 3), ("a", 5, 5, 0))
    points = spine(("b", 1), ("a", 1), ("a", 1), ("a", 0))
    with OfflineExecutor(plan, {"s": events}) as ex:
        out = ex.features(points, labels=True)
        plain = ex.features(points)
    assert out.column_names == [
        "id",
        "as_of",
        "label_available_at",
        "empty_soon",
        "x_later",
        "g__as_of",
        *plan.feature_names,
    ]
    assert plain.column_names == ["id", "as_of", "g__as_of", *plan.feature_names]
    assert out.schema.field("as_of").type == TS and out.schema.field("g__as_of").type == TS
    assert out.schema.field("label_available_at").type == TS
    assert out.schema.field("empty_soon").type == pa.bool_()
    assert all(out.schema.field(n).type == pa.float64() for n in plan.feature_names)
    rows = out.to_pylist()
    assert [(r["id"], r["as_of"].minute) for r in rows] == [("a", 0), ("a", 1), ("a", 1), ("b", 1)]
    assert rows[1] == rows[2]  # duplicates kept, one row per spine row
    assert rows[0]["empty_soon"] is True and rows[0]["x_later"] == 0.0
    assert rows[3]["empty_soon"] is False and rows[3]["x_later"] is None
    assert rows[0]["label_available_at"] == rows[0]["as_of"] + timedelta(minutes=20)
    assert rows[0]["half"] == 1.5
    assert rows[0]["hour_of_day"] == 0.0 and rows[0]["day_of_week"] == 0.0  # Monday, Chicago


def test_chunked_spines_give_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    events = status(
        *[("a" if i % 2 else "b", i, i + (7 if i % 5 == 0 else 0), i % 4) for i in range(60)]
    )
    points = spine(*[(e, m / 2) for m in range(0, 140) for e in ("a", "b")])
    with OfflineExecutor(plan_of(), {"s": events}) as ex:
        whole = ex.features(points)
    monkeypatch.setattr(offline_module, "CHUNK_POINTS", 17)
    with OfflineExecutor(plan_of(), {"s": events}) as ex:
        chunked = ex.features(points)
    assert chunked.equals(whole)


def test_reads_the_hive_partitioned_offline_store(tmp_path: Path) -> None:
    events = status(("a", 0, 0, 1), ("a", 60 * 20, 60 * 20, 2), ("a", 60 * 30, 60 * 30, 3))
    root = tmp_path / "offline" / "s"
    for day in ("2024-05-06", "2024-05-07"):
        (root / f"date={day}").mkdir(parents=True)
    pq.write_table(events.slice(0, 1), root / "date=2024-05-06" / "p0.parquet")
    pq.write_table(events.slice(1, 2), root / "date=2024-05-07" / "p0.parquet")
    with OfflineExecutor(plan_of(), {"s": str(root)}) as ex:
        out = ex.features(spine(("a", 10), ("a", 60 * 20 + 1), ("a", 60 * 30 + 10)))
        assert ex.entities(datetime(2024, 5, 7, tzinfo=UTC), datetime(2024, 5, 8, tzinfo=UTC)) == [
            "a"
        ]
    assert out.column("x__last").to_pylist() == [1.0, 2.0, 3.0]
    assert out.column("since_zero").to_pylist() == [None, None, None]
    assert (
        entities_in(
            plan_of(),
            {"s": str(root)},
            datetime(2024, 5, 9, tzinfo=UTC),
            datetime(2024, 5, 10, tzinfo=UTC),
        )
        == []
    )


def test_missing_sources_and_bad_spines_are_rejected() -> None:
    plan = plan_of(static=Static(info, columns=("lat",)))
    with pytest.raises(ConfigError, match="'info'"):
        OfflineExecutor(plan, {"s": status(("a", 0, 0, 1))})
    with OfflineExecutor(plan_of(), {"s": status(("a", 0, 0, 1))}) as ex:
        with pytest.raises(ValidationError, match="as_of"):
            ex.features(pa.table({"id": ["a"]}))
        naive = pa.table(
            {"id": ["a"], "as_of": pa.array([T0], pa.int64()).cast(pa.timestamp("us"))}
        )
        with pytest.raises(ValidationError, match="tz-aware"):
            ex.features(naive)
        empty = ex.features(spine())
        assert empty.num_rows == 0 and empty.column_names[:2] == ["id", "as_of"]
    with pytest.raises(ConfigError, match="no column 'event_ts'"):
        OfflineExecutor(plan_of(), {"s": status(("a", 0, 0, 1)).drop_columns(["event_ts"])})


def test_grid_spine_is_every_entity_at_every_step() -> None:
    start = datetime(2024, 5, 6, tzinfo=UTC)
    grid = grid_spine(
        ["b", "a", "a"], start, start + timedelta(minutes=15), timedelta(minutes=5), key="id"
    )
    assert grid.num_rows == 6
    assert grid.column("id").to_pylist() == ["a", "b"] * 3
    assert grid.column("as_of").to_pylist()[::2] == [
        start + timedelta(minutes=m) for m in (0, 5, 10)
    ]
    assert grid.schema.field("as_of").type == TS
    with pytest.raises(ConfigError):
        grid_spine(["a"], start, start, timedelta(0))


def batch_plan() -> Plan:
    group = FeatureGroup("g", source=src, ttl="1d", features=[last("x")])
    return compile_project(
        Project(
            name="b",
            entity=station,
            groups=[group],
            profiles=[
                HourOfWeekProfile(
                    "how", source=src, value=col("x"), lookback="7d", every="1d", lag="1h"
                )
            ],
            neighbourhoods=[
                Neighbourhood("near", feature="x__last", k=1, locations=info, every="1d", lag="0s")
            ],
        )
    )


def info_table(*rows: tuple[str, float, float]) -> pa.Table:
    return pa.table(
        {
            "id": [r[0] for r in rows],
            "event_ts": pa.array([T0 - 10 * 24 * H] * len(rows), pa.int64()).cast(TS),
            "ingested_at": pa.array([T0 - 10 * 24 * H] * len(rows), pa.int64()).cast(TS),
            "lat": [r[1] for r in rows],
            "lon": [r[2] for r in rows],
        }
    )


def test_batch_runs_and_injected_provider() -> None:
    plan = batch_plan()
    day = 24 * 60  # minutes
    # Monday 00:00 Chicago = T0; values at Monday 00:xx in the week before
    events = status(
        ("a", -7 * day + 10, -7 * day + 10, 4),
        ("a", -7 * day + 20, -7 * day + 20, 8),
        ("b", -30, -30, 5),
    )
    infos = info_table(("a", 41.0, -87.0), ("b", 41.1, -87.0), ("c", 45.0, -87.0))
    run = (T0 // (24 * H)) * 24 * H  # the run in force at T0 + 30m (runs at 00:00 UTC + 1h lag)
    with OfflineExecutor(plan, {"s": events, "info": infos}) as ex:
        tables = ex.batch_run(run)
        assert set(tables) == {"how", "near"}
        prof = tables["how"]
        assert prof.column_names == ["id", *profile_columns()]
        assert prof.column("id").to_pylist() == ["a"]
        assert prof.column("h000").to_pylist() == [6.0]  # Monday 00:xx in Chicago
        assert prof.column("h001").to_pylist() == [None]
        near = tables["near"].to_pylist()
        assert near == [
            {"id": "a", "value": None},
            {"id": "b", "value": None},
            {"id": "c", "value": None},
        ]  # x__last of a is 7 days old at the run
        out = ex.features(spine(("a", 30), ("b", 30))).to_pylist()
        assert out[0]["how"] == 6.0 and out[1]["how"] is None
        again = ex.batch_run(run)
        assert all(again[name] is tables[name] for name in tables)  # cached

    calls: list[int] = []

    def provider(run_us: int) -> dict[str, pa.Table]:
        calls.append(run_us)
        values = [0.5] * len(profile_columns())
        return {
            "how": pa.table(
                {"id": ["a"], **{c: [v] for c, v in zip(profile_columns(), values, strict=True)}}
            ),
            "near": pa.table({"id": ["a", "b"], "value": [1.5, None]}),
        }

    with OfflineExecutor(plan, {"s": events, "info": infos}, batch_provider=provider) as ex:
        out = ex.features(spine(("a", 30), ("b", 30), ("a", 31))).to_pylist()
    assert calls and all(r % (24 * H) == 0 for r in calls)
    assert [r["how"] for r in out] == [0.5, None, 0.5]  # b: not in the run's table
    assert [r["near"] for r in out] == [1.5, None, 1.5]


def test_delta_reaches_back_past_a_long_gap() -> None:
    day = 24 * 60
    # the anchor for delta at minute 3d+5 is the event 3 days earlier (nothing in between)
    events = status(("a", 0, 0, 2), ("a", 3 * day, 3 * day, 7), ("b", 3 * day, 3 * day + 1, 1))
    with OfflineExecutor(plan_of(), {"s": events}) as ex:
        out = ex.features(spine(("a", 3 * day + 5), ("b", 3 * day + 5))).to_pylist()
    assert out[0]["x__delta_10m"] == 7.0 - 2.0
    assert out[1]["x__delta_10m"] is None  # nothing at or before t - 10m
