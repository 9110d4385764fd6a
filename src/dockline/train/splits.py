"""Time-ordered splits with an embargo, and rolling-origin folds: no label window crosses a cut.

The time range of ``as_of`` is cut into train / validation / calibration / test by the configured
fractions. At each cut ``b`` a row stays in the earlier split only if its label window
``(as_of, label_available_at]`` ends before ``b - embargo``; a row of the later split starts at
``as_of >= b``. So for any two consecutive splits::

    max(label_available_at of earlier) < min(as_of of later) - embargo

and the embargo is at least the label horizon, so neither labels nor the features computed from
the same window of events leak backwards or forwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from dockline.core.config import TrainConfig
from dockline.core.errors import ConfigError
from dockline.core.time import from_micros

__all__ = [
    "SPLIT_NAMES",
    "Fold",
    "SplitRange",
    "Splits",
    "make_splits",
    "resolve_embargo_us",
    "rolling_origin_folds",
]

SPLIT_NAMES = ("train", "validation", "calibration", "test")

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SplitRange:
    """One split's rows and the time span they cover (µs since the epoch)."""

    name: str
    rows: IntArray
    start_us: int
    """Cut where the split starts (inclusive) — not necessarily a row's ``as_of``."""
    end_us: int
    """Cut where the next split starts (exclusive); rows' labels end before ``end - embargo``."""
    first_as_of_us: int
    last_as_of_us: int
    last_label_us: int
    """Latest ``label_available_at`` of the split's rows."""

    @property
    def size(self) -> int:
        """Number of rows."""
        return int(self.rows.shape[0])

    def describe(self) -> dict[str, str | int]:
        """A JSON-able summary (ISO times in UTC)."""
        return {
            "first_as_of": from_micros(self.first_as_of_us).isoformat(),
            "last_as_of": from_micros(self.last_as_of_us).isoformat(),
            "last_label_available_at": from_micros(self.last_label_us).isoformat(),
            "rows": self.size,
        }


@dataclass(frozen=True, slots=True)
class Splits:
    """The four time-ordered splits and the embargo between them."""

    train: SplitRange
    validation: SplitRange
    calibration: SplitRange
    test: SplitRange
    embargo_us: int

    def __iter__(self) -> Iterator[SplitRange]:
        return iter((self.train, self.validation, self.calibration, self.test))

    def describe(self) -> dict[str, dict[str, str | int]]:
        """JSON-able time ranges and row counts per split."""
        return {s.name: s.describe() for s in self}


@dataclass(frozen=True, slots=True)
class Fold:
    """One rolling-origin fold: fit on everything before the cut, validate on the next block."""

    fit: IntArray
    valid: IntArray


def resolve_embargo_us(embargo: timedelta | None, horizon_us: int) -> int:
    """The embargo in µs: the configured one (≥ the horizon, else ConfigError) or the horizon."""
    if embargo is None:
        return horizon_us
    value = (embargo // timedelta(microseconds=1)) if embargo else 0
    if value < horizon_us:
        raise ConfigError(
            f"embargo must be at least the label horizon ({horizon_us / 60e6:g} min);"
            f" got {value / 60e6:g} min",
            where="train.embargo",
        )
    return int(value)


def _check_fractions(split: tuple[float, ...]) -> None:
    if len(split) != len(SPLIT_NAMES) or any(f <= 0 for f in split):
        raise ConfigError(
            f"split must be four positive fractions; got {list(split)}", where="train.split"
        )
    if abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must sum to 1; got {sum(split):g}", where="train.split")


def make_splits(
    as_of_us: IntArray,
    label_available_us: IntArray,
    config: TrainConfig,
    horizon_us: int,
) -> Splits:
    """Cut rows into train / validation / calibration / test by time, with the embargo.

    Raises ConfigError when the fractions are invalid, the embargo is shorter than the horizon,
    or a split ends up empty (the data is too short for the fractions and embargo).
    """
    _check_fractions(config.split)
    embargo = resolve_embargo_us(config.embargo, horizon_us)
    if as_of_us.size == 0:
        raise ConfigError("cannot split an empty training set", where="train.split")
    t0, t1 = int(as_of_us.min()), int(as_of_us.max()) + 1
    edges = [t0]
    acc = 0.0
    for f in config.split[:-1]:
        acc += f
        # Cuts on whole seconds: readable, and the same on every platform.
        edges.append(t0 + round((t1 - t0) * acc / 1e6) * 1_000_000)
    edges.append(t1)
    ranges: list[SplitRange] = []
    for i, name in enumerate(SPLIT_NAMES):
        start, end = edges[i], edges[i + 1]
        mask = (as_of_us >= start) & (as_of_us < end)
        if i < len(SPLIT_NAMES) - 1:
            mask &= label_available_us < end - embargo
        rows = np.flatnonzero(mask).astype(np.int64)
        if rows.size == 0:
            raise ConfigError(
                f"the {name} split is empty: the data spans {(t1 - t0) / 3.6e9:.1f} h, too short"
                f" for split {list(config.split)} with a {embargo / 3.6e9:g} h embargo",
                where="train.split",
            )
        ranges.append(
            SplitRange(
                name=name,
                rows=rows,
                start_us=start,
                end_us=end,
                first_as_of_us=int(as_of_us[rows].min()),
                last_as_of_us=int(as_of_us[rows].max()),
                last_label_us=int(label_available_us[rows].max()),
            )
        )
    train, validation, calibration, test = ranges
    return Splits(train, validation, calibration, test, embargo_us=embargo)


def rolling_origin_folds(
    as_of_us: IntArray,
    label_available_us: IntArray,
    rows: IntArray,
    n_folds: int,
    embargo_us: int,
) -> list[Fold]:
    """Expanding-window folds over ``rows`` (normally the train split), oldest first.

    The span is cut into ``n_folds + 1`` equal blocks; fold ``j`` fits on rows before block
    ``j`` whose labels end before the cut minus the embargo, and validates on block ``j``.
    """
    if n_folds < 1:
        raise ConfigError(f"cv_folds must be ≥ 1; got {n_folds}", where="train.cv_folds")
    t = as_of_us[rows]
    t0, t1 = int(t.min()), int(t.max()) + 1
    cuts = [t0 + round((t1 - t0) * k / (n_folds + 1)) for k in range(n_folds + 2)]
    folds: list[Fold] = []
    for j in range(1, n_folds + 1):
        cut, nxt = cuts[j], cuts[j + 1]
        fit = rows[(t < cut) & (label_available_us[rows] < cut - embargo_us)]
        valid = rows[(t >= cut) & (t < nxt)]
        if fit.size == 0 or valid.size == 0:
            raise ConfigError(
                f"rolling-origin fold {j} of {n_folds} is empty: the train split is too short"
                " for this many folds with the embargo",
                where="train.cv_folds",
            )
        folds.append(Fold(fit=fit, valid=valid))
    return folds
