"""Column coercion with per-record rejections: JSON value lists and Arrow columns.

Each function converts a whole column at once when its values are clean (the common case) and
falls back to per-value classification only when they are not, recording the first failing
check of each record in :class:`Rejects` by reason priority.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.contracts import TS_TYPE, RejectReason
from dockline.core.errors import ConfigError
from dockline.ingest._time import (
    INT32_MAX,
    MAX_SECONDS,
    MIN_SECONDS,
    TimestampError,
    parse_timestamp,
    seconds_to_micros,
    show_value,
    string_timestamps_to_micros,
)

__all__ = [
    "PRIORITY",
    "Rejects",
    "arrow_counts",
    "arrow_flags",
    "arrow_ids",
    "arrow_timestamps",
    "json_counts",
    "json_flags",
    "json_ids",
    "json_timestamps",
]

R = RejectReason
PRIORITY = {
    R.MALFORMED: 0,
    R.MISSING_FIELD: 1,
    R.BAD_TYPE: 2,
    R.NEGATIVE_COUNT: 3,
    R.BAD_VALUE: 4,
    R.DUPLICATE: 5,
    R.CONFLICT: 6,
    R.FUTURE: 7,
    R.STALE: 8,
    R.LATE: 9,
}
"""The validation order: a record gets the first reason (lowest number) that applies."""
_US = 1_000_000


class Rejects:
    """The first failing check per record position, by reason priority."""

    __slots__ = ("by_pos",)

    def __init__(self) -> None:
        self.by_pos: dict[int, tuple[int, RejectReason, str]] = {}

    def add(self, pos: int, reason: RejectReason, detail: str) -> None:
        prio = PRIORITY[reason]
        current = self.by_pos.get(pos)
        if current is None or prio < current[0]:
            self.by_pos[pos] = (prio, reason, detail)

    def mask(self, n: int) -> np.ndarray:
        bad = np.zeros(n, dtype=bool)
        if self.by_pos:
            bad[np.fromiter(self.by_pos, dtype=np.int64, count=len(self.by_pos))] = True
        return bad


# --------------------------------------------------------------------------------------------
# Column coercion for JSON records (lists of Python values)


def json_ids(
    values: list[Any], rej: Rejects, field: str = "station_id"
) -> tuple[list[str], set[int]]:
    """Station ids as strings (numbers allowed); returns the ids and the unreadable positions."""
    if set(map(type, values)) == {str} and "" not in values:
        return values, set()
    out: list[str] = []
    bad: set[int] = set()
    for pos, value in enumerate(values):
        if type(value) is str and value:
            out.append(value)
            continue
        if type(value) is int:
            out.append(str(value))
            continue
        out.append("")
        bad.add(pos)
        if value is None:
            rej.add(pos, R.MISSING_FIELD, f"{field} is missing")
        elif value == "":
            rej.add(pos, R.BAD_VALUE, f"{field} must not be empty")
        else:
            rej.add(
                pos, R.BAD_TYPE, f"{field} must be a string or an integer; got {show_value(value)}"
            )
    return out, bad


def _count_value(value: Any, field: str) -> tuple[int | None, RejectReason | None, str]:
    """Classify one count; ``(value, None, "")`` when usable."""
    if value is None:
        return None, R.MISSING_FIELD, f"{field} is missing"
    if type(value) is int:
        number = value
    elif type(value) is float and value.is_integer():
        number = int(value)
    else:
        return None, R.BAD_TYPE, f"{field} must be an integer; got {show_value(value)}"
    if number < 0:
        return None, R.NEGATIVE_COUNT, f"{field} must be >= 0; got {number}"
    if number > INT32_MAX:
        return None, R.BAD_VALUE, f"{field} must fit in 32 bits; got {number}"
    return number, None, ""


def json_counts(
    values: list[Any], field: str, rej: Rejects, *, nullable: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Counts as int64 plus a null mask (only ``nullable`` columns may hold nulls)."""
    n = len(values)
    nulls = np.zeros(n, dtype=bool)
    if set(map(type, values)) == {int}:
        try:
            arr = np.array(values, dtype=np.int64)
        except OverflowError:
            pass
        else:
            bad = (arr < 0) | (arr > INT32_MAX)
            if bad.any():
                for pos in np.flatnonzero(bad).tolist():
                    _, reason, detail = _count_value(values[pos], field)
                    assert reason is not None
                    rej.add(pos, reason, detail)
                arr[bad] = 0
            return arr, nulls
    arr = np.zeros(n, dtype=np.int64)
    for pos, value in enumerate(values):
        if value is None and nullable:
            nulls[pos] = True
            continue
        number, reason, detail = _count_value(value, field)
        if number is not None:
            arr[pos] = number
        elif reason is not None:
            rej.add(pos, reason, detail)
    return arr, nulls


