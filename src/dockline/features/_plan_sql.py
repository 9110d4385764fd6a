"""The SQL both offline engines write alike for a compiled plan, with hooks for their dialects.

The DuckDB executor (``offline``, ``_offline_scope``) and the Spark executor (``spark``) render
the same :class:`~dockline.features.plan.Plan` over the same event columns (``k``, ``ets``,
``ing``, ``avail``: times as BIGINT µs). What they write the same way lives here: a source's
view and its bounded event selects, the collapse of duplicates and the "staircase" of the
general path, the bucketed range join of windowed aggregations, the join of a batch feature's
run in force, label columns, and the final select that gathers every part of a plan. A
:class:`Dialect` supplies what differs (quoting, floor division, expressions, time zones and
the calendar, bucket ranges, order-independent aggregates). Where the algorithms themselves
differ — the as-of lookup (DuckDB's ``ASOF JOIN`` with a fast and a general path, Spark's window
pass), ``delta``, the batch runs — each engine keeps its own SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dockline.core.errors import ConfigError
from dockline.core.time import from_micros
from dockline.features.expr import Expr
from dockline.features.plan import (
    GroupSpec,
    LabelSpec,
    NeighbourSpec,
    Plan,
    ProfileSpec,
    SourceSpec,
)

__all__ = [
    "NULL_DOUBLE",
    "SQL_AGG",
    "WINDOWED",
    "Dialect",
    "EventSource",
    "Joins",
    "PlanParts",
    "alive",
    "batch_dependent",
    "batch_join_sql",
    "buckets_sql",
    "check_columns",
    "check_sources",
    "dedup_sql",
    "double",
    "group_columns",
    "group_inputs",
    "label_column",
    "plan_query",
    "run_sql",
    "source_view_sql",
    "staircase_sql",
    "windowed_value",
    "windows_sql",
]

WINDOWED = frozenset({"mean", "min", "max", "sum", "count", "count_if", "stddev"})
SQL_AGG = {"mean": "avg", "min": "min", "max": "max", "sum": "sum", "stddev": "stddev_samp"}
NULL_DOUBLE = "CAST(NULL AS DOUBLE)"

Joins = list[tuple[str, str]]
"""(alias, table or view with ``pid``) pairs the final select left-joins on ``pid``."""


def double(sql: str) -> str:
    """``sql`` cast to DOUBLE."""
    return f"CAST({sql} AS DOUBLE)"


@dataclass(frozen=True)
class Dialect:
    """What one SQL engine writes differently."""

    quote: Callable[[str], str]
    """A quoted identifier."""
    fdiv: Callable[[str, int], str]
    """Floor division of a BIGINT expression by a positive constant."""
    expr: Callable[[Expr], str]
    """An expression of the plan."""
    how: Callable[[str, str], str]
    """Hour of week of ``t`` (BIGINT µs) in time zone ``tz``: ``how(tz, t)``."""
    calendar: Callable[[str, str, str], str]
    """Calendar feature ``name`` of ``t`` in ``tz``: ``calendar(name, tz, t)``."""
    string_type: str
    """The SQL name of the string type keys are cast to."""
    bucket_range: Callable[[str, str], str]
    """A set-returning expression of the integers ``lo..hi`` (both included)."""
    float_agg: Callable[[str, str, str], str]
    """``float_agg(fn, col, filter)``: aggregate ``fn`` (avg, sum, stddev_samp) of the ``col``
    rows passing ``filter`` (DuckDB sums in value order: the same bits run to run)."""


def check_sources(plan: Plan, sources: Mapping[str, object]) -> None:
    """Refuse sources that miss a table the plan reads."""
    missing = sorted({s.table for s in plan.sources} - set(sources))
    if missing:
        names = [s.name for s in plan.sources if s.table in missing]
        raise ConfigError(
            f"no data given for source table(s) {missing} (sources {names}); got {sorted(sources)}"
        )


def check_columns(spec: SourceSpec, types: Mapping[str, str]) -> None:
    """Refuse a source table without the key, event time or ingestion time column."""
    for column in (spec.key, spec.event_ts, spec.ingested_at):
        if column not in types:
            raise ConfigError(
                f"source {spec.name!r}: table {spec.table!r} has no column {column!r}"
                f" (it has {sorted(types)})"
            )


def source_view_sql(spec: SourceSpec, raw: str, ets: str, ing: str, d: Dialect) -> str:
    """A source's rows with ``_dl_k``/``_dl_ets``/``_dl_ing``/``_dl_avail`` (times in µs)."""
    return (
        f"SELECT *, CAST({d.quote(spec.key)} AS {d.string_type}) AS _dl_k,"
        f" {ets} AS _dl_ets, {ing} AS _dl_ing, greatest({ets}, {ing}) AS _dl_avail"
        f" FROM {raw}"
    )


