"""The monitoring layer's output contracts (seed 003), beside the inputs in ``core.contracts``.

Seed 003 defines six contracts. Three are inputs written by other layers and already live in
:mod:`dockline.core.contracts` (``DatasetMetadata``, ``TrainingMetadata``,
``ServingMetricsWindow``); the three outputs are here: :class:`DeploymentHealthState`,
:class:`FreshnessResult` and :class:`CheckReport` (with its :class:`CheckResult` rows).

Each output reads and writes the seed's fields with the seed's names, types and order, so a file
the seed wrote loads here and a file written here carries every field the seed's readers expect.
dockline extends them only with fields placed *after* the seed's, each with a default, so the
seed's examples load unchanged (``extend, never rename``). Unlike the metadata inputs they carry
no ``schema_version``: the seed's outputs have none, and adding it would change their shape.

>>> FreshnessResult(dataset_name="d", dataset_version="v", freshness_seconds=1200.0,
...                 status="FRESH").status
'FRESH'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dockline.core.contracts import JsonModel, UtcDatetime

__all__ = [
    "HEALTH_CHECKS",
    "SEED_CHECKS",
    "CheckReport",
    "CheckResult",
    "DeploymentHealthState",
    "FreshnessResult",
    "FreshnessStatus",
    "HealthStatus",
    "MonitorOutput",
]

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
"""A deployment's health, worst last: ``unhealthy`` beats ``degraded`` beats ``healthy``."""

FreshnessStatus = Literal["FRESH", "STALE"]

HEALTH_CHECKS = (
    "staleness",
    "no_traffic",
    "missing_windows",
    "max_gap",
    "latency_p95",
    "latency_p99",
    "failure_rate",
    "rejection_rate",
)
"""The health checks in the seed's order; the first failing one decides the status."""

SEED_CHECKS = (
    "file_exists",
    "valid_json",
    "dataset_name_present",
    "dataset_version_present",
    "freshness_computable",
)
"""The seed's five metadata checks, in order."""


class MonitorOutput(JsonModel):
    """Base of the monitoring outputs: frozen, unknown fields refused, JSON on disk (no
    ``schema_version``: the seed's outputs have none)."""


class DeploymentHealthState(MonitorOutput):
    """One deployment's health over a lookback period (seed 003's contract, extended).

    ``detail`` names the check that decided the status (``"all checks passed"`` when none
    failed); rate checks judged on fewer requests than the minimum sample are listed in
    ``inconclusive`` and stated in ``detail`` instead of failing or passing.
    """

    deployment_id: str
    model_name: str
    model_version: str
    bundle_id: str
    input_dataset_name: str
    input_dataset_version: str
    status: HealthStatus
    evaluated_windows: int = Field(ge=0)
    latest_window_end: UtcDatetime | None
    missing_window_count: int = Field(ge=0)
    detail: str
    # -- dockline extensions (after the seed's fields, all defaulted) --
    failing_check: str | None = None
    """The first check that failed (one of :data:`HEALTH_CHECKS`); None when healthy."""
    inconclusive: list[str] = Field(default_factory=list)
    """Checks that could not be judged (too few requests), named as in :data:`HEALTH_CHECKS`."""
    evaluated_at: UtcDatetime | None = None
    lookback_seconds: float | None = None
    request_count: int | None = None
    """Requests in the evaluated windows."""


class FreshnessResult(MonitorOutput):
    """How old a dataset (or the online vectors, or a model's training data) is.

    ``status`` is ``FRESH`` iff ``freshness_seconds < threshold`` (default 1800 s). For online
    vectors ``freshness_seconds`` is the 95th percentile of the served vectors' ages and
    ``share_stale`` the fraction at or over the threshold.
    """

    dataset_name: str
    dataset_version: str
    freshness_seconds: float
    status: FreshnessStatus
    # -- dockline extensions --
    kind: Literal["dataset", "online_vectors", "training_data"] = "dataset"
    threshold_seconds: float | None = None
    evaluated_at: UtcDatetime | None = None
    reference_time: UtcDatetime | None = None
    """The time the age is measured from (``built_at``, the training data's end, ...)."""
    count: int | None = None
    share_stale: float | None = None
    age_p50_seconds: float | None = None
    age_max_seconds: float | None = None


class CheckResult(MonitorOutput):
    """One check's outcome."""

    check: str
    passed: bool
    detail: str = ""


class CheckReport(MonitorOutput):
    """The seed's checks over one metadata file, in order (seed 003)."""

    metadata_path: str
    all_passed: bool
    results: list[CheckResult]