def json_flags(values: list[Any], field: str, rej: Rejects, *, default_true: bool) -> np.ndarray:
    """Booleans from ``true``/``false`` or ``0``/``1``; missing → True in GBFS 1.x."""
    if set(map(type, values)) == {bool}:
        return np.array(values, dtype=bool)
    arr = np.ones(len(values), dtype=bool)
    for pos, value in enumerate(values):
        if type(value) is bool:
            arr[pos] = value
        elif type(value) is int and value in (0, 1):
            arr[pos] = value == 1
        elif value is None:
            if not default_true:
                rej.add(pos, R.MISSING_FIELD, f"{field} is missing")
        else:
            rej.add(pos, R.BAD_TYPE, f"{field} must be a boolean or 0/1; got {show_value(value)}")
    return arr


def json_timestamps(values: list[Any], field: str, rej: Rejects) -> tuple[np.ndarray, set[int]]:
    """Micros since the epoch; returns the array and the unparseable positions."""
    types = set(map(type, values))
    if types == {int}:
        try:
            raw = np.array(values, dtype=np.int64)
        except OverflowError:
            pass
        else:
            micros, bad = seconds_to_micros(raw)
            if not bad.any():
                return micros, set()
    elif types == {str}:
        fast = string_timestamps_to_micros(values)
        if fast is not None:
            return fast, set()
    arr = np.zeros(len(values), dtype=np.int64)
    unreadable: set[int] = set()
    for pos, value in enumerate(values):
        if value is None:
            rej.add(pos, R.MISSING_FIELD, f"{field} is missing")
            unreadable.add(pos)
            continue
        try:
            arr[pos] = parse_timestamp(value)
        except TimestampError as exc:
            rej.add(pos, R.BAD_TYPE if exc.bad_type else R.BAD_VALUE, f"{field} {exc}")
            unreadable.add(pos)
    return arr, unreadable


# --------------------------------------------------------------------------------------------
# Column coercion for Arrow tables (vectorized; per-row Python only for rejected rows)


def arrow_ids(col: pa.Array, rej: Rejects) -> tuple[pa.Array, set[int]]:
    if (
        pa.types.is_integer(col.type)
        or pa.types.is_large_string(col.type)
        or pa.types.is_dictionary(col.type)
    ):
        col = col.cast(pa.string())
    elif not pa.types.is_string(col.type):
        raise ConfigError(f"column station_id must be strings or integers; got {col.type}")
    bad: set[int] = set()
    if col.null_count:
        for pos in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)).tolist():
            rej.add(pos, R.MISSING_FIELD, "station_id is missing")
            bad.add(pos)
        col = col.fill_null("")
    empty = pc.equal(col, "").to_numpy(zero_copy_only=False)
    for pos in np.flatnonzero(empty).tolist():
        if pos not in bad:
            rej.add(pos, R.BAD_VALUE, "station_id must not be empty")
            bad.add(pos)
    return col, bad


