"""Scoring a policy: the operator's KPIs from per-minute station states, and seed statistics.

The outage KPI is the one in Bay Area Bike Share's 2015 operating contract (KPI #12): a station
empty (or full) for more than 10 consecutive minutes between 06:00 and 22:00 costs $1 for each
minute beyond the tenth.

>>> s = OutageCounter(2, grace=2)
>>> for empty in ([1, 0], [1, 0], [1, 0], [0, 0]):
...     s.update(np.array(empty, dtype=bool), np.zeros(2, dtype=bool), in_window=True)
>>> s.outage_minutes
1
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = [
    "COST_PER_MINUTE",
    "OUTAGE_GRACE_MINUTES",
    "OUTAGE_HOURS",
    "OutageCounter",
    "summarize",
]

OUTAGE_GRACE_MINUTES = 10
OUTAGE_HOURS = (6, 22)  # local time, [start, end): the contract's window, not the service hours
COST_PER_MINUTE = 1.0  # USD


class OutageCounter:
    """Consecutive empty / full minutes per station; counts the minutes beyond ``grace``."""

    __slots__ = ("_empty", "_full", "grace", "outage_minutes")

    def __init__(self, n: int, grace: int = OUTAGE_GRACE_MINUTES) -> None:
        self._empty = np.zeros(n, dtype=np.int64)
        self._full = np.zeros(n, dtype=np.int64)
        self.grace = grace
        self.outage_minutes = 0

    def update(self, empty: np.ndarray, full: np.ndarray, *, in_window: bool) -> None:
        """One minute: ``empty`` / ``full`` masks; streaks run across the window's edges."""
        self._empty = (self._empty + 1) * empty
        self._full = (self._full + 1) * full
        if in_window:
            self.outage_minutes += int(np.count_nonzero(self._empty > self.grace))
            self.outage_minutes += int(np.count_nonzero(self._full > self.grace))


def summarize(values: list[float]) -> dict[str, float]:
    """Mean and 95 % t-interval over seeds (the interval collapses to the mean for one seed)."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean()) if arr.size else math.nan
    if arr.size < 2:
        return {"mean": mean, "low": mean, "high": mean}
    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return {"mean": mean, "low": mean - half, "high": mean + half}
