"""Time: UTC, tz-aware, microsecond precision, and an injectable clock.

Every timestamp dockline stores is a tz-aware UTC ``datetime`` truncated to microseconds (the
resolution of Arrow ``timestamp[us, UTC]``). Code that needs "now" takes a :class:`Clock`, so a
simulated city can run at any speed and tests can freeze time.

>>> clock = FixedClock(datetime(2024, 5, 1, 12, tzinfo=UTC))
>>> clock.advance(timedelta(minutes=1)).isoformat()
'2024-05-01T12:01:00+00:00'
"""

from __future__ import annotations

import threading
import time as _time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from dockline.core.errors import ValidationError

__all__ = [
    "EPOCH",
    "UTC",
    "Clock",
    "FixedClock",
    "ScaledClock",
    "SystemClock",
    "ensure_utc",
    "from_micros",
    "parse_duration",
    "to_micros",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@runtime_checkable
class Clock(Protocol):
    """Source of the current time as a tz-aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that moves only when told to; for tests and stepped simulations."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by ``delta`` and return the new time."""
        if delta < timedelta(0):
            raise ValidationError(f"a clock only moves forward; got {delta}", reason="bad_value")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (never backwards)."""
        when = ensure_utc(when)
        with self._lock:
            if when < self._now:
                raise ValidationError(
                    f"a clock only moves forward; got {when} < {self._now}", reason="bad_value"
                )
            self._now = when


class ScaledClock:
    """Simulated time that runs ``speed`` times faster than the wall clock from ``start``."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValidationError(f"speed must be > 0; got {speed}", reason="bad_value")
        self.start = ensure_utc(start)
        self.speed = speed
        self._t0 = _time.monotonic()

    def now(self) -> datetime:
        elapsed = (_time.monotonic() - self._t0) * self.speed
        return self.start + timedelta(seconds=elapsed)


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC, truncated to microseconds; naive datetimes are an error."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"timestamps must be tz-aware; got naive {value.isoformat()}", reason="naive_datetime"
        )
    return value.astimezone(UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch for a tz-aware datetime."""
    delta = ensure_utc(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"``, ``"1w"`` (or a bare number of seconds)."""
    raw = text.strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if raw.endswith(unit):
            number = raw[: -len(unit)]
            break
    else:
        number, unit = raw, "s"
    try:
        value = float(number)
    except ValueError:
        raise ValidationError(
            f"duration must look like 90s, 15m, 1h, 2d or 1w; got {text!r}", reason="bad_value"
        ) from None
    if value < 0:
        raise ValidationError(f"duration must be >= 0; got {text!r}", reason="bad_value")
    return timedelta(seconds=value * _UNITS[unit])
