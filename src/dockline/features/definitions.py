"""The definitions API: what a user's project declares (entities, sources, features, labels).

Definitions are plain frozen values; nothing runs when they are created. :func:`compile_project`
(in :mod:`dockline.features.plan`) validates them and turns them into the one plan both
executors read. Example (the bike-share project in ``examples/bikeshare/`` has the full set)::

    station = Entity("station", key="station_id")
    status = Source("station_status", entity=station, tz="America/Chicago")
    availability = FeatureGroup(
        "availability",
        source=status,
        ttl="2h",
        features=[
            last("num_bikes_available"),
            mean("num_bikes_available", "15m"),
            delta("num_bikes_available", "60m"),
            count_if(col("num_bikes_available") == 0, "60m", name="empty_events_60m"),
            time_since(col("num_bikes_available") == 0, name="minutes_since_empty"),
        ],
    )
    empty_next_hour = future_any(
        (col("num_bikes_available") == 0) & col("is_renting"), "60m",
        name="empty_next_hour", source=status,
    )
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from dockline.core.time import parse_duration
from dockline.features.expr import Expr, col

__all__ = [
    "AggOp",
    "Aggregation",
    "Calendar",
    "Derived",
    "Entity",
    "FeatureGroup",
    "HourOfWeekProfile",
    "Label",
    "Neighbourhood",
    "Project",
    "Source",
    "Static",
    "count",
    "count_if",
    "delta",
    "future_any",
    "future_value",
    "last",
    "max_",
    "mean",
    "min_",
    "stddev",
    "sum_",
    "time_since",
]

Duration = str | timedelta
AggOp = Literal[
    "last", "mean", "min", "max", "sum", "count", "count_if", "stddev", "delta", "time_since"
]


def duration(value: Duration) -> timedelta:
    """A duration from ``"15m"``-style text or a ``timedelta``."""
    return value if isinstance(value, timedelta) else parse_duration(value)


def window_suffix(window: timedelta) -> str:
    """``15m``, ``60m``, ``90s``, ``28d``: the window as it appears in feature names."""
    seconds = int(window.total_seconds())
    if seconds % 86_400 == 0 and seconds >= 86_400:
        return f"{seconds // 86_400}d"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class Entity:
    """What features describe (a station); ``key`` is its id column in every source."""

    name: str
    key: str


@dataclass(frozen=True)
class Source:
    """An event source in the offline store and the log (``table`` defaults to ``name``).

    ``tz`` is the system's time zone, for calendar and hour-of-week features; ``columns``
    (optional) lets definitions be checked against the source's schema at load.
    """

    name: str
    entity: Entity
    event_ts: str = "event_ts"
    ingested_at: str = "ingested_at"
    tz: str = "UTC"
    allowed_lateness: Duration = "10m"
    table: str | None = None
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Aggregation:
    """One feature of a group: ``op`` over ``column`` (or ``predicate``) in a sliding ``window``."""

    op: AggOp
    column: str | None = None
    window: Duration | None = None
    predicate: Expr | None = None
    name: str | None = None
    unit: Literal["seconds", "minutes", "hours"] = "minutes"


def last(column: str, *, name: str | None = None) -> Aggregation:
    """The newest value as known at t (within the group's TTL): ``<column>__last``."""
    return Aggregation("last", column=column, name=name)


def mean(column: str, window: Duration, *, name: str | None = None) -> Aggregation:
    """Mean over the events in ``(t - window, t]``: ``<column>__mean_<window>``."""
    return Aggregation("mean", column=column, window=window, name=name)


def min_(column: str, window: Duration, *, name: str | None = None) -> Aggregation:
    """Minimum over the window: ``<column>__min_<window>``."""
    return Aggregation("min", column=column, window=window, name=name)


def max_(column: str, window: Duration, *, name: str | None = None) -> Aggregation:
    """Maximum over the window: ``<column>__max_<window>``."""
    return Aggregation("max", column=column, window=window, name=name)


def sum_(column: str, window: Duration, *, name: str | None = None) -> Aggregation:
    """Sum over the window: ``<column>__sum_<window>``."""
    return Aggregation("sum", column=column, window=window, name=name)


def stddev(column: str, window: Duration, *, name: str | None = None) -> Aggregation:
    """Sample standard deviation over the window (null below two events)."""
    return Aggregation("stddev", column=column, window=window, name=name)


def count(window: Duration, *, name: str | None = None) -> Aggregation:
    """Number of events in the window: ``events__count_<window>``."""
    return Aggregation("count", window=window, name=name)


def count_if(predicate: Expr, window: Duration, *, name: str) -> Aggregation:
    """Number of events in the window for which ``predicate`` is true."""
    return Aggregation("count_if", window=window, predicate=predicate, name=name)


def delta(column: str, window: Duration, *, name: str | None = None) -> Aggregation:
    """Now minus the value ``window`` ago (both as known at t): ``<column>__delta_<window>``."""
    return Aggregation("delta", column=column, window=window, name=name)


def time_since(
    predicate: Expr, *, name: str, unit: Literal["seconds", "minutes", "hours"] = "minutes"
) -> Aggregation:
    """Time since the newest event for which ``predicate`` is true (null if none is known)."""
    return Aggregation("time_since", predicate=predicate, name=name, unit=unit)


@dataclass(frozen=True)
class FeatureGroup:
    """Aggregations over one source, keyed by its entity; null beyond ``ttl`` of silence."""

    name: str
    source: Source
    features: Sequence[Aggregation]
    ttl: Duration = "1h"


@dataclass(frozen=True)
class Derived:
    """A row-level feature computed from other features (e.g. a fill ratio)."""

    name: str
    expr: Expr


@dataclass(frozen=True)
class Calendar:
    """Calendar features of t in ``tz``: ``hour_of_day``, ``day_of_week`` (0 = Monday) …"""

    tz: str
    features: tuple[Literal["hour_of_day", "day_of_week", "is_weekend", "minute_of_day"], ...] = (
        "hour_of_day",
        "day_of_week",
        "is_weekend",
    )


@dataclass(frozen=True)
class Static:
    """Attributes of the entity from an information source, as known at t: ``<column>__static``."""

    source: Source
    columns: tuple[str, ...]


@dataclass(frozen=True)
class HourOfWeekProfile:
    """Batch feature: the mean of ``value`` at t's hour-of-week over the previous ``lookback``.

    Computed every ``every`` (runs at multiples of ``every`` since the epoch) from the events
    known at the run; a run's result becomes available ``lag`` after it. At t the feature uses
    the newest run r with ``r + lag <= t``.
    """

    name: str
    source: Source
    value: Expr
    lookback: Duration = "28d"
    every: Duration = "1d"
    lag: Duration = "1h"


@dataclass(frozen=True)
class Neighbourhood:
    """Batch feature: mean of ``feature`` over the ``k`` nearest entities (by lat/lon).

    Computed every ``every`` from the feature values as known at the run r; available at
    ``r + lag``. Neighbours are the entities whose location (from ``locations``) is known at r.
    """

    name: str
    feature: str
    k: int
    locations: Source
    lat: str = "lat"
    lon: str = "lon"
    every: Duration = "5m"
    lag: Duration = "0s"


@dataclass(frozen=True)
class Label:
    """What a model predicts at t, looking forward over ``horizon``; known at ``t + horizon``."""

    name: str
    op: Literal["future_any", "future_value"]
    source: Source
    horizon: Duration
    predicate: Expr | None = None
    column: str | None = None


def future_any(predicate: Expr, horizon: Duration, *, name: str, source: Source) -> Label:
    """True if any event in ``(t, t + horizon]`` satisfies ``predicate`` (false if none does)."""
    return Label(name, "future_any", source, horizon, predicate=predicate)


def future_value(column: str, horizon: Duration, *, name: str, source: Source) -> Label:
    """The value of the newest event in ``(t, t + horizon]`` (null if there is none)."""
    return Label(name, "future_value", source, horizon, column=column)


@dataclass(frozen=True)
class Project:
    """Everything a project declares; pass it to :func:`~dockline.features.plan.compile_project`."""

    name: str
    entity: Entity
    groups: Sequence[FeatureGroup]
    labels: Sequence[Label] = ()
    derived: Sequence[Derived] = ()
    calendar: Calendar | None = None
    static: Static | None = None
    profiles: Sequence[HourOfWeekProfile] = ()
    neighbourhoods: Sequence[Neighbourhood] = ()
    extra: dict[str, str] = field(default_factory=dict)


_ = col  # re-exported for convenience in user projects via dockline.features
