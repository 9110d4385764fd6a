"""Reading a source table's Arrow events into the online executor's event tuples.

A table is converted once (validated, times as int µs, predicates evaluated per distinct input)
so the replay can feed it in row slices; see :meth:`OnlineExecutor.prepare
<dockline.features.online.OnlineExecutor.prepare>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.errors import ValidationError
from dockline.features._online_layout import Layout
from dockline.features._online_state import Event
from dockline.features.expr import Expr

__all__ = ["event_rows", "required_micros", "source_column"]


def source_column(events: pa.Table, name: str, table: str) -> pa.ChunkedArray:
    if name not in events.column_names:
        raise ValidationError(
            f"events of {table!r} must have column {name!r}; got {events.column_names}",
            reason="missing_field",
            where=table,
        )
    return events.column(name)


def _micros(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_timestamp(kind):
        if kind.unit != "us":
            column = pc.cast(column, pa.timestamp("us", tz=kind.tz), safe=False)
        return column.cast(pa.int64())
    if pa.types.is_integer(kind):
        return column.cast(pa.int64())
    raise ValidationError(f"time column must be a timestamp; got {kind}", reason="bad_type")


def required_micros(events: pa.Table, name: str, table: str) -> pa.ChunkedArray:
    column = _micros(source_column(events, name, table))
    if column.null_count:
        raise ValidationError(
            f"column {name!r} must not contain nulls; got {column.null_count}",
            reason="missing_field",
            where=table,
        )
    return column


def _values(column: pa.ChunkedArray) -> list[Any]:
    if pa.types.is_timestamp(column.type):
        return _micros(column).to_pylist()  # type: ignore[no-any-return]
    return column.to_pylist()  # type: ignore[no-any-return]


def _flags(predicate: Expr, data: Mapping[str, list[Any]], rows: int) -> list[bool]:
    """``predicate is true`` per row, evaluated once per distinct input (a batch is one type)."""
    names = sorted(predicate.columns())
    if not names:
        return [predicate.evaluate({}) is True] * rows
    cache: dict[tuple[Any, ...], bool] = {}
    out: list[bool] = []
    append = out.append
    for key in zip(*(data[n] for n in names), strict=True):
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = predicate.evaluate(dict(zip(names, key, strict=True))) is True
        append(hit)
    return out


def event_rows(layout: Layout, table: str, events: pa.Table) -> tuple[list[str], list[Event]]:
    """``events`` of ``table`` as (entity keys, event tuples of ``layout``), row-aligned."""
    spec = layout.source
    key_column = source_column(events, spec.key, table)
    if key_column.null_count:
        raise ValidationError(
            f"key column {spec.key!r} must not contain nulls; got {key_column.null_count}",
            reason="missing_field",
            where=table,
        )
    keys: list[str] = key_column.cast(pa.string()).to_pylist()
    ts_arrow = required_micros(events, spec.event_ts, table)
    ing_arrow = required_micros(events, spec.ingested_at, table)
    ts = ts_arrow.to_pylist()
    ing = ing_arrow.to_pylist()
    avail = pc.max_element_wise(ts_arrow, ing_arrow).to_pylist()
    data = {name: _values(source_column(events, name, table)) for name in layout.reads}
    stored = [data[name] for name in layout.columns]
    flags = [_flags(p, data, events.num_rows) for p in layout.predicates]
    return keys, list(zip(ts, ing, avail, *stored, *flags, strict=True))
