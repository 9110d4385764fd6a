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

from dockline.core.bundle import load_bundle
from dockline.core.contracts import DatasetMetadata
from dockline.core.errors import DocklineError
from dockline.core.monitoring import CheckReport, DeploymentHealthState, FreshnessResult
from dockline.core.time import ensure_utc
from dockline.monitor import (
    BadLine,
    dataset_freshness,
    deployment_health,
    read_prediction_log,
    read_windows,
    run_checks,
    since_freshness,
    vector_freshness,
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
    table = read_prediction_log(
        platform.data.serving_predictions,
        start=when - config.online_lookback,
        end=when,
        columns=["feature_age_s", "served"],
    )
    served = table.filter(table["served"]) if table.num_rows else table
    ages = served["feature_age_s"].to_numpy(zero_copy_only=False) if served.num_rows else []
    vectors = vector_freshness(ages, when, config.threshold_seconds)
    if vectors is None:
        notes.append(f"no served vectors in the last {config.online_lookback}")
    else:
        results.append(vectors)
    trained = _champion_training_data(platform, when)
    if isinstance(trained, str):
        notes.append(trained)
    else:
        results.append(trained)
    return FreshnessRun(results, notes)


def _champion_training_data(platform: Platform, when: datetime) -> FreshnessResult | str:
    """The champion's training data age (its newest test row), or why there is none."""
    from dockline.pipeline.features import load_plan
    from dockline.pipeline.train import model_name_for, open_registry

    config = platform.config
    if not platform.data.mlflow_db.exists():
        return "no model registry yet (run `dockline train`)"
    try:
        name = config.serve.model_name or model_name_for(
            config.train, load_plan(platform).project, config.train.label
        )
    except DocklineError as exc:
        return f"no champion: {exc}"
    champion = open_registry(platform).resolve(name, "champion")
    if champion is None:
        return f"no champion for model {name}"
    manifest = load_bundle(Path(champion.bundle_path)).manifest
    return since_freshness(
        manifest.lineage.dataset_name,
        champion.bundle_id,
        manifest.test_end,
        when,
        config.monitor.freshness.training_max_age.total_seconds(),
        kind="training_data",
    )


def check(metadata: Path) -> CheckReport:
    """Seed 003's five checks over a metadata file."""
    return run_checks(metadata)
