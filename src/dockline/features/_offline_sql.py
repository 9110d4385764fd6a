"""SQL building blocks of the offline executor (DuckDB dialect, times as BIGINT microseconds)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["fdiv", "hkey", "quote", "values_list"]

_TWO64 = 18446744073709551616
_ING_OFFSET = 1 << 62  # keeps the packed ingestion time non-negative for any time after -2^62 µs


def quote(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def fdiv(expr: str, divisor: int) -> str:
    """Floor division of an integer expression (DuckDB's ``//`` truncates toward zero)."""
    return f"((({expr}) - ((({expr}) % {divisor}) + {divisor}) % {divisor}) // {divisor})"


def hkey(ets: str, ing: str) -> str:
    """``(event_ts, ingested_at)`` packed into one HUGEINT that sorts like the pair (rule 2)."""
    return f"(CAST({ets} AS HUGEINT) * {_TWO64} + (CAST({ing} AS HUGEINT) + {_ING_OFFSET}))"


def hkey_upto(ets: str) -> str:
    """The greatest packed key with event time ``ets`` (probe for "event_ts <= ets")."""
    return f"(CAST({ets} AS HUGEINT) * {_TWO64} + {_TWO64 - 1})"


def values_list(items: Sequence[str]) -> str:
    """``a, b, c`` with a leading comma when not empty (for appending to a select list)."""
    return "".join(f", {item}" for item in items)
