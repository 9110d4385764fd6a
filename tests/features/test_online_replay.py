"""The replay path: a round converted once and fed in slices equals feeding each slice as Arrow."""

from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_features
from test_features_online_executor import (
    T0,
    M,
    assert_same,
    ev,
    event_strategy,
    full_plan,
    info_table,
    status_table,
)

from dockline.features._online_replay import feed_round, micro_batch_ranges
from dockline.features.online import OnlineExecutor

ING = {"s": "ingested_at", "info": "ingested_at"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.lists(event_strategy, min_size=1, max_size=60),
    batch_events=st.sampled_from([1, 3, 10]),
    replay=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_feeding_prepared_slices_is_update_many_per_micro_batch(
    raw: list[tuple[str, int, int, int | None, bool | None]],
    batch_events: int,
    replay: bool,
    seed: int,
) -> None:
    plan = full_plan("4m")
    unique = {(e, m, lag): (x, ok) for e, m, lag, x, ok in raw}
    events = [ev(m, x, late=lag, ok=ok, e=e) for (e, m, lag), (x, ok) in unique.items()]
    random.Random(seed).shuffle(events)  # the log's order is not the ingestion order
    distinct = list(events)
    if replay:
        events += events[: len(events) // 2]  # a crash replay inside the same round
    infos = [{"id": "a", "event_ts": T0, "ingested_at": T0 + 2 * M, "lat": 1.0}]
    tables = {"s": status_table(events), "info": info_table(infos)}

    fast, slow = OnlineExecutor(plan), OnlineExecutor(plan)
    ordered, batches = micro_batch_ranges(tables, ING, batch_events)
    fed = list(feed_round(fast, tables, ING, batch_events))
    assert [t for t, _, _ in fed] == [t for t, _ in batches]
    for (_, ranges), (_, touched, count) in zip(batches, fed, strict=True):
        want: set[str] = set()
        for topic, (lo, hi) in ranges.items():
            want |= slow.update_many(topic, ordered[topic].slice(lo, hi - lo))
        assert touched == want and count == sum(hi - lo for lo, hi in ranges.values())
    assert fast.snapshot() == slow.snapshot()
    # and both are right: the brute-force reference of the rules at every micro-batch's T
    # (whose events are all fed by then), for the entities it touched
    fresh = OnlineExecutor(plan)
    everything = {"s": distinct, "info": infos}
    for t_us, touched, _ in feed_round(fresh, tables, ING, batch_events):
        points = [(entity, t_us) for entity in sorted(touched)]
        for point, want in zip(points, reference_features(plan, everything, points), strict=True):
            assert_same(fresh.vector(*point), want, point)
    t_end = fed[-1][0]
    for entity in "abc":
        vector = fast.vector(entity, t_end)
        assert vector == slow.vector(entity, t_end)
        # the split the consistency job uses: state part now, batch + derived later
        assert fast.complete(entity, t_end, fast.state_values(entity, t_end)) == vector


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 20), min_size=1, max_size=40),
    info_times=st.lists(st.integers(0, 20), max_size=5),
    batch_events=st.integers(1, 8),
)
def test_micro_batches_are_whole_ingestion_groups_in_ascending_order(
    times: list[int], info_times: list[int], batch_events: int
) -> None:
    tables = {
        "s": status_table([ev(0, 1, late=m) for m in times]),
        "info": info_table(
            [{"id": "a", "event_ts": T0, "ingested_at": T0 + m * M, "lat": 0.0} for m in info_times]
        ),
    }
    ordered, batches = micro_batch_ranges(tables, ING, batch_events)
    cuts = [t for t, _ in batches]
    assert cuts == sorted(set(cuts)), "T strictly increases"
    seen: dict[str, int] = {"s": 0, "info": 0}
    previous = -1
    for t_us, ranges in batches:
        size = 0
        for topic, (lo, hi) in ranges.items():
            assert lo == seen[topic] < hi  # contiguous, nothing skipped or repeated
            seen[topic] = hi
            ingested = ordered[topic].column("ingested_at").cast(pa.int64()).to_pylist()[lo:hi]
            assert all(previous < v <= t_us for v in ingested)  # whole groups, up to T
            size += hi - lo
        groups = {
            v
            for topic, (lo, hi) in ranges.items()
            for v in ordered[topic].column("ingested_at").cast(pa.int64()).to_pylist()[lo:hi]
        }
        assert t_us in groups
        assert size <= batch_events or len(groups) == 1  # over the budget only for one group
        previous = t_us
    assert seen == {"s": len(times), "info": len(info_times)}