class EventSource:
    """A source's view (see :func:`source_view_sql`) and the bounded selects of its events."""

    def __init__(self, spec: SourceSpec, view: str, hive_date: bool, dialect: Dialect) -> None:
        self.spec = spec
        self.view = view
        self.hive_date = hive_date  # the store partitions by the UTC date of event_ts: prune
        self.dialect = dialect

    def events(
        self,
        cols: Sequence[str] = (),
        *,
        keys: str | None = None,
        lo_ets: int | None = None,
        hi_avail: int | None = None,
        hi_ets: int | None = None,
        where: str | None = None,
    ) -> str:
        """``SELECT k, ets, ing, avail, cols…`` with the given bounds (inclusive); ``keys``: a
        table whose ``k`` column holds the only keys wanted."""
        conds: list[str] = []
        if keys is not None:
            conds.append(f"_dl_k IN (SELECT k FROM {keys})")
        date = self.dialect.quote("date")
        for bound, column, op in (
            (lo_ets, "_dl_ets", ">="),
            (hi_avail, "_dl_avail", "<="),
            (hi_ets, "_dl_ets", "<="),
        ):
            if bound is None:
                continue
            conds.append(f"{column} {op} {bound}")
            if self.hive_date:
                conds.append(f"{date} {op} DATE '{from_micros(bound).date().isoformat()}'")
        if where is not None:
            conds.append(f"({where})")
        extra = "".join(f", {c}" for c in cols)
        clause = f" WHERE {' AND '.join(conds)}" if conds else ""
        return (
            f"SELECT _dl_k AS k, _dl_ets AS ets, _dl_ing AS ing, _dl_avail AS avail{extra}"
            f" FROM {self.view}{clause}"
        )


# -- "the newest event known at t": the general path --------------------------------------------


def dedup_sql(rel: str, cols: Sequence[str], *, keys: str | None = None) -> str:
    """Events of query ``rel`` collapsed by ``(k, ets, ing)``: the greater value of each column
    wins, nulls lowest (rule 2); ``keys``: only the keys in that table."""
    maxes = "".join(f", max({c}) AS {c}" for c in cols)
    where = f" WHERE k IN (SELECT k FROM {keys})" if keys is not None else ""
    return (
        f"SELECT k, ets, ing, max(avail) AS avail{maxes} FROM ({rel}){where} GROUP BY k, ets, ing"
    )


def staircase_sql(dedup: str) -> str:
    """The events of ``dedup`` (a FROM item of collapsed events) that are the newest at some
    time: kept iff its avail is below that of every newer event. Their avail rises with
    ``(ets, ing)``, so an as-of lookup on avail is then exact."""
    return (
        f"SELECT * FROM (SELECT *, min(avail) OVER (PARTITION BY k ORDER BY ets DESC,"
        f" ing DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS lm FROM {dedup})"
        " WHERE lm IS NULL OR avail < lm"
    )


# -- feature groups ------------------------------------------------------------------------------


def group_inputs(group: GroupSpec, d: Dialect) -> tuple[dict[str, str], dict[str, str]]:
    """The group's value columns (source column → ``v<i>``) and count_if predicates
    (predicate SQL → ``q<i>``), each numbered in order of first use."""
    values: dict[str, str] = {}
    preds: dict[str, str] = {}
    for agg in group.aggs:
        if agg.column is not None and agg.column not in values:
            values[agg.column] = f"v{len(values)}"
        if agg.op == "count_if":
            assert agg.predicate is not None
            preds.setdefault(d.expr(agg.predicate), f"q{len(preds)}")
    return values, preds


