"""Timestamp coercion for real-world feeds, and durations written for humans.

Feeds publish POSIX seconds, milliseconds (> 1e11) or RFC 3339 strings (GBFS v3.0); everything
becomes integer microseconds since the epoch, UTC. Scalar parsing lives here for the rare rows the
vectorized paths cannot handle and for document-level fields such as ``last_updated``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.time import from_micros, to_micros

__all__ = [
    "INT32_MAX",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "MS_THRESHOLD",
    "TimestampError",
    "human_duration",
    "isoformat",
    "parse_timestamp",
    "parse_timestamp_or_none",
    "seconds_to_micros",
    "show_value",
    "string_timestamps_to_micros",
]

MS_THRESHOLD = 100_000_000_000
"""Numeric timestamps above this are milliseconds (1e11 s is the year 5138)."""
INT32_MAX = 2**31 - 1
"""Counts must fit the contract's int32 columns."""
MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, the smallest datetime
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z, the largest datetime


class TimestampError(ValueError):
    """A value is not a usable timestamp; ``bad_type``: the type (not the value) is wrong."""

    def __init__(self, message: str, *, bad_type: bool) -> None:
        super().__init__(message)
        self.bad_type = bad_type


def _number_to_micros(value: int | float) -> int:
    seconds = value / 1000 if abs(value) > MS_THRESHOLD else value
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise TimestampError(f"is out of range; got {value!r}", bad_type=False)
    if isinstance(value, int):
        # integer arithmetic keeps exact microseconds for large epochs
        return value * 1000 if abs(value) > MS_THRESHOLD else value * 1_000_000
    return round(seconds * 1_000_000)


def parse_timestamp(value: object) -> int:
    """Microseconds since the epoch (UTC) from POSIX s/ms numbers or an RFC 3339 string.

    Raises :class:`TimestampError`. Booleans and containers are the wrong type; naive strings,
    unparseable strings, NaN and out-of-range numbers are wrong values.

    >>> parse_timestamp("1970-01-01T00:00:01Z"), parse_timestamp(1), parse_timestamp(1e12)
    (1000000, 1000000, 1000000000000000)
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TimestampError(
            f"must be a POSIX number or an RFC 3339 string; got {show_value(value)}", bad_type=True
        )
    if isinstance(value, float) and value != value:  # NaN
        raise TimestampError("must be a number; got NaN", bad_type=False)
    if isinstance(value, int | float):
        return _number_to_micros(value)
    text = value.strip()
    try:
        return _number_to_micros(int(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise TimestampError(
            f"must be a POSIX number or an RFC 3339 string; got {value!r}", bad_type=False
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise TimestampError(f"must carry a UTC offset; got {value!r}", bad_type=False)
    return to_micros(parsed)


def parse_timestamp_or_none(value: object) -> datetime | None:
    """Like :func:`parse_timestamp` but returns a UTC datetime, or ``None`` when unusable."""
    try:
        return from_micros(parse_timestamp(value))
    except TimestampError:
        return None


def seconds_to_micros(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized POSIX seconds-or-milliseconds (int64) → (micros, out_of_range mask)."""
    is_ms = np.abs(values) > MS_THRESHOLD
    seconds_equiv = np.where(is_ms, values // 1000, values)
    bad = (seconds_equiv < MIN_SECONDS) | (seconds_equiv > MAX_SECONDS)
    safe = np.where(bad, 0, values)
    micros = np.where(is_ms, safe * 1000, safe * 1_000_000)
    return micros, bad


def string_timestamps_to_micros(values: list[str]) -> np.ndarray | None:
    """Vectorized RFC 3339 strings → micros, or ``None`` if any string needs the slow path."""
    try:
        arr = pa.array(values, pa.string()).cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    result: np.ndarray = pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False)
    return result


def isoformat(micros: int) -> str:
    """RFC 3339 text of a micros timestamp, for messages."""
    try:
        return from_micros(micros).isoformat()
    except OverflowError:
        return f"{micros} µs"


_UNITS = (
    ("year", 365 * 86_400),
    ("day", 86_400),
    ("hour", 3_600),
    ("minute", 60),
    ("second", 1),
)


def human_duration(value: timedelta | float) -> str:
    """``"56 years"``, ``"1 day"``, ``"10 minutes"``, ``"250 ms"``: the largest whole unit."""
    seconds = abs(value.total_seconds() if isinstance(value, timedelta) else value)
    for unit, size in _UNITS:
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{round(seconds * 1000)} ms"


def show_value(value: object) -> str:
    """A short repr of ``value`` for error details."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
