"""Freshness: how old a dataset, the served feature vectors and the champion's training data are.

Pure functions from metadata (or ages) and an evaluation time to a :class:`FreshnessResult`;
``status`` is ``FRESH`` iff the age is strictly below the threshold (seed 003: 1800 s).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt

from dockline.core.contracts import DatasetMetadata
from dockline.core.monitoring import FreshnessResult, FreshnessStatus
from dockline.core.time import ensure_utc

__all__ = ["dataset_freshness", "since_freshness", "vector_freshness"]


def _status(age: float, threshold: float) -> FreshnessStatus:
    return "FRESH" if age < threshold else "STALE"


def dataset_freshness(
    meta: DatasetMetadata, at: datetime, threshold_seconds: float = 1800.0
) -> FreshnessResult:
    """Age of a dataset from its ``built_at`` (seed 003's rule; seconds rounded to 0.1)."""
    return since_freshness(
        meta.dataset_name, meta.dataset_version, meta.built_at, at, threshold_seconds
    )


def since_freshness(
    name: str,
    version: str,
    since: datetime,
    at: datetime,
    threshold_seconds: float,
    *,
    kind: str = "dataset",
) -> FreshnessResult:
    """Age of anything stamped ``since`` (a build time, a training set's last row)."""
    at = ensure_utc(at)
    age = (at - ensure_utc(since)).total_seconds()
    return FreshnessResult.model_validate(
        {
            "dataset_name": name,
            "dataset_version": version,
            "freshness_seconds": round(age, 1),
            "status": _status(age, threshold_seconds),
            "kind": kind,
            "threshold_seconds": threshold_seconds,
            "evaluated_at": at,
            "reference_time": since,
        }
    )


def vector_freshness(
    ages_seconds: npt.ArrayLike,
    at: datetime,
    threshold_seconds: float,
    *,
    name: str = "online_vectors",
    version: str = "",
) -> FreshnessResult | None:
    """The served vectors' age distribution: p95 decides FRESH/STALE; None without ages.

    ``share_stale`` is the fraction of vectors at or over the threshold (what a decision
    policy would have had to refuse).
    """
    ages = np.asarray(ages_seconds, dtype=np.float64)
    ages = ages[np.isfinite(ages)]
    if ages.size == 0:
        return None
    p50, p95 = np.percentile(ages, [50, 95])
    return FreshnessResult(
        dataset_name=name,
        dataset_version=version,
        freshness_seconds=round(float(p95), 1),
        status=_status(float(p95), threshold_seconds),
        kind="online_vectors",
        threshold_seconds=threshold_seconds,
        evaluated_at=ensure_utc(at),
        count=int(ages.size),
        share_stale=round(float(np.mean(ages >= threshold_seconds)), 6),
        age_p50_seconds=round(float(p50), 1),
        age_max_seconds=round(float(ages.max()), 1),
    )
