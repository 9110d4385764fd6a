"""How the online executor stores and reads a plan: per-source event layouts, compiled groups.

Each source the executor consumes gets a :class:`Layout`: which value columns its event tuples
keep (after ``event_ts, ingested_at, avail``; :mod:`dockline.features._online_state`), which
predicate results follow them, and what its buffers must retain. Each feature group is compiled
against its source's layout into tuple indexes (:class:`CompiledGroup`), so reading is indexing.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from dockline.features._online_state import FIRST_COLUMN, Retention
from dockline.features.expr import Expr
from dockline.features.plan import GroupSpec, Plan, SourceSpec

__all__ = ["Agg", "CompiledGroup", "Layout", "compile_group", "expr_key", "source_layouts"]


def expr_key(expr: Expr) -> bytes:
    # Expr overloads == to build expressions, so it cannot be a dict key itself
    return msgspec.json.encode(expr)


@dataclass(frozen=True, slots=True)
class Layout:
    """How one source's events are stored: value columns, then predicate results."""

    source: SourceSpec
    columns: tuple[str, ...]
    predicates: tuple[Expr, ...]
    retention: Retention

    def column(self, name: str) -> int:
        return FIRST_COLUMN + self.columns.index(name)

    def flag(self, predicate: Expr) -> int:
        keys = [expr_key(p) for p in self.predicates]
        return FIRST_COLUMN + len(self.columns) + keys.index(expr_key(predicate))

    @property
    def reads(self) -> tuple[str, ...]:
        """Every source column the layout reads (stored or used by a predicate)."""
        names = dict.fromkeys(self.columns)
        for predicate in self.predicates:
            names.update(dict.fromkeys(sorted(predicate.columns())))
        return tuple(names)


@dataclass(frozen=True, slots=True)
class Agg:
    name: str
    op: str
    column: int  # tuple index of the aggregated column (-1 if none)
    window_us: int
    flag: int  # tuple index of the predicate result (-1 if none)
    unit_us: int
    survivor: int  # slot of the time_since survivor (-1 if none)


@dataclass(frozen=True, slots=True)
class CompiledGroup:
    spec: GroupSpec
    source: str
    aggs: tuple[Agg, ...]


def source_layouts(plan: Plan) -> dict[str, Layout]:
    """One layout per source the executor consumes (feature groups and static attributes)."""
    columns: dict[str, dict[str, None]] = {}
    predicates: dict[str, dict[bytes, Expr]] = {}
    survivors: dict[str, dict[bytes, None]] = {}
    horizon: dict[str, int] = {}
    anchor: dict[str, int] = {}
    for group in plan.groups:
        name = group.source
        columns.setdefault(name, {})
        predicates.setdefault(name, {})
        survivors.setdefault(name, {})
        horizon[name] = max(horizon.get(name, 0), group.horizon_us)
        for agg in group.aggs:
            if agg.column is not None:
                columns[name][agg.column] = None
            if agg.predicate is not None:
                predicates[name][expr_key(agg.predicate)] = agg.predicate
                if agg.op == "time_since":
                    survivors[name][expr_key(agg.predicate)] = None
            if agg.op == "delta" and agg.window_us is not None:
                anchor[name] = max(anchor.get(name, 0), agg.window_us)
    if plan.static is not None:
        name = plan.static.source
        columns.setdefault(name, {}).update(dict.fromkeys(plan.static.columns))
        predicates.setdefault(name, {})
        survivors.setdefault(name, {})
        horizon.setdefault(name, 0)
        anchor[name] = max(anchor.get(name, 0), 0)  # static needs the newest event, however old
    out: dict[str, Layout] = {}
    for name in sorted(columns):
        cols = tuple(columns[name])
        preds = tuple(predicates[name].values())
        keys = list(predicates[name])
        flags = tuple(FIRST_COLUMN + len(cols) + keys.index(k) for k in survivors[name])
        out[name] = Layout(
            source=plan.source(name),
            columns=cols,
            predicates=preds,
            retention=Retention(horizon[name], anchor.get(name), flags),
        )
    return out


def compile_group(group: GroupSpec, layout: Layout) -> CompiledGroup:
    slots = list(layout.retention.survivor_flags)
    aggs = []
    for agg in group.aggs:
        flag = layout.flag(agg.predicate) if agg.predicate is not None else -1
        aggs.append(
            Agg(
                name=agg.name,
                op=agg.op,
                column=layout.column(agg.column) if agg.column is not None else -1,
                window_us=agg.window_us or 0,
                flag=flag,
                unit_us=agg.unit_us,
                survivor=slots.index(flag) if agg.op == "time_since" else -1,
            )
        )
    return CompiledGroup(spec=group, source=group.source, aggs=tuple(aggs))
