"""A brute-force, obviously-correct implementation of docs/features.md, for tests only.

Both executors (offline SQL, online incremental state) are compared with this on random event
streams. It is written for clarity, not speed: every point rescans every event.

Events are plain dicts keyed by column name, with ``event_ts`` and ``ingested_at`` as int
microseconds since the epoch (UTC), grouped by source table name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dockline.core.time import EPOCH
from dockline.features.plan import GroupSpec, Plan

Event = Mapping[str, Any]
Value = float | int | bool | str | None

EARTH_RADIUS_KM = 6371.0088


def _sortable(value: Any) -> tuple[int, Any]:
    """None sorts below everything; booleans and numbers compare as numbers."""
    return (0, 0) if value is None else (1, value)


def _avail(event: Event) -> int:
    return max(int(event["event_ts"]), int(event["ingested_at"]))


def _known(events: Sequence[Event], key: str, entity: str, t: int) -> list[Event]:
    return [e for e in events if e[key] == entity and _avail(e) <= t]


def _newest(events: Sequence[Event], column: str | None = None) -> Event:
    return max(
        events,
        key=lambda e: (e["event_ts"], e["ingested_at"], _sortable(e[column] if column else None)),
    )


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return float(value)


def _local(t_us: int, tz: str) -> Any:
    return (EPOCH + timedelta(microseconds=t_us)).astimezone(ZoneInfo(tz))


def hour_of_week(t_us: int, tz: str) -> int:
    """0 = Monday 00:00–00:59 … 167, in ``tz``."""
    local = _local(t_us, tz)
    return local.weekday() * 24 + local.hour


def _group(
    plan: Plan, group: GroupSpec, events: Mapping[str, Sequence[Event]], entity: str, t: int
) -> dict[str, Value]:
    source = plan.source(group.source)
    known = _known(events.get(source.table, ()), plan.key, entity, t)
    out: dict[str, Value] = {group.as_of_column: None}
    out.update(dict.fromkeys((a.name for a in group.aggs), None))
    if not known:
        return out
    newest = _newest(known)
    if t - newest["event_ts"] > group.ttl_us:
        return out
    out[group.as_of_column] = int(newest["event_ts"])
    for agg in group.aggs:
        column = agg.column
        if agg.op == "last":
            assert column is not None
            out[agg.name] = _num(_newest(known, column)[column])
            continue
        if agg.op == "time_since":
            assert agg.predicate is not None
            hits = [e for e in known if agg.predicate.evaluate(e) is True]
            out[agg.name] = (
                None if not hits else (t - max(e["event_ts"] for e in hits)) / agg.unit_us
            )
            continue
        assert agg.window_us is not None
        if agg.op == "delta":
            assert column is not None
            past = [e for e in known if e["event_ts"] <= t - agg.window_us]
            if not past:
                continue
            now_value = _num(_newest(known, column)[column])
            then_value = _num(_newest(past, column)[column])
            out[agg.name] = (
                None if now_value is None or then_value is None else now_value - then_value
            )
            continue
        window = [e for e in known if t - agg.window_us < e["event_ts"] <= t]
        if agg.op == "count":
            out[agg.name] = float(len(window))
            continue
        if agg.op == "count_if":
            assert agg.predicate is not None
            out[agg.name] = float(sum(1 for e in window if agg.predicate.evaluate(e) is True))
            continue
        assert column is not None
        values = [v for v in (_num(e[column]) for e in window) if v is not None]
        if agg.op == "stddev":
            if len(values) < 2:
                continue
            mu = sum(values) / len(values)
            out[agg.name] = math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))
            continue
        if not values:
            continue
        if agg.op == "mean":
            out[agg.name] = sum(values) / len(values)
        elif agg.op == "min":
            out[agg.name] = min(values)
        elif agg.op == "max":
            out[agg.name] = max(values)
        elif agg.op == "sum":
            out[agg.name] = sum(values)
        else:  # pragma: no cover - the plan validates ops
            raise AssertionError(agg.op)
    return out


def _static(
    plan: Plan, events: Mapping[str, Sequence[Event]], entity: str, t: int
) -> dict[str, Value]:
    assert plan.static is not None
    source = plan.source(plan.static.source)
    known = _known(events.get(source.table, ()), plan.key, entity, t)
    out: dict[str, Value] = {}
    for column, name in zip(plan.static.columns, plan.static.names, strict=True):
        out[name] = _num(_newest(known, column)[column]) if known else None
    return out


def _calendar(plan: Plan, t: int) -> dict[str, Value]:
    assert plan.calendar is not None
    local = _local(t, plan.calendar.tz)
    values = {
        "hour_of_day": float(local.hour),
        "day_of_week": float(local.weekday()),
        "is_weekend": 1.0 if local.weekday() >= 5 else 0.0,
        "minute_of_day": float(local.hour * 60 + local.minute),
    }
    return {name: values[name] for name in plan.calendar.features}


def _run(t: int, every_us: int, lag_us: int) -> int:
    return ((t - lag_us) // every_us) * every_us


def _streaming(
    plan: Plan, events: Mapping[str, Sequence[Event]], entity: str, t: int
) -> dict[str, Value]:
    """Groups, static, calendar and the derived features that do not need batch features."""
    out: dict[str, Value] = {}
    for group in plan.groups:
        out.update(_group(plan, group, events, entity, t))
    if plan.static is not None:
        out.update(_static(plan, events, entity, t))
    if plan.calendar is not None:
        out.update(_calendar(plan, t))
    return out


def _derive(plan: Plan, out: dict[str, Value], *, upto: str | None = None) -> None:
    for derived in plan.derived:
        if derived.expr.columns() - out.keys():
            continue  # depends on a batch feature not computed at this stage
        value = derived.expr.evaluate(out)
        out[derived.name] = _num(value)
        if derived.name == upto:
            return


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def _locations(
    plan: Plan, table: str, lat: str, lon: str, events: Mapping[str, Sequence[Event]], r: int
) -> dict[str, tuple[float, float]]:
    found: dict[str, tuple[float, float]] = {}
    rows = events.get(table, ())
    for entity in sorted({e[plan.key] for e in rows}):
        known = _known(rows, plan.key, entity, r)
        if known:
            newest = _newest(known)
            if newest[lat] is not None and newest[lon] is not None:
                found[entity] = (float(newest[lat]), float(newest[lon]))
    return found


def _batch(
    plan: Plan, events: Mapping[str, Sequence[Event]], entity: str, t: int, out: dict[str, Value]
) -> None:
    for profile in plan.profiles:
        source = plan.source(profile.source)
        r = _run(t, profile.every_us, profile.lag_us)
        target = hour_of_week(t, source.tz)
        values = [
            v
            for e in _known(events.get(source.table, ()), plan.key, entity, r)
            if r - profile.lookback_us <= e["event_ts"] < r
            and hour_of_week(int(e["event_ts"]), source.tz) == target
            for v in [_num(profile.value.evaluate(e))]
            if v is not None
        ]
        out[profile.name] = sum(values) / len(values) if values else None
    for hood in plan.neighbourhoods:
        r = _run(t, hood.every_us, hood.lag_us)
        table = plan.source(hood.locations).table
        where = _locations(plan, table, hood.lat, hood.lon, events, r)
        if entity not in where:
            out[hood.name] = None
            continue
        lat, lon = where[entity]
        others = sorted(
            (_haversine(lat, lon, *where[other]), other) for other in where if other != entity
        )[: hood.k]
        values = []
        for _, other in others:
            vector = _streaming(plan, events, other, r)
            _derive(plan, vector, upto=hood.feature)
            value = vector.get(hood.feature)
            if value is not None:
                values.append(float(value))
        out[hood.name] = sum(values) / len(values) if values else None


def _labels(
    plan: Plan, events: Mapping[str, Sequence[Event]], entity: str, t: int
) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for label in plan.labels:
        rows = [
            e
            for e in events.get(plan.source(label.source).table, ())
            if e[plan.key] == entity and t < e["event_ts"] <= t + label.horizon_us
        ]
        if label.op == "future_any":
            assert label.predicate is not None
            out[label.name] = any(label.predicate.evaluate(e) is True for e in rows)
        else:
            assert label.column is not None
            out[label.name] = _num(_newest(rows, label.column)[label.column]) if rows else None
    if plan.labels:
        out["label_available_at"] = t + max(label.horizon_us for label in plan.labels)
    return out


def reference_features(
    plan: Plan,
    events: Mapping[str, Sequence[Event]],
    points: Sequence[tuple[str, int]],
    *,
    labels: bool = False,
) -> list[dict[str, Value]]:
    """Every feature (and each group's ``__as_of``, and optionally the labels) at each point."""
    results = []
    for entity, t in points:
        out = _streaming(plan, events, entity, t)
        _derive(plan, out)
        _batch(plan, events, entity, t, out)
        for derived in plan.derived:  # derived features that needed batch features
            if derived.name not in out:
                out[derived.name] = _num(derived.expr.evaluate(out))
        if labels:
            out.update(_labels(plan, events, entity, t))
        results.append(out)
    return results