def group_columns(
    values: Mapping[str, str], preds: Mapping[str, str], d: Dialect, *, as_double: bool = True
) -> list[str]:
    """The select items of a group's events: values (as DOUBLE unless not ``as_double``) and
    predicates (false when null)."""
    cols = [f"{double(d.quote(c)) if as_double else d.quote(c)} AS {a}" for c, a in values.items()]
    cols += [f"coalesce(CAST({s} AS BOOLEAN), false) AS {a}" for s, a in preds.items()]
    return cols


def alive(n: str, ttl_us: int, sql: str) -> str:
    """``sql`` while the group's newest event (joined as ``n``) is within its ttl, else null."""
    return f"(CASE WHEN ({n}.ets IS NOT NULL AND p.t - {n}.ets <= {ttl_us}) THEN {sql} END)"


def windowed_value(op: str, ref: str) -> str:
    """A windowed aggregation's value: counts of an empty window are 0, the others null."""
    return f"coalesce({ref}, 0)" if op in ("count", "count_if") else ref


def buckets_sql(points: str, width: int, reach: int, d: Dialect) -> str:
    """Each point once per bucket of ``width`` µs that ``(t - reach, t]`` touches."""
    lo, hi = d.fdiv(f"t - {reach}", width), d.fdiv("t", width)
    return f"SELECT pid, k, t, {d.bucket_range(lo, hi)} AS b FROM {points}"


