"""The reference implementation itself, on cases computed by hand from docs/features.md."""

from __future__ import annotations

import pytest
from reference import reference_features

from dockline.features import (
    Calendar,
    Derived,
    Entity,
    FeatureGroup,
    Project,
    Source,
    col,
    compile_project,
    count,
    count_if,
    delta,
    future_any,
    future_value,
    last,
    max_,
    mean,
    stddev,
    time_since,
)

M = 60_000_000  # one minute in µs
station = Entity("station", key="id")
src = Source("s", entity=station)


def ev(
    t_min: float, bikes: int | None, *, late_min: float = 0.0, entity: str = "a"
) -> dict[str, object]:
    t = int(t_min * M)
    return {"id": entity, "event_ts": t, "ingested_at": t + int(late_min * M), "bikes": bikes}


def plan_of(*features: object, ttl: str = "1h", **kwargs: object):  # type: ignore[no-untyped-def]
    group = FeatureGroup("g", source=src, ttl=ttl, features=list(features))  # type: ignore[arg-type]
    return compile_project(Project(name="p", entity=station, groups=[group], **kwargs))  # type: ignore[arg-type]


def at(plan, events, t_min: float, entity: str = "a", **kw):  # type: ignore[no-untyped-def]
    return reference_features(plan, {"s": events}, [(entity, int(t_min * M))], **kw)[0]


def test_as_known_at_excludes_late_events_until_they_arrive() -> None:
    plan = plan_of(last("bikes"))
    events = [ev(0, 5), ev(10, 7, late_min=20)]  # the 10-minute snapshot arrives at minute 30
    assert at(plan, events, 15)["bikes__last"] == 5.0
    assert at(plan, events, 30)["bikes__last"] == 7.0
    assert at(plan, events, 30)["g__as_of"] == 10 * M


def test_ttl_nulls_the_whole_group() -> None:
    plan = plan_of(last("bikes"), count("15m"), ttl="30m")
    events = [ev(0, 5)]
    assert at(plan, events, 30) == {"g__as_of": 0, "bikes__last": 5.0, "events__count_15m": 0.0}
    assert at(plan, events, 30.01) == {
        "g__as_of": None,
        "bikes__last": None,
        "events__count_15m": None,
    }


def test_windows_are_half_open_and_skip_nulls() -> None:
    plan = plan_of(mean("bikes", "10m"), max_("bikes", "10m"), stddev("bikes", "10m"), count("10m"))
    events = [ev(0, 100), ev(5, 2), ev(8, None), ev(10, 4)]
    out = at(plan, events, 10)  # the minute-0 event is exactly 10 minutes old: out
    assert out["bikes__mean_10m"] == 3.0
    assert out["bikes__max_10m"] == 4.0
    assert out["events__count_10m"] == 3.0
    assert out["bikes__stddev_10m"] == pytest.approx(2**0.5)


def test_ties_break_by_ingestion_then_value() -> None:
    plan = plan_of(last("bikes"))
    assert at(plan, [ev(5, 3, late_min=1), ev(5, 9)], 10)["bikes__last"] == 3.0
    assert at(plan, [ev(5, 3), ev(5, 9)], 10)["bikes__last"] == 9.0


def test_delta_count_if_and_time_since() -> None:
    empty = col("bikes") == 0
    plan = plan_of(
        delta("bikes", "10m"),
        count_if(empty, "60m", name="empties"),
        time_since(empty, name="since_empty"),
    )
    events = [ev(0, 0), ev(5, 4), ev(12, 0), ev(20, 6)]
    out = at(plan, events, 20)
    assert out["bikes__delta_10m"] == 6.0 - 4.0  # value 10 minutes ago: the minute-5 event
    assert out["empties"] == 2.0
    assert out["since_empty"] == 8.0
    assert at(plan, events[:1], 5)["bikes__delta_10m"] is None


def test_future_stamped_events_wait_for_their_time() -> None:
    plan = plan_of(last("bikes"))
    events = [ev(0, 1), ev(12, 2, late_min=-2)]  # stamped 12, ingested at 10
    assert at(plan, events, 11)["bikes__last"] == 1.0
    assert at(plan, events, 12)["bikes__last"] == 2.0


def test_labels_look_strictly_forward() -> None:
    labels = [
        future_any(col("bikes") == 0, "60m", name="empty_next_hour", source=src),
        future_value("bikes", "60m", name="bikes_in_60m", source=src),
    ]
    plan = plan_of(last("bikes"), labels=labels)
    events = [ev(0, 0), ev(30, 3), ev(60, 0), ev(61, 5)]
    out = at(plan, events, 0, labels=True)
    assert out["empty_next_hour"] is True  # the minute-60 event is inside (0, 60]
    assert out["bikes_in_60m"] == 0.0
    assert out["label_available_at"] == 60 * M
    out = at(plan, events, 60, labels=True)
    assert out["empty_next_hour"] is False and out["bikes_in_60m"] == 5.0


def test_calendar_follows_the_time_zone_and_derived_handles_nulls() -> None:
    plan = plan_of(
        last("bikes"),
        calendar=Calendar(tz="America/Chicago"),
        derived=[Derived("half", col("bikes__last") / 2), Derived("ratio", col("bikes__last") / 0)],
    )
    # 2024-03-10 08:30 UTC is 02:30 CST … which does not exist: DST starts; Chicago shows 03:30 CDT
    t_min = 1_710_059_400 / 60
    out = at(plan, [ev(t_min - 1, 4)], t_min)
    assert out["hour_of_day"] == 3.0
    assert out["day_of_week"] == 6.0 and out["is_weekend"] == 1.0
    assert out["half"] == 2.0 and out["ratio"] is None