def arrow_timestamps(col: pa.Array, field: str, rej: Rejects) -> tuple[np.ndarray, set[int]]:
    n = len(col)
    nulls = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
    kind = col.type
    bad: set[int] = set()
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            raise ConfigError(
                f"column {field} must be timezone-aware (timestamp with tz); got {kind}"
            )
        micros = pc.cast(col.cast(TS_TYPE, safe=False), pa.int64()).fill_null(0).to_numpy()
        # Arrow holds times Python cannot (years beyond 1..9999): those are impossible values
        outside = (micros < MIN_SECONDS * _US) | (micros > MAX_SECONDS * _US)
        for pos in np.flatnonzero(outside).tolist():
            rej.add(pos, R.BAD_VALUE, f"{field} is out of range; got {micros[pos]} µs")
            bad.add(pos)
        if outside.any():
            micros = np.where(outside, 0, micros)
    elif pa.types.is_integer(kind):
        micros, out_of_range = seconds_to_micros(pc.cast(col, pa.int64()).fill_null(0).to_numpy())
        for pos in np.flatnonzero(out_of_range).tolist():
            rej.add(pos, R.BAD_VALUE, f"{field} is out of range; got {col[pos].as_py()}")
            bad.add(pos)
    elif pa.types.is_floating(kind):
        values = pc.cast(col, pa.float64()).fill_null(0.0).to_numpy()
        seconds = np.where(np.abs(values) > 1e11, values / 1000, values)
        invalid = ~np.isfinite(seconds) | (np.abs(seconds) > 2.5e11)
        micros = np.round(np.where(invalid, 0.0, seconds) * _US).astype(np.int64)
        for pos in np.flatnonzero(invalid).tolist():
            rej.add(pos, R.BAD_VALUE, f"{field} is out of range; got {values[pos]}")
            bad.add(pos)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            micros = pc.cast(col.cast(TS_TYPE), pa.int64()).fill_null(0).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            micros = np.zeros(n, dtype=np.int64)
            for pos, value in enumerate(col.to_pylist()):
                if value is None:
                    continue
                try:
                    micros[pos] = parse_timestamp(value)
                except TimestampError as exc:
                    rej.add(pos, R.BAD_TYPE if exc.bad_type else R.BAD_VALUE, f"{field} {exc}")
                    bad.add(pos)
    else:
        raise ConfigError(
            f"column {field} must be a timestamp, POSIX seconds or ISO-8601 text; got {kind}"
        )
    if nulls is not None:
        for pos in np.flatnonzero(nulls).tolist():
            rej.add(pos, R.MISSING_FIELD, f"{field} is missing")
            bad.add(pos)
    return micros, bad


def arrow_counts(
    col: pa.Array, field: str, rej: Rejects, *, nullable: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    n = len(col)
    nulls = (
        col.is_null().to_numpy(zero_copy_only=False) if col.null_count else np.zeros(n, dtype=bool)
    )
    if pa.types.is_integer(col.type):
        values = pc.cast(col, pa.int64()).fill_null(0).to_numpy()
    elif pa.types.is_floating(col.type):
        floats = pc.cast(col, pa.float64()).fill_null(0.0).to_numpy()
        fractional = ~np.isfinite(floats) | (np.floor(floats) != floats)
        for pos in np.flatnonzero(fractional & ~nulls).tolist():
            rej.add(pos, R.BAD_TYPE, f"{field} must be an integer; got {floats[pos]!r}")
        values = np.where(fractional, 0.0, floats).astype(np.int64)
    else:
        raise ConfigError(f"column {field} must hold integers; got {col.type}")
    if not nullable:
        for pos in np.flatnonzero(nulls).tolist():
            rej.add(pos, R.MISSING_FIELD, f"{field} is missing")
    for pos in np.flatnonzero(values < 0).tolist():
        rej.add(pos, R.NEGATIVE_COUNT, f"{field} must be >= 0; got {values[pos]}")
    for pos in np.flatnonzero(values > INT32_MAX).tolist():
        rej.add(pos, R.BAD_VALUE, f"{field} must fit in 32 bits; got {values[pos]}")
    return values, nulls


def arrow_flags(col: pa.Array, field: str, rej: Rejects) -> np.ndarray:
    if pa.types.is_boolean(col.type):
        values = col.fill_null(True).to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(col.type):
        ints = pc.cast(col, pa.int64()).fill_null(1).to_numpy()
        for pos in np.flatnonzero((ints != 0) & (ints != 1)).tolist():
            rej.add(pos, R.BAD_TYPE, f"{field} must be a boolean or 0/1; got {ints[pos]}")
        values = ints == 1
    else:
        raise ConfigError(f"column {field} must be booleans or 0/1 integers; got {col.type}")
    if col.null_count:
        for pos in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)).tolist():
            rej.add(pos, R.MISSING_FIELD, f"{field} is missing")
    result: np.ndarray = np.asarray(values, dtype=bool)
    return result
