"""The DuckDB dialect of the plan's SQL (times as BIGINT microseconds).

:data:`DUCKDB` gives the shared builder (``_plan_sql``) its hooks; the rest are the building
blocks only the DuckDB executor uses (the packed ``(event_ts, ingested_at)`` key of its
``ASOF`` joins).
"""

from __future__ import annotations

from collections.abc import Sequence

from dockline.core.errors import ConfigError
from dockline.features._plan_sql import Dialect, double

__all__ = [
    "DUCKDB",
    "bucket_range",
    "calendar_sql",
    "double",
    "fdiv",
    "float_agg",
    "hkey",
    "hkey_upto",
    "how",
    "local_time",
    "quote",
    "values_list",
]

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


def local_time(tz: str, t: str) -> str:
    """``t`` (BIGINT µs) as a local timestamp in ``tz``."""
    return f"timezone('{tz}', make_timestamp({t})::TIMESTAMPTZ)"


def how(tz: str, t: str) -> str:
    """Hour of week of ``t`` in ``tz`` (0 = Monday 00:00–00:59)."""
    local = local_time(tz, t)
    return f"((isodow({local}) - 1) * 24 + hour({local}))"


def calendar_sql(name: str, tz: str, t: str) -> str:
    """A calendar feature of ``t`` (rule 6)."""
    local = local_time(tz, t)
    if name == "hour_of_day":
        return f"hour({local})"
    if name == "day_of_week":
        return f"(isodow({local}) - 1)"
    if name == "is_weekend":
        return f"(CASE WHEN isodow({local}) >= 6 THEN 1.0 ELSE 0.0 END)"
    if name == "minute_of_day":
        return f"(hour({local}) * 60 + minute({local}))"
    raise ConfigError(f"calendar: unknown feature {name!r}")


def bucket_range(lo: str, hi: str) -> str:
    """The integers ``lo..hi`` (both included), one row each."""
    return f"unnest(range({lo}, {hi} + 1))"


def float_agg(fn: str, col: str, keep: str) -> str:
    """Aggregate ``fn`` of ``col`` over the rows ``keep`` passes, in value order.

    A float sum depends on the order of its terms, which DuckDB's parallel join and aggregate
    do not fix: the same inputs gave different last bits run to run. Summing the values in
    value order makes it a function of the set alone.
    """
    return f"list_{fn}(list_sort(list({col}) {keep}))"


DUCKDB = Dialect(
    quote=quote,
    fdiv=fdiv,
    expr=lambda expr: expr.to_sql(),
    how=how,
    calendar=calendar_sql,
    string_type="VARCHAR",
    bucket_range=bucket_range,
    float_agg=float_agg,
)