def windows_sql(
    group: GroupSpec,
    values: Mapping[str, str],
    preds: Mapping[str, str],
    points: str,
    rel: str,
    d: Dialect,
) -> str:
    """(pid, f<j>…): the group's windowed aggregations, by a bucketed range join of the points
    and the events of FROM item ``rel`` (points × events of the same entity in the few buckets
    the window touches), filtered exactly on ``avail <= t`` and ``t - w < ets <= t``."""
    items = [(j, a) for j, a in enumerate(group.aggs) if a.op in WINDOWED]
    widest = max(int(a.window_us or 0) for _, a in items)
    width = max(1, widest // 4)
    select = []
    for j, agg in items:
        inside = f"e.ets > p.t - {agg.window_us}"
        if agg.op == "count":
            select.append(f"count(*) FILTER (WHERE {inside}) AS f{j}")
        elif agg.op == "count_if":
            assert agg.predicate is not None
            hit = f"e.{preds[d.expr(agg.predicate)]}"
            select.append(f"count(*) FILTER (WHERE {inside} AND {hit}) AS f{j}")
        else:
            assert agg.column is not None
            fn = SQL_AGG[agg.op]
            col = f"e.{values[agg.column]}"
            # NaN is not a value (nor is null: isnan(NULL) is null, which the filter drops)
            keep = f"FILTER (WHERE {inside} AND NOT isnan({col}))"
            if agg.op in ("min", "max"):
                select.append(f"{fn}({col}) {keep} AS f{j}")
            else:
                select.append(f"{d.float_agg(fn, col, keep)} AS f{j}")
    return (
        f"SELECT p.pid, {', '.join(select)} FROM ({buckets_sql(points, width, widest, d)}) p JOIN"
        f" (SELECT *, {d.fdiv('ets', width)} AS b FROM {rel}) e"
        f" ON p.k = e.k AND p.b = e.b"
        f" WHERE e.ets > p.t - {widest} AND e.ets <= p.t AND e.avail <= p.t GROUP BY p.pid"
    )


# -- batch features and labels ---------------------------------------------------------------


def run_sql(t: str, every_us: int, lag_us: int, d: Dialect) -> str:
    """The batch run in force at ``t``: the newest multiple of ``every`` at or before t - lag."""
    return f"{d.fdiv(f'{t} - {lag_us}', every_us)} * {every_us}"


def batch_join_sql(points: str, lookup: str, run: str, how: str | None = None) -> str:
    """(pid, v): each point's value in ``lookup`` (r, k[, h], v) at run ``run`` (and hour of
    week ``how``)."""
    hour = f" AND l.h = {how}" if how is not None else ""
    return f"SELECT p.pid, l.v FROM {points} p JOIN {lookup} l ON l.r = {run} AND l.k = p.k{hour}"


def label_column(alias: str, label: LabelSpec, d: Dialect) -> str:
    """A label's select item from its joined ``alias.v`` (future_any: false when no event)."""
    if label.op == "future_any":
        return f"coalesce({alias}.v, false) AS {d.quote(label.name)}"
    return f"{alias}.v AS {d.quote(label.name)}"


# -- the whole plan --------------------------------------------------------------------------


class PlanParts(Protocol):
    """An engine's SQL for the parts of a plan at a set of points ``pts`` (pid, k, t).

    Each method adds its tables or views to ``joins`` and returns (or puts in ``exprs``) the
    SQL of its columns in terms of the joined aliases and ``p`` (the points).
    """

    pts: str
    base: str | None
    """A query of every point (pid, k, t, …) to start the final select from, or None: ``pts``."""

    def group(self, gi: int, group: GroupSpec, joins: Joins, exprs: dict[str, str]) -> str: ...

    def static(self, joins: Joins, exprs: dict[str, str]) -> None: ...

    def profile(self, profile: ProfileSpec, joins: Joins) -> str: ...

    def hood(self, hood: NeighbourSpec, joins: Joins) -> str: ...

    def labels(self, joins: Joins) -> list[str]: ...


def batch_dependent(plan: Plan) -> set[str]:
    """Derived features that need a batch feature (directly or through other derived ones)."""
    blocked = {p.name for p in plan.profiles} | {n.name for n in plan.neighbourhoods}
    out: set[str] = set()
    for item in plan.derived:
        if item.expr.columns() & (blocked | out):
            out.add(item.name)
    return out


def plan_query(parts: PlanParts, plan: Plan, d: Dialect, *, labels: bool, batch: bool) -> str:
    """The select of every feature (and label) of ``plan`` at the points, one row per ``pid``.

    The parts are rendered in a fixed order (groups, static, calendar, profiles,
    neighbourhoods, labels). Without ``batch``, batch features and the derived features that
    need them are null (a neighbourhood's inner computation).
    """
    joins: Joins = []
    exprs: dict[str, str] = {}
    as_ofs = [parts.group(gi, group, joins, exprs) for gi, group in enumerate(plan.groups)]
    if plan.static is not None:
        parts.static(joins, exprs)
    if plan.calendar is not None:
        for name in plan.calendar.features:
            exprs[name] = d.calendar(name, plan.calendar.tz, "p.t")
    for profile in plan.profiles:
        exprs[profile.name] = parts.profile(profile, joins) if batch else NULL_DOUBLE
    for hood in plan.neighbourhoods:
        exprs[hood.name] = parts.hood(hood, joins) if batch else NULL_DOUBLE
    label_cols = parts.labels(joins) if labels and plan.labels else []
    select = ["p.pid"]
    if label_cols:
        horizon = max(label.horizon_us for label in plan.labels)
        select.append(f"p.t + {horizon} AS label_available_at")
        select += label_cols
    for group, as_of in zip(plan.groups, as_ofs, strict=True):
        select.append(f"{as_of} AS {d.quote(group.as_of_column)}")
    derived_names = {item.name for item in plan.derived}
    for name in plan.feature_names:
        if name not in derived_names:
            select.append(f"{double(exprs[name])} AS {d.quote(name)}")
    base = f"({parts.base})" if parts.base else parts.pts
    sql = f"SELECT {', '.join(select)} FROM {base} p" + "".join(
        f" LEFT JOIN {table} {alias} ON {alias}.pid = p.pid" for alias, table in joins
    )
    blocked = batch_dependent(plan) if not batch else set()
    for item in plan.derived:
        value = NULL_DOUBLE if item.name in blocked else double(d.expr(item.expr))
        sql = f"SELECT *, {value} AS {d.quote(item.name)} FROM ({sql})"
    return sql
