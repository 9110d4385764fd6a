"""The online executor against hand-computed cases and the brute-force reference of the rules."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_features

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
    count_if,
    delta,
    last,
    max_,
    mean,
    min_,
    stddev,
    sum_,
    time_since,
)
from dockline.features.online import OnlineExecutor
from dockline.features.plan import Plan

M = 60_000_000  # one minute in µs
T0 = 1_710_054_000 * 1_000_000  # 2024-03-10 07:00 UTC: Chicago's DST change is 1.5 h later
TS = pa.timestamp("us", tz="UTC")

station = Entity("station", key="id")
src = Source("s", entity=station, tz="America/Chicago")
info = Source("info", entity=station)
zero = col("x") == 0
busy = (col("x") >= 2) | col("ok")


def full_plan(ttl: str = "20m") -> Plan:
    """Every aggregation, two groups on one source, static, calendar and derived features."""
    main = FeatureGroup(
        "g",
        source=src,
        ttl=ttl,
        features=[
            last("x"),
            last("ok"),
            mean("x", "5m"),
            min_("x", "5m"),
            max_("x", "10m"),
            sum_("x", "10m"),
            stddev("x", "10m"),
            count("5m"),
            count_if(busy, "10m", name="busy_10m"),
            delta("x", "5m"),
            delta("x", "15m"),
            time_since(zero, name="since_zero"),
            time_since(busy, name="since_busy", unit="seconds"),
        ],
    )
    short = FeatureGroup(
        "h", source=src, ttl="3m", features=[last("x", name="x_h"), count("3m", name="n_h")]
    )
    return compile_project(
        Project(
            name="p",
            entity=station,
            groups=[main, short],
            static=Static(info, columns=("lat",)),
            calendar=Calendar(tz="America/Chicago"),
            derived=[
                Derived("ratio", col("x__last") / col("x__mean_5m")),
                Derived("big", col("x__last") > 1),
            ],
        )
    )


def status_table(events: Sequence[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("event_ts", TS),
            ("ingested_at", TS),
            ("x", pa.int64()),
            ("ok", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist(list(events), schema)


def info_table(events: Sequence[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [("id", pa.string()), ("event_ts", TS), ("ingested_at", TS), ("lat", pa.float64())]
    )
    return pa.Table.from_pylist(list(events), schema)


def ev(minute: float, x: int | None, *, late: float = 0, ok: bool | None = False, e: str = "a"):  # type: ignore[no-untyped-def]
    t = T0 + int(minute * M)
    return {"id": e, "event_ts": t, "ingested_at": t + int(late * M), "x": x, "ok": ok}


def assert_same(got: dict[str, Any], want: dict[str, Any], where: object = "") -> None:
    assert set(got) == set(want), where
    for name, expected in want.items():
        actual = got[name]
        if expected is None or actual is None:
            assert actual is None and expected is None, (where, name, actual, expected)
        else:
            assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9), (where, name)


# -- hand-computed ----------------------------------------------------------------------------


def test_windows_ttl_delta_and_time_since_by_hand() -> None:
    plan = full_plan()
    ex = OnlineExecutor(plan)
    events = [ev(0, 0), ev(4, 4, ok=True), ev(6, None), ev(8, 2), ev(10, 3, late=3)]
    assert ex.update_many("s", status_table(events)) == {"a"}
    v = ex.vector("a", T0 + 10 * M)  # the minute-10 event is not known before minute 13
    assert v["g__as_of"] == T0 + 8 * M
    assert v["x__last"] == 2.0 and v["ok__last"] == 0.0
    assert v["x__mean_5m"] == 2.0  # (t-5m, t]: the 6 (null) and 8 events; the 4 is 6 min old
    assert v["events__count_5m"] == 2.0
    assert v["x__max_10m"] == 4.0  # the minute-0 event is exactly 10 minutes old: out
    assert v["x__sum_10m"] == 6.0
    assert v["x__stddev_10m"] == pytest.approx(2**0.5)
    assert v["busy_10m"] == 2.0  # x=4 (ok) and x=2
    assert v["x__delta_5m"] == 2.0 - 4.0  # newest at or before minute 5: the minute-4 event
    assert v["x__delta_15m"] is None  # nothing at or before minute -5
    assert v["since_zero"] == 10.0
    assert v["since_busy"] == 120.0  # seconds
    assert v["h__as_of"] == T0 + 8 * M and v["n_h"] == 1.0
    assert v["lat__static"] is None
    assert v["ratio"] == 1.0 and v["big"] == 1.0
    later = ex.vector("a", T0 + 13 * M)
    assert later["x__last"] == 3.0 and later["events__count_5m"] == 1.0  # the 8 is 5m old
    assert later["h__as_of"] == T0 + 10 * M
    gone = ex.vector("a", T0 + 31 * M)  # 21 minutes after the newest event: TTL is 20m
    assert gone["g__as_of"] is None and gone["x__last"] is None and gone["since_zero"] is None
    assert gone["ratio"] is None and gone["big"] is None
    assert ex.vector("nobody", T0)["events__count_5m"] is None


def test_ties_break_by_ingestion_then_value_and_static_is_as_known() -> None:
    plan = full_plan()
    ex = OnlineExecutor(plan)
    ex.update_many(
        "s", status_table([ev(5, 3, late=1), ev(5, 9), ev(6, 1, e="b"), ev(6, 7, e="b")])
    )
    assert ex.vector("a", T0 + 10 * M)["x__last"] == 3.0
    assert ex.vector("b", T0 + 10 * M)["x__last"] == 7.0
    first = {"id": "a", "event_ts": T0, "ingested_at": T0, "lat": 41.0}
    ex.update_many("info", info_table([first]))
    assert ex.vector("a", T0 + 10 * M)["lat__static"] == 41.0
    ex.update_many(
        "info", info_table([{**first, "event_ts": T0 + M, "ingested_at": T0 + 30 * M, "lat": 42.0}])
    )
    assert ex.vector("a", T0 + 30 * M)["lat__static"] == 42.0
    assert ex.vector("a", T0 + 1000 * M)["lat__static"] == 42.0  # no TTL for static


def test_future_stamped_events_wait_for_their_time() -> None:
    ex = OnlineExecutor(full_plan())
    ex.update_many("s", status_table([ev(0, 1), ev(12, 2, late=-2)]))  # stamped 12, known at 10
    assert ex.vector("a", T0 + 11 * M)["x__last"] == 1.0
    assert ex.vector("a", T0 + 12 * M)["x__last"] == 2.0


def test_unknown_tables_are_ignored_and_bad_input_is_rejected() -> None:
    ex = OnlineExecutor(full_plan())
    assert ex.tables == ("info", "s", "s.confirmed")  # a source's confirmations too
    assert ex.update_many("elsewhere", status_table([ev(0, 1)])) == set()
    with pytest.raises(ValidationError, match="column 'x'"):
        ex.update_many("s", status_table([ev(0, 1)]).drop_columns(["x"]))
    with pytest.raises(ValidationError, match="nulls"):
        ex.update_many(
            "s", status_table([ev(0, 1)]).set_column(0, "id", pa.array([None], pa.string()))
        )


def test_vectors_table_has_key_as_of_groups_and_features_in_plan_order() -> None:
    plan = full_plan()
    ex = OnlineExecutor(plan)
    ex.update_many("s", status_table([ev(0, 5), ev(1, 6, e="b")]))
    table = ex.vectors(["a", "b", "c"], T0 + 2 * M)
    assert table.column_names == ["id", "as_of", "g__as_of", "h__as_of", *plan.feature_names]
    assert table.schema.field("as_of").type == TS and table.schema.field("g__as_of").type == TS
    assert table.column("x__last").to_pylist() == [5.0, 6.0, None]
    assert table.schema.field("x__last").type == pa.float64()


def test_replayed_micro_batch_counts_once() -> None:
    ex = OnlineExecutor(full_plan())
    batch = status_table([ev(0, 1), ev(1, 2), ev(2, 3)])
    assert ex.update_many("s", batch) == {"a"}
    assert ex.update_many("s", batch) == set()  # a crash replay: nothing new
    assert ex.update_many("s", batch.take([2, 0])) == set()
    v = ex.vector("a", T0 + 3 * M)
    assert v["events__count_5m"] == 3.0 and v["x__sum_10m"] == 6.0


def test_state_stays_within_the_horizon_but_keeps_what_rules_need() -> None:
    plan = full_plan(ttl="20m")
    ex = OnlineExecutor(plan)
    ex.update_many("s", status_table([ev(0, 0)]))  # the only zero: time_since must survive
    ex.update_many("s", status_table([ev(m, 5) for m in range(1, 600)]))
    kept = ex._state["s"]["a"].events
    assert len(kept) <= 22  # 20 min horizon (+ the delta anchor), not 600 events
    v = ex.vector("a", T0 + 599 * M)
    assert v["since_zero"] == 599.0 and v["events__count_5m"] == 5.0
    assert v["x__delta_15m"] == 0.0
    # a gap longer than the delta window: the anchor before the gap is still there
    ex.update_many("s", status_table([ev(610, 7)]))
    assert ex.vector("a", T0 + 612 * M)["x__delta_5m"] == 7.0 - 5.0


def test_snapshot_is_deterministic_and_checked_against_the_plan() -> None:
    plan = full_plan()
    ex = OnlineExecutor(plan)
    ex.update_many("s", status_table([ev(0, 0), ev(1, None, ok=None), ev(2, 3, e="b")]))
    ex.update_many("info", info_table([{"id": "a", "event_ts": T0, "ingested_at": T0, "lat": 1.5}]))
    data = ex.snapshot()
    again = OnlineExecutor.restore(plan, data)
    assert again.snapshot() == data
    assert again.vector("a", T0 + 3 * M) == ex.vector("a", T0 + 3 * M)
    with pytest.raises(ConfigError, match="another plan"):
        OnlineExecutor.restore(full_plan(ttl="30m"), data)
    with pytest.raises(ValidationError, match="unreadable"):
        OnlineExecutor.restore(plan, b"\x00garbage")


# -- batch features ---------------------------------------------------------------------------


def test_batch_features_use_the_newest_available_run_and_the_hour_of_week() -> None:
    profile = HourOfWeekProfile("how", source=src, value=col("x"), every="1d", lag="1h")
    hood = Neighbourhood("near", feature="x__last", k=1, locations=info, every="1h", lag="5m")
    plan = compile_project(
        Project(
            name="p",
            entity=station,
            groups=[FeatureGroup("g", source=src, features=[last("x")])],
            profiles=[profile],
            neighbourhoods=[hood],
            derived=[Derived("gap", col("x__last") - col("near"))],
        )
    )
    calls: list[int] = []

    def provider(run_us: int) -> dict[str, pa.Table]:
        calls.append(run_us)
        hours = {f"h{h:03d}": [float(h) + run_us / 1e18] for h in range(168)}
        return {
            "how": pa.table({"id": ["a"], **hours}),
            "near": pa.table({"id": ["a"], "value": [run_us / 1e12]}),
        }

    day = 86_400 * 1_000_000
    monday = 1_714_348_800 * 1_000_000  # 2024-04-29 00:00 UTC, a Monday: 2024-04-28 19:00 CDT
    ex = OnlineExecutor(plan, batch_provider=provider)
    ex.update_many(
        "s",
        status_table([{"id": "a", "event_ts": monday, "ingested_at": monday, "x": 2, "ok": True}]),
    )
    t = monday + 30 * M  # Sunday 19:30 in Chicago: hour-of-week 6*24+19
    v = ex.vector("a", t)
    run = ((t - 3600 * 1_000_000) // day) * day  # the newest run with r + 1h <= t
    assert v["how"] == pytest.approx(6 * 24 + 19 + run / 1e18)
    hood_run = ((t - 5 * M) // (3600 * 1_000_000)) * 3600 * 1_000_000
    assert v["near"] == hood_run / 1e12 and v["gap"] == 2.0 - hood_run / 1e12
    assert ex.vector("b", t)["how"] is None
    ex.vector("a", t + M)
    assert sorted(set(calls)) == sorted({run, hood_run})  # runs are cached
    assert OnlineExecutor(plan).vector("a", t)["near"] is None  # no provider: null


def reference_provider(plan: Plan, events: dict[str, list[dict[str, Any]]], entities: list[str]):  # type: ignore[no-untyped-def]
    """Batch runs derived from the reference: the value at any t served by run r."""
    profile, hood = plan.profiles[0], plan.neighbourhoods[0]

    def provider(run_us: int) -> dict[str, pa.Table]:
        hours: dict[str, list[float | None]] = {
            f"h{h:03d}": [None] * len(entities) for h in range(168)
        }
        start = run_us + profile.lag_us
        for t in range(start, start + profile.every_us, 15 * M):
            out = reference_features(plan, events, [(e, t) for e in entities])
            from dockline.features.online import hour_of_week

            h = hour_of_week(t, "America/Chicago")
            for i, row in enumerate(out):
                hours[f"h{h:03d}"][i] = row[profile.name]
        near = reference_features(plan, events, [(e, run_us + hood.lag_us) for e in entities])
        return {
            profile.name: pa.table(
                {"id": entities, **{k: pa.array(v, pa.float64()) for k, v in hours.items()}}
            ),
            hood.name: pa.table(
                {"id": entities, "value": pa.array([r[hood.name] for r in near], pa.float64())}
            ),
        }

    return provider


# -- property: online == reference at every micro-batch time ----------------------------------

event_strategy = st.tuples(
    st.sampled_from("abc"),
    st.one_of(st.integers(0, 45), st.integers(0, 150)),  # minute: coarse, so ties and edges
    st.sampled_from([0, 0, 0, 0, 1, 3, 16, -1, -2]),  # ingestion lag in minutes (late, future)
    st.one_of(st.none(), st.integers(0, 4)),
    st.one_of(st.none(), st.booleans()),
)


Tagged = tuple[str, dict[str, Any]]


def arrival_batches(
    events: list[Tagged], splits: list[int], rng: random.Random
) -> list[list[Tagged]]:
    """Events in ingestion order, cut at random sizes but never inside one ingested_at group."""
    ordered = sorted(events, key=lambda e: e[1]["ingested_at"])
    batches: list[list[Tagged]] = []
    i = 0
    for size in splits:
        if i >= len(ordered):
            break
        batch = ordered[i : i + max(1, size)]
        i += len(batch)
        while i < len(ordered) and ordered[i][1]["ingested_at"] == batch[-1][1]["ingested_at"]:
            batch.append(ordered[i])
            i += 1
        rng.shuffle(batch)  # any order inside a micro-batch
        batches.append(batch)
    if i < len(ordered):
        batches.append(ordered[i:])
    return batches


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.lists(event_strategy, min_size=1, max_size=60),
    infos=st.lists(
        st.tuples(st.sampled_from("ab"), st.integers(0, 45), st.sampled_from([0, 5])), max_size=4
    ),
    splits=st.lists(st.integers(1, 12), max_size=20),
    ttl=st.sampled_from(["4m", "20m"]),
    seed=st.integers(0, 2**16),
)
def test_online_matches_the_reference_at_micro_batch_times(
    raw: list[tuple[str, int, int, int | None, bool | None]],
    infos: list[tuple[str, int, int]],
    splits: list[int],
    ttl: str,
    seed: int,
) -> None:
    plan = full_plan(ttl)
    rng = random.Random(seed)
    # one event per (entity, event_ts, ingested_at): a repeat of that triple is a replay
    unique = {(e, m, lag): (x, ok) for e, m, lag, x, ok in raw}
    events = [ev(m, x, late=lag, ok=ok, e=e) for (e, m, lag), (x, ok) in unique.items()]
    info_events = [
        {"id": e, "event_ts": T0 + m * M, "ingested_at": T0 + (m + lag) * M, "lat": float(m)}
        for e, m, lag in infos
    ]
    ex = OnlineExecutor(plan)
    restored: OnlineExecutor | None = None
    everything = {"s": events, "info": info_events}
    tagged = [("s", e) for e in events] + [("info", e) for e in info_events]
    batches = arrival_batches(tagged, splits, rng)

    def feed(executor: OnlineExecutor, batch: list[tuple[str, dict[str, Any]]]) -> set[str]:
        rows = [e for table, e in batch if table == "s"]
        infos = [e for table, e in batch if table == "info"]
        return executor.update_many("s", status_table(rows)) | executor.update_many(
            "info", info_table(infos)
        )

    for n, batch in enumerate(batches):
        touched = feed(ex, batch)
        assert touched <= {e["id"] for _, e in batch}
        if rng.random() < 0.2:  # a crash replay of this micro-batch: must not count twice
            assert feed(ex, batch) == set()
        if restored is not None:
            feed(restored, batch)
        elif n == len(batches) // 2:
            restored = OnlineExecutor.restore(plan, ex.snapshot())
        t_now = max(e["ingested_at"] for _, e in batch)
        next_t = (
            min(e["ingested_at"] for _, e in batches[n + 1])
            if n + 1 < len(batches)
            else t_now + 30 * M
        )
        points = [(entity, t_now) for entity in "abc"]
        points.append((rng.choice("abc"), rng.randrange(t_now, max(t_now + 1, next_t))))
        want = reference_features(plan, everything, points)
        for (entity, t), expected in zip(points, want, strict=True):
            got = ex.vector(entity, t)
            assert_same(got, expected, (entity, t - T0))
            if restored is not None:
                assert restored.vector(entity, t) == got
    if restored is not None:
        assert restored.snapshot() == ex.snapshot()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.lists(event_strategy, min_size=1, max_size=25),
    seed=st.integers(0, 2**16),
)
def test_batch_features_match_the_reference(
    raw: list[tuple[str, int, int, int | None, bool | None]], seed: int
) -> None:
    profile = HourOfWeekProfile(
        "how", source=src, value=col("x") / 2, lookback="1h", every="30m", lag="10m"
    )
    hood = Neighbourhood("near", feature="half", k=2, locations=info, every="15m", lag="2m")
    plan = compile_project(
        Project(
            name="p",
            entity=station,
            groups=[FeatureGroup("g", source=src, ttl="30m", features=[last("x")])],
            profiles=[profile],
            neighbourhoods=[hood],
            derived=[
                Derived("half", col("x__last") / 2),
                Derived("gap", col("half") - col("near")),
            ],
        )
    )
    rng = random.Random(seed)
    unique = {(e, m, lag): (x, ok) for e, m, lag, x, ok in raw}
    events = [ev(m, x, late=lag, ok=ok, e=e) for (e, m, lag), (x, ok) in unique.items()]
    infos = [
        {"id": e, "event_ts": T0, "ingested_at": T0, "lat": 41.0 + i / 100, "lon": -87.0}
        for i, e in enumerate("abc")
    ]
    everything = {"s": events, "info": infos}
    ex = OnlineExecutor(plan, batch_provider=reference_provider(plan, everything, list("abc")))
    info_schema = pa.schema(
        [
            ("id", pa.string()),
            ("event_ts", TS),
            ("ingested_at", TS),
            ("lat", pa.float64()),
            ("lon", pa.float64()),
        ]
    )
    ex.update_many("info", pa.Table.from_pylist(infos, info_schema))
    ex.update_many("s", status_table(events))
    t_last = max(e["ingested_at"] for e in events)
    points = [(rng.choice("abc"), t_last + rng.randrange(0, 60) * M) for _ in range(4)]
    for (entity, t), expected in zip(
        points, reference_features(plan, everything, points), strict=True
    ):
        assert_same(ex.vector(entity, t), expected, (entity, t - T0))
