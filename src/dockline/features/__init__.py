"""dockline.features: declare features and labels once; compile them into one plan.

The plan is executed offline (DuckDB SQL over the offline store: training sets) and online
(incremental per-entity state over the event log: serving vectors). See ``docs/features.md``
for the rules both follow.
"""

from dockline.features.definitions import (
    Aggregation,
    Calendar,
    Derived,
    Entity,
    FeatureGroup,
    HourOfWeekProfile,
    Label,
    Neighbourhood,
    Project,
    Source,
    Static,
    count,
    count_if,
    delta,
    future_any,
    future_value,
    last,
    max_,
    mean,
    min_,
    stddev,
    sum_,
    time_since,
)
from dockline.features.expr import Expr, col, lit
from dockline.features.plan import Plan, compile_project, load_project

__all__ = [
    "Aggregation",
    "Calendar",
    "Derived",
    "Entity",
    "Expr",
    "FeatureGroup",
    "HourOfWeekProfile",
    "Label",
    "Neighbourhood",
    "Plan",
    "Project",
    "Source",
    "Static",
    "col",
    "compile_project",
    "count",
    "count_if",
    "delta",
    "future_any",
    "future_value",
    "last",
    "lit",
    "load_project",
    "max_",
    "mean",
    "min_",
    "stddev",
    "sum_",
    "time_since",
]
