"""Spines in, features tables out: the table shapes both offline engines share.

A spine is keys × ``as_of`` times. An engine computes on its distinct points (sorted by time and
key, with dense ``pid``s) and returns exactly the columns of :func:`output_schema`, finished by
:func:`finish_table`, so the DuckDB and Spark executors give the same table for the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.contracts import TS_TYPE
from dockline.core.errors import ConfigError, ValidationError
from dockline.core.time import ensure_utc, to_micros
from dockline.features.plan import Plan

__all__ = [
    "distinct_points",
    "finish_table",
    "grid_spine",
    "in_points_order",
    "output_schema",
    "spine_columns",
]


def spine_columns(plan: Plan, spine: pa.Table) -> tuple[pa.Array, pa.Array]:
    """A spine's keys (strings) and times (int64 µs), checked."""
    key = plan.key
    for column in (key, "as_of"):
        if column not in spine.column_names:
            raise ValidationError(
                f"the spine needs columns {key!r} and 'as_of'; got {spine.column_names}",
                reason="missing_field",
            )
    as_of = spine.column("as_of")
    if not pa.types.is_timestamp(as_of.type) or as_of.type.tz is None:
        raise ValidationError(
            f"spine 'as_of' must be a tz-aware timestamp; got {as_of.type}",
            reason="bad_type",
        )
    keys = pc.cast(spine.column(key), pa.string()).combine_chunks()
    times = pc.cast(pc.cast(as_of, TS_TYPE), pa.int64()).combine_chunks()
    if keys.null_count or times.null_count:
        raise ValidationError("the spine has null keys or times", reason="missing_field")
    return keys, times


def output_schema(plan: Plan, labels: bool) -> pa.Schema:
    """The columns of a features table (both offline engines produce exactly these)."""
    fields = [pa.field(plan.key, pa.string()), pa.field("as_of", TS_TYPE)]
    if labels and plan.labels:
        fields.append(pa.field("label_available_at", TS_TYPE))
        for label in plan.labels:
            kind = pa.bool_() if label.op == "future_any" else pa.float64()
            fields.append(pa.field(label.name, kind))
    fields += [pa.field(g.as_of_column, TS_TYPE) for g in plan.groups]
    fields += [pa.field(n, pa.float64()) for n in plan.feature_names]
    return pa.schema(fields)


def finish_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns in ``schema``'s order and types (times from BIGINT µs)."""
    columns = []
    for field in schema:
        column = table.column(field.name)
        if field.type == TS_TYPE:
            column = pc.cast(column, pa.int64()).cast(TS_TYPE)
        else:
            column = column.cast(field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def distinct_points(keys: pa.Array, times: pa.Array) -> tuple[pa.Table, np.ndarray]:
    """The distinct spine points sorted by (t, key) with dense ``pid``s, and each one's count.

    Keys sort by their bytes (as DuckDB orders VARCHAR); ranking the few distinct keys once
    leaves an integer sort of the points.
    """
    encoded = pc.dictionary_encode(keys)
    distinct = encoded.dictionary
    rank_of = np.empty(len(distinct), dtype=np.int64)
    rank_of[np.asarray(pc.sort_indices(distinct))] = np.arange(len(distinct))
    rank = rank_of[np.asarray(encoded.indices)]
    t = np.asarray(times, dtype=np.int64)
    span = int(t.max()) - int(t.min()) + 1
    if span * max(1, len(distinct)) < 1 << 62:  # one int64 key: far faster than lexsort
        order = np.argsort((t - t.min()) * len(distinct) + rank)
    else:
        order = np.lexsort((rank, t))
    t_sorted, rank_sorted = t[order], rank[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (t_sorted[1:] != t_sorted[:-1]) | (rank_sorted[1:] != rank_sorted[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(order)))
    points = pa.table(
        {
            "pid": pa.array(np.arange(len(starts), dtype=np.int64)),
            "k": keys.take(pa.array(order[starts])),
            "t": pa.array(t_sorted[starts]),
        }
    )
    return points, counts


def in_points_order(table: pa.Table, points: pa.Table, key: str) -> pa.Table:
    """``table`` (pid, columns…) in the order of ``points`` (pid, k, t; consecutive pids), with
    the points' key and time as its first columns (``key``, ``as_of``)."""
    order = np.empty(points.num_rows, dtype=np.int64)
    first = int(points.column("pid")[0].as_py())
    order[table.column("pid").to_numpy() - first] = np.arange(points.num_rows)
    table = table.take(pa.array(order))
    table = table.add_column(0, key, points.column("k"))
    return table.add_column(1, "as_of", points.column("t"))


def grid_spine(
    entities: Sequence[str],
    start: datetime,
    end: datetime,
    every: timedelta,
    *,
    key: str = "station_id",
) -> pa.Table:
    """Every entity × every ``t = start + i·every`` in ``[start, end)``, sorted by (as_of, key)."""
    step = int(every / timedelta(microseconds=1))
    if step <= 0:
        raise ConfigError(f"every must be > 0; got {every}")
    lo, hi = to_micros(ensure_utc(start)), to_micros(ensure_utc(end))
    times = np.arange(lo, hi, step, dtype=np.int64)
    names = sorted(set(entities))
    n = len(names)
    return pa.table(
        {
            key: pa.array(np.tile(np.array(names, dtype=object), len(times)), pa.string())
            if n
            else pa.array([], pa.string()),
            "as_of": pa.array(np.repeat(times, n), pa.int64()).cast(TS_TYPE),
        }
    )
