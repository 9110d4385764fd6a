"""A tiny expression language for predicates and derived features.

One expression, two renderings: SQL for the offline executor (DuckDB) and a Python evaluator for
the online executor — with SQL's three-valued logic in both, so they agree on nulls::

    >>> empty = (col("num_bikes_available") == 0) & col("is_renting")
    >>> empty.to_sql()
    '(((("num_bikes_available") = (0))) AND ("is_renting"))'
    >>> empty.evaluate({"num_bikes_available": 0, "is_renting": True})
    True

Arithmetic on a null gives null; division by zero gives null (not an error); a comparison with a
null is null; ``AND``/``OR``/``NOT`` follow SQL (``False AND NULL`` is ``False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from dockline.core.errors import ConfigError

__all__ = ["Expr", "Value", "col", "lit"]

Value = int | float | bool | str | None

_BINARY_SQL = {
    "==": "=",
    "!=": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "+": "+",
    "-": "-",
    "*": "*",
    "/": "/",
    "and": "AND",
    "or": "OR",
}
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_LOGICAL = frozenset({"and", "or", "not"})
Op = Literal["col", "lit", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "and", "or", "not"]


class Expr(msgspec.Struct, frozen=True, omit_defaults=True):
    """An expression node: ``op`` with ``args`` (sub-expressions), or a column/literal leaf."""

    op: Op
    args: tuple[Expr, ...] = ()
    name: str | None = None
    value: Value = None

    # -- building ---------------------------------------------------------------------------

    def _bin(self, op: Op, other: object) -> Expr:
        return Expr(op, (self, _wrap(other)))

    def _rbin(self, op: Op, other: object) -> Expr:
        return Expr(op, (_wrap(other), self))

    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return self._bin("==", other)

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        return self._bin("!=", other)

    def __lt__(self, other: object) -> Expr:
        return self._bin("<", other)

    def __le__(self, other: object) -> Expr:
        return self._bin("<=", other)

    def __gt__(self, other: object) -> Expr:
        return self._bin(">", other)

    def __ge__(self, other: object) -> Expr:
        return self._bin(">=", other)

    def __add__(self, other: object) -> Expr:
        return self._bin("+", other)

    def __radd__(self, other: object) -> Expr:
        return self._rbin("+", other)

    def __sub__(self, other: object) -> Expr:
        return self._bin("-", other)

    def __rsub__(self, other: object) -> Expr:
        return self._rbin("-", other)

    def __mul__(self, other: object) -> Expr:
        return self._bin("*", other)

    def __rmul__(self, other: object) -> Expr:
        return self._rbin("*", other)

    def __truediv__(self, other: object) -> Expr:
        return self._bin("/", other)

    def __rtruediv__(self, other: object) -> Expr:
        return self._rbin("/", other)

    def __and__(self, other: object) -> Expr:
        return self._bin("and", other)

    def __or__(self, other: object) -> Expr:
        return self._bin("or", other)

    def __invert__(self) -> Expr:
        return Expr("not", (self,))

    def __hash__(self) -> int:
        return hash(msgspec.json.encode(self))

    def __bool__(self) -> bool:
        raise ConfigError(
            "an expression has no truth value; combine predicates with & | ~, not and/or/not"
        )

    # -- inspecting -------------------------------------------------------------------------

    def columns(self) -> frozenset[str]:
        """Every column the expression reads."""
        if self.op == "col":
            assert self.name is not None
            return frozenset({self.name})
        out: frozenset[str] = frozenset()
        for arg in self.args:
            out |= arg.columns()
        return out

    @property
    def is_predicate(self) -> bool:
        """Whether the expression yields a boolean (a comparison or a logical combination)."""
        return (
            self.op in _COMPARISONS
            or self.op in _LOGICAL
            or (self.op == "lit" and isinstance(self.value, bool))
        )

    # -- rendering --------------------------------------------------------------------------

    def to_sql(self, column: Callable[[str], str] | None = None) -> str:
        """DuckDB SQL; ``column`` maps a column name to its SQL reference (default: quoted)."""
        ref = column or _quote
        if self.op == "col":
            assert self.name is not None
            return ref(self.name)
        if self.op == "lit":
            return _sql_literal(self.value)
        if self.op == "not":
            return f"(NOT ({self.args[0].to_sql(ref)}))"
        left, right = (arg.to_sql(ref) for arg in self.args)
        if self.op == "/":
            # division by zero is null, as in the Python evaluator; always real division
            return f"(CAST({left} AS DOUBLE) / NULLIF(CAST({right} AS DOUBLE), 0))"
        return f"(({left}) {_BINARY_SQL[self.op]} ({right}))"

    def evaluate(self, row: Mapping[str, Any]) -> Value:
        """Evaluate against one row (a mapping of column → value) with SQL's null semantics."""
        op = self.op
        if op == "col":
            assert self.name is not None
            value = row[self.name]
            return None if isinstance(value, float) and math.isnan(value) else value
        if op == "lit":
            return self.value
        if op == "not":
            inner = self.args[0].evaluate(row)
            return None if inner is None else not inner
        if op == "and":
            a, b = self.args[0].evaluate(row), self.args[1].evaluate(row)
            if a is False or b is False:
                return False
            return None if a is None or b is None else True
        if op == "or":
            a, b = self.args[0].evaluate(row), self.args[1].evaluate(row)
            if a is True or b is True:
                return True
            return None if a is None or b is None else False
        a, b = self.args[0].evaluate(row), self.args[1].evaluate(row)
        if a is None or b is None:
            return None
        if op == "==":
            return bool(a == b)
        if op == "!=":
            return bool(a != b)
        if op == "<":
            return bool(a < b)  # type: ignore[operator]
        if op == "<=":
            return bool(a <= b)  # type: ignore[operator]
        if op == ">":
            return bool(a > b)  # type: ignore[operator]
        if op == ">=":
            return bool(a >= b)  # type: ignore[operator]
        x, y = float(a), float(b)
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        return None if y == 0 else x / y

    def __repr__(self) -> str:
        return self.to_sql()


def col(name: str) -> Expr:
    """A column of the source (in predicates) or a feature (in derived features)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"col() needs a non-empty column name; got {name!r}")
    return Expr("col", name=name)


def lit(value: Value) -> Expr:
    """A literal number, string or boolean."""
    if not isinstance(value, int | float | bool | str) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise ConfigError(f"lit() takes a finite number, a string or a boolean; got {value!r}")
    return Expr("lit", value=value)


def _wrap(value: object) -> Expr:
    return value if isinstance(value, Expr) else lit(value)  # type: ignore[arg-type]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(value: Value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return "'" + value.replace("'", "''") + "'"
