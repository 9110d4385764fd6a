"""Arrow rows → Python values for the online stores (shared by every backend).

Conversion is column-wise (one ``to_pylist`` per column, then ``zip``): Arrow's per-row scalar
access costs microseconds per value, a column conversion a few tens of nanoseconds.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.errors import ValidationError
from dockline.core.ports import OnlineValue

__all__ = ["check_columns", "check_group", "check_written_at", "table_rows"]


def check_group(group: object) -> str:
    """``group`` if it is a non-empty string, else ``ValidationError``."""
    if not isinstance(group, str) or not group:
        raise ValidationError(
            f"group must be a non-empty string; got {group!r}", reason="bad_value"
        )
    return group


def check_columns(group: str, columns: Sequence[str]) -> tuple[str, ...]:
    """The registered columns as a tuple: non-empty, distinct, non-empty strings."""
    if isinstance(columns, str | bytes):
        raise ValidationError(
            f"columns must be a sequence of names, not one string; got {columns!r}",
            reason="bad_value",
            where=group,
        )
    result = tuple(columns)
    if not result or not all(isinstance(c, str) and c for c in result):
        raise ValidationError(
            f"columns must be one or more non-empty strings; got {list(result)!r}",
            reason="bad_value",
            where=group,
        )
    if len(set(result)) != len(result):
        raise ValidationError(
            f"columns must be distinct; got {list(result)!r}", reason="bad_value", where=group
        )
    return result


def check_written_at(written_at_us: int) -> int:
    """``written_at_us`` as a plain ``int`` (numpy integers accepted, bools and floats not)."""
    if isinstance(written_at_us, bool):
        raise ValidationError(
            f"written_at_us must be integer microseconds; got {written_at_us!r}", reason="bad_value"
        )
    try:
        return operator.index(written_at_us)
    except TypeError:
        raise ValidationError(
            f"written_at_us must be integer microseconds; got {written_at_us!r}", reason="bad_value"
        ) from None


def _is_string(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_string(kind.value_type)
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    )


def _micros(column: pa.ChunkedArray, name: str, group: str) -> pa.ChunkedArray:
    """A tz-aware timestamp column as int64 microseconds since the epoch (finer units truncate)."""
    kind = column.type
    if kind.tz is None:
        raise ValidationError(
            f"timestamp column {name!r} must be tz-aware; got {kind}",
            reason="naive_datetime",
            where=group,
        )
    if kind.unit != "us":
        column = pc.cast(column, pa.timestamp("us", tz=kind.tz), safe=False)
    return column.cast(pa.int64())


def _python_values(column: pa.ChunkedArray, name: str, group: str) -> list[OnlineValue]:
    kind = column.type
    if pa.types.is_timestamp(kind):
        values: list[OnlineValue] = _micros(column, name, group).to_pylist()
        return values
    if pa.types.is_floating(kind):
        if kind != pa.float64():  # float16 would come back as numpy scalars
            column = column.cast(pa.float64())
        return column.to_pylist()  # type: ignore[no-any-return]
    if (
        pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
        or _is_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        return column.to_pylist()  # type: ignore[no-any-return]
    raise ValidationError(
        f"column {name!r} must be int, float, str, bool, binary or timestamp; got {kind}",
        reason="bad_type",
        where=group,
    )


def table_rows(
    group: str, rows: pa.Table, columns: Sequence[str], *, key: str, as_of: str
) -> tuple[list[str], list[int], Iterator[tuple[OnlineValue, ...]]]:
    """Entities, ``as_of`` microseconds and value tuples (in ``columns`` order) of ``rows``.

    Raises ``ValidationError`` naming what is wrong: a missing key, ``as_of`` or value column,
    a non-string key, nulls in key or ``as_of``, a naive timestamp, an unsupported type.
    """
    names = set(rows.column_names)
    missing = [c for c in (key, as_of, *columns) if c not in names]
    if missing:
        raise ValidationError(
            f"rows must have the columns {missing!r}; got {rows.column_names!r}",
            reason="missing_field",
            where=group,
        )
    keys = rows.column(key)
    if not _is_string(keys.type):
        raise ValidationError(
            f"key column {key!r} must be a string column; got {keys.type}",
            reason="bad_type",
            where=group,
        )
    times = rows.column(as_of)
    if not pa.types.is_timestamp(times.type):
        raise ValidationError(
            f"as_of column {as_of!r} must be a timestamp column; got {times.type}",
            reason="bad_type",
            where=group,
        )
    for name, column in ((key, keys), (as_of, times)):
        if column.null_count:
            raise ValidationError(
                f"column {name!r} must not contain nulls; got {column.null_count}",
                reason="missing_field",
                where=group,
            )
    entities: list[str] = keys.to_pylist()
    as_of_us: list[int] = _micros(times, as_of, group).to_pylist()
    value_columns = [_python_values(rows.column(c), c, group) for c in columns]
    return entities, as_of_us, zip(*value_columns, strict=True)
