"""The storage-order scan: which entities of a source need the general path of "newest known at t".

The fast path of "newest known at t" needs, per entity, that ordering its events by
(event_ts, ingested_at) makes avail strictly increasing (equivalently: ordered by avail, event
time never goes back and no two events share an avail). Checking that in SQL costs a second
sort of every event. The offline store writes each file sorted by (key, event_ts,
ingested_at), so one pass in storage order decides it: within a run of rows of one entity,
each row must be strictly after the previous one in (event_ts, ingested_at) and in avail; runs
of the same entity (other files, row groups, or scattered rows) must follow one another in
both. Whatever breaks this — a real inversion or merely rows not stored in order — sends the
entity to the exact general path, so the scan can only cost speed, never change a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["Order", "file_batches", "row_groups", "scan_order", "table_batches"]

_ORDER_BATCH = 1 << 20


class Order:
    """What the storage-order scan found: the entities needing the general path."""

    def __init__(self, bad: pa.Array, n_keys: int) -> None:
        self.bad = bad  # distinct keys (strings) of disordered entities
        self.n_keys = n_keys  # distinct keys of the source
        self.table: str | None = None  # DuckDB name of ``bad`` (set when not empty)


_Cols = tuple[str, str, str]
_Runs = tuple[pa.Array, list[np.ndarray], pa.Array]


def _micros(column: pa.Array) -> np.ndarray | None:
    """A time column as int64 µs exactly as the SQL view reads it; None if not sure."""
    kind = column.type
    if column.null_count:
        return None
    try:
        if pa.types.is_timestamp(kind) and kind.unit != "ns":
            return np.asarray(column.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64()))
        if pa.types.is_integer(kind):
            return np.asarray(column.cast(pa.int64()))
    except pa.ArrowInvalid:
        return None
    return None


def _is_key_type(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_integer(kind)
    )


def _scan_batch(key: pa.Array, ets_col: pa.Array, ing_col: pa.Array) -> _Runs | None:
    """Runs of one batch in storage order: (run keys, [first/last ets, ing, avail], bad keys)."""
    if key.null_count:
        return None
    if not pa.types.is_dictionary(key.type):
        if not _is_key_type(key.type):
            return None
        key = pc.dictionary_encode(key)
    values = key.dictionary
    if values.null_count or not _is_key_type(values.type):
        return None
    values = values.cast(pa.string())
    codes = np.asarray(key.indices)
    ets, ing = _micros(ets_col), _micros(ing_col)
    if ets is None or ing is None:
        return None
    avail = np.maximum(ets, ing)
    same = codes[1:] == codes[:-1]
    # with event time not going back, a strictly greater avail also means a strictly greater
    # (event_ts, ingested_at): same event time and avail > event time force a later ingestion
    broken = same & ~((ets[1:] >= ets[:-1]) & (avail[1:] > avail[:-1]))
    bad = values.take(pa.array(np.unique(codes[1:][broken])))
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.append(starts[1:], len(codes)) - 1
    bounds = [ets[starts], ing[starts], avail[starts], ets[ends], ing[ends], avail[ends]]
    return values.take(pa.array(codes[starts])), bounds, bad


def table_batches(table: pa.Table, cols: _Cols) -> Iterable[Sequence[pa.Array]]:
    if any(c not in table.column_names for c in cols):
        yield []
        return
    for batch in table.select(list(cols)).to_batches(max_chunksize=_ORDER_BATCH):
        yield batch.columns


def row_groups(path: str) -> list[tuple[str, int]]:
    """One scan unit per row group of a Parquet file."""
    return [(path, group) for group in range(pq.read_metadata(path).num_row_groups)]


def file_batches(unit: tuple[str, int], cols: _Cols) -> Iterable[Sequence[pa.Array]]:
    path, group = unit
    schema = pq.read_schema(path)
    if any(c not in schema.names for c in cols):
        yield []
        return
    # read keys as dictionary codes: comparing neighbours is then an integer comparison
    key_type = schema.field(cols[0]).type
    dictionary = [cols[0]] if pa.types.is_string(key_type) else None
    reader = pq.ParquetFile(path, read_dictionary=dictionary)
    part = reader.read_row_group(group, columns=list(cols)).combine_chunks()
    for batch in part.to_batches(max_chunksize=_ORDER_BATCH):
        yield batch.columns


def _scan_unit(
    unit: tuple[Any, _Cols], batches: Callable[[Any, _Cols], Iterable[Sequence[pa.Array]]]
) -> list[_Runs] | None:
    out = []
    for columns in batches(*unit):
        runs = _scan_batch(*columns) if len(columns) == 3 else None
        if runs is None:
            return None
        out.append(runs)
    return out


def scan_order(
    units: Sequence[tuple[Any, _Cols]],
    batches: Callable[[Any, _Cols], Iterable[Sequence[pa.Array]]],
    threads: int,
) -> Order | None:
    """Scan every unit (file or table) in storage order; None if any part is undecidable."""
    if threads > 1 and len(units) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            scanned = list(pool.map(lambda u: _scan_unit(u, batches), units))
    else:
        scanned = [_scan_unit(u, batches) for u in units]
    parts = [runs for found in scanned if found is not None for runs in found]
    if any(found is None for found in scanned):
        return None
    if not parts:
        return Order(pa.array([], pa.string()), 0)
    bad = [p[2] for p in parts]
    table = pa.table(
        {
            "k": pa.concat_arrays([p[0] for p in parts]),
            **{
                name: np.concatenate([p[1][i] for p in parts])
                for i, name in enumerate(("fe", "fi", "fa", "le", "li", "la"))
            },
        }
    )
    table = table.sort_by([("k", "ascending"), ("fe", "ascending"), ("fi", "ascending")])
    keys = table.column("k").combine_chunks()
    b = {name: np.asarray(table.column(name)) for name in table.column_names[1:]}
    same = np.asarray(pc.equal(keys[1:], keys[:-1]))
    broken = same & ~((b["fe"][1:] >= b["le"][:-1]) & (b["fa"][1:] > b["la"][:-1]))
    bad.append(keys[1:].filter(pa.array(broken)))
    found = pc.unique(pa.concat_arrays(bad))
    return Order(found, 1 + int(np.count_nonzero(~same)) if len(keys) else 0)
