"""What each time split is made of: rows, stations, label rate and weekend share.

A time-ordered split can land on an unrepresentative stretch — a test window that is mostly a
weekend measures weekend behaviour, whatever the headline says. The reports show each split's
composition and flag a split whose weekend share exceeds :data:`WEEKEND_FLAG`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from dockline.train.data import TrainingData
from dockline.train.splits import Splits

__all__ = ["WEEKEND_FLAG", "split_composition"]

WEEKEND_FLAG = 0.6
"""A split more than this share weekend rows is flagged (two of seven days is ~0.29)."""

_DAY_US = 86_400_000_000


def _weekend(data: TrainingData) -> npt.NDArray[np.bool_]:
    """Weekend rows: the project's calendar features when present (its time zone), else UTC."""
    flag = data.column("is_weekend")
    if flag is not None:
        return np.asarray(flag > 0.5)
    day = data.column("day_of_week")
    if day is not None:
        return np.asarray(day >= 5)
    # 1970-01-01 was a Thursday (Monday = 0 → 3)
    return np.asarray((data.as_of_us // _DAY_US + 3) % 7 >= 5)


def split_composition(data: TrainingData, splits: Splits) -> dict[str, dict[str, Any]]:
    """Per split: its time range, rows, stations, label rate, weekend share and flags."""
    weekend = _weekend(data)
    out: dict[str, dict[str, Any]] = {}
    for split in splits:
        rows = split.rows
        share = float(weekend[rows].mean()) if rows.size else 0.0
        flags = []
        if share > WEEKEND_FLAG:
            flags.append(f"{share:.0%} weekend")
        out[split.name] = {
            **split.describe(),
            "stations": int(np.unique(data.station_ids[rows]).size),
            "label_rate": round(float(data.y[rows].mean()), 6) if rows.size else 0.0,
            "weekend_share": round(share, 6),
            "flags": flags,
        }
    return out
