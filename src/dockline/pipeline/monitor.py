"""Monitoring, wired for the product: the data directory's serving windows, prediction log,
offline manifests, registry and bundles, fed to the pure functions of :mod:`dockline.monitor`.

>>> run = health(Platform.open(".dockline"))  # doctest: +SKIP
>>> [s.status for s in run.states]  # doctest: +SKIP
['healthy']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dockline.core.contracts import DatasetMetadata
from dockline.core.monitoring import CheckReport, DeploymentHealthState, FreshnessResult
from dockline.core.time import ensure_utc
from dockline.monitor import (
    BadLine,
    dataset_freshness,
    deployment_health,
    read_windows,
    run_checks,
)
from dockline.pipeline.platform import Platform

__all__ = ["FreshnessRun", "HealthRun", "check", "freshness", "health"]


@dataclass(frozen=True, slots=True)
class HealthRun:
    """Deployment health states, and what reading the windows ran into."""

    states: list[DeploymentHealthState]
    bad_lines: list[BadLine]
    duplicates: int
    files: int
    windows_dir: Path
    at: datetime


def _now(platform: Platform, at: datetime | None) -> datetime:
    return ensure_utc(at) if at is not None else platform.clock.now()


def health(
    platform: Platform,
    *,
    windows_dir: Path | None = None,
    at: datetime | None = None,
    deployment: str | None = None,
) -> HealthRun:
    """Each deployment's health at ``at`` (default now) from ``windows_dir`` (default the data
    directory's ``serving/metrics``) with ``[monitor.health]``'s thresholds.
    """
    root = windows_dir or platform.data.serving_metrics
    when = _now(platform, at)
    scan = read_windows(root)
    states = deployment_health(
        scan.windows, platform.config.monitor.health, when, deployment=deployment
    )
    return HealthRun(
        states=states,
        bad_lines=scan.bad_lines,
        duplicates=scan.duplicates,
        files=scan.files,
        windows_dir=root,
        at=when,
    )


@dataclass(frozen=True, slots=True)
class FreshnessRun:
    """Freshness results, and the sources that had nothing to judge (with why)."""

    results: list[FreshnessResult]
    notes: list[str] = field(default_factory=list)


def _latest_manifests(platform: Platform) -> list[Path]:
    """The newest partition manifest of every offline source, and every dataset manifest."""
    found: list[Path] = []
    offline = platform.data.root / "offline"
    if offline.is_dir():
        for source in sorted(p for p in offline.iterdir() if p.is_dir()):
            dates = sorted(source.glob("date=*/_manifest.json"))
            if dates:
                found.append(dates[-1])
    if platform.data.datasets.is_dir():
        found.extend(sorted(platform.data.datasets.rglob("_manifest.json")))
    return found


def freshness(
    platform: Platform, *, metadata: Path | None = None, at: datetime | None = None
) -> FreshnessRun:
    """Freshness at ``at`` of ``metadata`` alone, or of the data directory: the newest offline
    partition of each source, each built dataset, the served vectors of the last
    ``online_lookback`` and the champion's training data.
    """
    config = platform.config.monitor.freshness
    when = _now(platform, at)
    if metadata is not None:
        meta = DatasetMetadata.read(metadata)
        return FreshnessRun([dataset_freshness(meta, when, config.threshold_seconds)])
    results = [
        dataset_freshness(DatasetMetadata.read(path), when, config.threshold_seconds)
        for path in _latest_manifests(platform)
    ]
    notes = [] if results else ["no dataset manifests under offline/ or datasets/"]
    return FreshnessRun(results, notes)


def check(metadata: Path) -> CheckReport:
    """Seed 003's five checks over a metadata file."""
    return run_checks(metadata)
