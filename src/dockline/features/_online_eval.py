"""Evaluating one entity's kept events at ``t``: the read side of the online executor.

The rules are those of ``docs/features.md``, the ones the offline SQL implements: the newest event
known at ``t`` (rule 1), ties on (event_ts, ingested_at) broken by value (rule 2), a group silent
for longer than its TTL is null (rule 3), windows over the events known at ``t`` and their
statistics over non-null values, ``delta`` and ``time_since``; plus static attributes and the
local-time helpers the calendar and hour-of-week profiles use.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dockline.core.errors import ConfigError
from dockline.core.time import EPOCH
from dockline.features._online_layout import Agg, CompiledGroup
from dockline.features._online_state import AVAIL, ING, TS, EntityEvents, Event
from dockline.features.expr import Value

__all__ = ["group_into", "hour_of_week", "hour_of_week_in", "local_time", "num", "static_into"]


def _ts(event: Event) -> int:
    return int(event[TS])


def num(value: Any) -> float | None:
    """A feature value as DOUBLE: ``None`` for null/NaN, booleans as 1.0/0.0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _sortable(value: Any) -> tuple[int, Any]:
    # rule 2's value tie-break: greater wins, null below everything
    return (0, 0) if value is None else (1, value)


def _best(ties: Sequence[Event], index: int) -> Any:
    """Column ``index`` of the newest among events tied on (event_ts, ingested_at)."""
    if len(ties) == 1:
        return ties[0][index]
    return max((e[index] for e in ties), key=_sortable)


def local_time(t_us: int, tz: ZoneInfo) -> datetime:
    """``t_us`` (µs since the epoch) as an aware datetime in ``tz``."""
    return (EPOCH + timedelta(microseconds=t_us)).astimezone(tz)


def hour_of_week(t_us: int, tz: str) -> int:
    """Hour of the week of ``t_us`` in ``tz``: 0 = Monday 00:00–00:59 … 167."""
    local = local_time(t_us, ZoneInfo(tz))
    return local.weekday() * 24 + local.hour


def hour_of_week_in(t_us: int, tz: ZoneInfo) -> int:
    """:func:`hour_of_week` with a resolved zone (no lookup per call)."""
    local = local_time(t_us, tz)
    return local.weekday() * 24 + local.hour


def group_into(
    group: CompiledGroup, buffer: EntityEvents | None, t: int, out: dict[str, Value]
) -> None:
    """Set ``group``'s ``__as_of`` and features at ``t`` in ``out`` from ``buffer`` (or null)."""
    out[group.spec.as_of_column] = None
    for agg in group.aggs:
        out[agg.name] = None
    if buffer is None:
        return
    events = buffer.events
    hi = bisect_right(events, t, key=_ts)
    newest = _newest_known(events, hi, t)
    if newest < 0 or t - events[newest][TS] > group.spec.ttl_us:
        return  # rule 3: nothing known, or silent for longer than the TTL
    ties = _ties(events, newest)
    out[group.spec.as_of_column] = events[newest][TS]
    windows: dict[int, list[Event]] = {}
    columns: dict[tuple[int, int], list[float]] = {}  # (window, column) → non-null values
    for agg in group.aggs:
        op = agg.op
        if op == "last":
            out[agg.name] = num(_best(ties, agg.column))
        elif op == "time_since":
            out[agg.name] = _time_since(events, hi, t, agg, buffer)
        elif op == "delta":
            out[agg.name] = _delta(events, t, agg, num(_best(ties, agg.column)))
        else:
            window = windows.get(agg.window_us)
            if window is None:
                lo = bisect_right(events, t - agg.window_us, key=_ts)
                window = windows[agg.window_us] = [e for e in events[lo:hi] if e[AVAIL] <= t]
            if op == "count":
                out[agg.name] = float(len(window))
            elif op == "count_if":
                flag = agg.flag
                out[agg.name] = float(sum(1 for e in window if e[flag]))
            else:
                values = columns.get((agg.window_us, agg.column))
                if values is None:
                    values = columns[(agg.window_us, agg.column)] = _non_null(window, agg.column)
                out[agg.name] = _statistic(op, values)


def static_into(
    columns: tuple[tuple[str, int], ...],
    buffer: EntityEvents | None,
    t: int,
    out: dict[str, Value],
) -> None:
    """Set the static attributes ``(name, tuple index)`` as known at ``t`` in ``out``."""
    newest = -1
    if buffer is not None:
        newest = _newest_known(buffer.events, bisect_right(buffer.events, t, key=_ts), t)
    if buffer is None or newest < 0:
        for name, _ in columns:
            out[name] = None
        return
    ties = _ties(buffer.events, newest)
    for name, index in columns:
        out[name] = num(_best(ties, index))


def _newest_known(events: Sequence[Event], hi: int, t: int) -> int:
    """Index of the newest event in ``events[:hi]`` known at ``t`` (rule 1), or -1."""
    i = hi - 1
    while i >= 0 and events[i][AVAIL] > t:
        i -= 1
    return i


def _ties(events: Sequence[Event], i: int) -> Sequence[Event]:
    """``events[i]`` and the events before it with the same (event_ts, ingested_at)."""
    ts, ing = events[i][TS], events[i][ING]
    lo = i
    while lo > 0 and events[lo - 1][TS] == ts and events[lo - 1][ING] == ing:
        lo -= 1
    return events[lo : i + 1]


def _time_since(
    events: Sequence[Event], hi: int, t: int, agg: Agg, buffer: EntityEvents
) -> float | None:
    flag = agg.flag
    for i in range(hi - 1, -1, -1):
        event = events[i]
        if event[flag] and event[AVAIL] <= t:
            return float(t - event[TS]) / agg.unit_us
    survivor = buffer.survivors[agg.survivor]
    if survivor is not None and max(survivor) <= t:
        return (t - survivor[0]) / agg.unit_us
    return None


def _delta(events: Sequence[Event], t: int, agg: Agg, now: float | None) -> float | None:
    then_index = _newest_known(events, bisect_right(events, t - agg.window_us, key=_ts), t)
    if then_index < 0:
        return None
    then = num(_best(_ties(events, then_index), agg.column))
    return None if now is None or then is None else now - then


def _non_null(window: Sequence[Event], column: int) -> list[float]:
    """The column's values as DOUBLE, nulls and NaN left out (``v == v`` is false for NaN)."""
    return [float(v) for e in window if (v := e[column]) is not None and v == v]


def _statistic(op: str, values: list[float]) -> float | None:
    if op == "stddev":
        if len(values) < 2:
            return None
        mu = sum(values) / len(values)
        return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))
    if not values:
        return None
    if op == "mean":
        return sum(values) / len(values)
    if op == "min":
        return min(values)
    if op == "max":
        return max(values)
    if op == "sum":
        return sum(values)
    raise ConfigError(f"unknown aggregation {op!r}")  # pragma: no cover - the plan validates ops
