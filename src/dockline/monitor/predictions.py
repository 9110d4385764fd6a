"""Reading the prediction log (``serving/predictions/date=YYYY-MM-DD/*.parquet``) at the edge.

Only the columns asked for are read, and files whose date partition cannot overlap the time
range are never opened.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core.contracts import TS_TYPE
from dockline.core.errors import StorageError
from dockline.core.time import ensure_utc

__all__ = ["feature_matrix", "numeric_columns", "read_prediction_log"]


def _day(path: Path) -> str | None:
    for part in path.parts[::-1]:
        if part.startswith("date="):
            return part.removeprefix("date=")
    return None


def read_prediction_log(
    root: Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: Sequence[str] | None = None,
    exclude_models: Collection[str] = (),
) -> pa.Table:
    """Rows with ``start <= logged_at < end`` (either bound optional), sorted by ``logged_at``,
    but for the models in ``exclude_models`` (a deployment's companions log beside it).

    A missing directory gives an empty table; an unreadable file is a :class:`StorageError`.
    """
    wanted = list(columns) if columns is not None else None
    if wanted is not None and "logged_at" not in wanted:
        wanted.append("logged_at")
    if wanted is not None and exclude_models and "model_name" not in wanted:
        wanted.append("model_name")
    first = None if start is None else (ensure_utc(start) - timedelta(days=1)).strftime("%F")
    last = None if end is None else ensure_utc(end).strftime("%F")
    tables: list[pa.Table] = []
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    for path in files:
        day = _day(path)
        if day is not None and ((first and day < first) or (last and day > last)):
            continue
        try:
            tables.append(pq.read_table(path, columns=wanted))
        except (OSError, pa.ArrowInvalid) as exc:
            raise StorageError(f"cannot read the prediction log: {exc}", where=str(path)) from exc
    if not tables:
        schema = pa.schema([pa.field("logged_at", TS_TYPE)])
        return (
            schema.empty_table()
            if wanted is None
            else pa.table(
                {
                    name: pa.array([], type=TS_TYPE if name == "logged_at" else pa.null())
                    for name in wanted
                }
            )
        )
    table = pa.concat_tables(tables, promote_options="default")
    mask = None
    if start is not None:
        mask = pc.greater_equal(table["logged_at"], pa.scalar(ensure_utc(start), type=TS_TYPE))
    if end is not None:
        upper = pc.less(table["logged_at"], pa.scalar(ensure_utc(end), type=TS_TYPE))
        mask = upper if mask is None else pc.and_(mask, upper)
    if exclude_models:
        kept = pc.invert(pc.is_in(table["model_name"], pa.array(sorted(exclude_models))))
        mask = kept if mask is None else pc.and_(mask, kept)
    if mask is not None:
        table = table.filter(mask)
    return table.sort_by("logged_at")


def feature_matrix(
    table: pa.Table, width: int, column: str = "features"
) -> npt.NDArray[np.float64]:
    """The ``features`` list column as an ``[n, width]`` float matrix; a row whose list is
    null or of another length is all NaN (counted as nulls, never dropped silently)."""
    n = table.num_rows
    out = np.full((n, width), np.nan, dtype=np.float64)
    if n == 0:
        return out
    lists = table[column].combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), -1).to_numpy(zero_copy_only=False)
    ok = lengths == width
    if ok.any():
        good = lists.filter(pa.array(ok))
        values = pc.list_flatten(good).to_numpy(zero_copy_only=False).astype(np.float64)
        out[ok] = values.reshape(-1, width)
    return out


def numeric_columns(table: pa.Table) -> dict[str, npt.NDArray[np.float64]]:
    """Every integer, floating or boolean column of ``table`` as float64 (nulls → NaN)."""
    out: dict[str, npt.NDArray[np.float64]] = {}
    for field in table.schema:
        kind = field.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            column = table[field.name].combine_chunks().cast(pa.float64())
            out[field.name] = column.to_numpy(zero_copy_only=False)
    return out
