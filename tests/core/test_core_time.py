from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockline.core.errors import ValidationError
from dockline.core.time import (
    FixedClock,
    ScaledClock,
    ensure_utc,
    from_micros,
    parse_duration,
    to_micros,
)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="tz-aware"):
        ensure_utc(datetime(2024, 1, 1))


def test_ensure_utc_converts_offsets() -> None:
    chicago_summer = timezone(timedelta(hours=-5))
    value = ensure_utc(datetime(2024, 7, 1, 7, 30, tzinfo=chicago_summer))
    assert value == datetime(2024, 7, 1, 12, 30, tzinfo=UTC)
    assert value.tzinfo is UTC


@given(st.integers(min_value=-(10**15), max_value=10**16))
def test_micros_round_trip(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros


def test_fixed_clock_only_moves_forward() -> None:
    clock = FixedClock(datetime(2024, 1, 1, tzinfo=UTC))
    assert clock.advance(timedelta(seconds=90)) == datetime(2024, 1, 1, 0, 1, 30, tzinfo=UTC)
    with pytest.raises(ValidationError):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValidationError):
        clock.set(datetime(2023, 1, 1, tzinfo=UTC))


def test_scaled_clock_runs_faster_than_the_wall() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    clock = ScaledClock(start, speed=3600.0)
    first = clock.now()
    assert first >= start
    assert clock.now() >= first
    with pytest.raises(ValidationError):
        ScaledClock(start, speed=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("30", timedelta(seconds=30)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["abc", "1x", "-5m", ""])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValidationError, match="duration"):
        parse_duration(text)
