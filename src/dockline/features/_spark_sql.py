"""Spark SQL dialect of the plan's SQL: the one place where Spark and DuckDB differ.

The Spark executor renders the same plan with the same expressions (``Expr.to_sql`` with a
column quoter) and the same shared builder (``_plan_sql``, whose hooks :data:`SPARK` fills);
only these differ from DuckDB's dialect (``_offline_sql``): identifiers in backticks, floor
division, time zones and calendar functions, bucket ranges, and the as-of lookup (Spark has no
``ASOF JOIN``: it is one window pass over events and probes).
Times stay BIGINT microseconds throughout, as in the DuckDB executor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dockline.core.errors import ConfigError
from dockline.features._plan_sql import Dialect, double
from dockline.features.expr import Expr

__all__ = [
    "SPARK",
    "asof_union",
    "bucket_range",
    "calendar",
    "double",
    "expr_sql",
    "fdiv",
    "float_agg",
    "how",
    "micros",
    "probes",
    "quote",
    "real",
]


def quote(name: str) -> str:
    """A quoted Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def real(value: float) -> str:
    """A DOUBLE literal (Spark reads ``1.0`` as a DECIMAL, whose division rounds to its scale)."""
    return f"{float(value)!r}D"


def fdiv(expr: str, divisor: int) -> str:
    """Floor division of a BIGINT expression (Spark's ``div`` truncates toward zero)."""
    return f"((({expr}) - pmod({expr}, {divisor})) div {divisor})"


def micros(column: str, spark_type: str) -> str:
    """A time column as BIGINT µs (timestamps are instants; integers already are µs)."""
    if spark_type.startswith("timestamp"):
        # a zone-less timestamp is read as UTC: the session time zone is UTC
        return f"unix_micros(CAST({quote(column)} AS TIMESTAMP))"
    return f"CAST({quote(column)} AS BIGINT)"


def _strings(expr: Expr) -> list[str]:
    found = [expr.value] if expr.op == "lit" and isinstance(expr.value, str) else []
    for arg in expr.args:
        found += _strings(arg)
    return found


def expr_sql(expr: Expr) -> str:
    """An expression of the plan in Spark SQL (same operators and null semantics as DuckDB).

    String literals with a quote are refused: DuckDB escapes it by doubling, which Spark reads
    as two adjacent literals (a different string).
    """
    bad = [s for s in _strings(expr) if "'" in s or "\\" in s]
    if bad:
        raise ConfigError(
            f"the Spark engine cannot render string literal(s) {bad} (quote or backslash);"
            " use --engine duckdb"
        )
    return expr.to_sql(quote)


def _local(tz: str, t: str) -> str:
    # with the session time zone UTC, the fields of the shifted timestamp are t's local fields
    return f"from_utc_timestamp(timestamp_micros({t}), '{tz}')"


def how(tz: str, t: str) -> str:
    """Hour of week of ``t`` in ``tz`` (0 = Monday 00:00–00:59)."""
    local = _local(tz, t)
    return f"(weekday({local}) * 24 + hour({local}))"


def calendar(name: str, tz: str, t: str) -> str:
    """A calendar feature of ``t`` (rule 6)."""
    local = _local(tz, t)
    if name == "hour_of_day":
        return f"hour({local})"
    if name == "day_of_week":
        return f"weekday({local})"
    if name == "is_weekend":
        return f"(CASE WHEN weekday({local}) >= 5 THEN 1.0 ELSE 0.0 END)"
    if name == "minute_of_day":
        return f"(hour({local}) * 60 + minute({local}))"
    raise ConfigError(f"calendar: unknown feature {name!r}")


def bucket_range(lo: str, hi: str) -> str:
    """The integers ``lo..hi`` (both included), one row each."""
    return f"explode(sequence({lo}, {hi}))"


def float_agg(fn: str, col: str, keep: str) -> str:
    """Aggregate ``fn`` of ``col`` over the rows ``keep`` passes."""
    return f"{fn}({col}) {keep}"


def asof_union(
    events: str, order: Sequence[str], fields: Sequence[str], probes: str, *, forward: bool = False
) -> str:
    """Per probe row, the last event at or before it (``forward``: the first strictly after).

    ``events`` yields ``k``, the ``order`` columns and ``fields``; ``probes`` yields ``pid``,
    ``tag``, ``k`` and ``tm`` (compared with the first ``order`` column). Events and probes
    are sorted together per key and each probe takes the event struct carried forward: one
    sort, where a range join would pair every probe with every older event. Result columns:
    ``pid``, ``tag``, ``s`` (a struct of ``fields``, null when no event qualifies).
    """
    struct = ", ".join(f"'{f}', {f}" for f in fields)
    pad = ", ".join(f"CAST(NULL AS BIGINT) AS _o{i}" for i in range(1, len(order)))
    ev_order = ", ".join(f"{c} AS _o{i}" for i, c in enumerate(order[1:], 1))
    union = (
        f"SELECT k, {order[0]} AS tm{', ' + ev_order if ev_order else ''}, 0 AS kind,"
        f" CAST(NULL AS BIGINT) AS pid, CAST(NULL AS STRING) AS tag, named_struct({struct}) AS e"
        f" FROM ({events})"
        f" UNION ALL SELECT k, tm{', ' + pad if pad else ''}, 1 AS kind, pid, tag, NULL AS e"
        f" FROM ({probes})"
    )
    rest = "".join(f", _o{i}" for i in range(1, len(order)))
    if forward:
        # descending, probes first at equal times: events strictly after t precede the probe
        sort = "tm DESC, kind DESC" + "".join(f", _o{i} DESC" for i in range(1, len(order)))
    else:
        # ascending, events first at equal times: events at or before t precede the probe
        sort = f"tm, kind{rest}"
    return (
        f"SELECT pid, tag, s FROM (SELECT kind, pid, tag, last(e, true) OVER (PARTITION BY k"
        f" ORDER BY {sort} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s"
        f" FROM ({union})) WHERE kind = 1"
    )


def probes(points: str, offsets: Mapping[str, int]) -> str:
    """Probe rows ``(pid, tag, k, tm = t + offset)`` of every point, one per tagged offset."""
    return " UNION ALL ".join(
        f"SELECT pid, '{tag}' AS tag, k, t + ({off}) AS tm FROM {points}"
        for tag, off in offsets.items()
    )


SPARK = Dialect(
    quote=quote,
    fdiv=fdiv,
    expr=expr_sql,
    how=how,
    calendar=calendar,
    string_type="STRING",
    bucket_range=bucket_range,
    float_agg=float_agg,
)
