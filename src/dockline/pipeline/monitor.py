"""Monitoring, wired for the product: the data directory's serving windows, prediction log,
offline manifests, registry and bundles, fed to the pure functions of :mod:`dockline.monitor`.

>>> run = health(Platform.open(".dockline"))  # doctest: +SKIP
>>> [s.status for s in run.states]  # doctest: +SKIP
['healthy']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core.bundle import load_bundle
from dockline.core.contracts import TS_TYPE, DatasetMetadata
from dockline.core.errors import ContractError, DocklineError, NotFoundError
from dockline.core.monitoring import CheckReport, DeploymentHealthState, FreshnessResult
from dockline.core.time import ensure_utc, to_micros
from dockline.monitor import (
    BadLine,
    DatasetDrift,
    compare,
    dataset_freshness,
    deployment_health,
    drift_frames,
    feature_matrix,
    numeric_columns,
    read_prediction_log,
    read_windows,
    reference_from_baseline,
    run_checks,
    since_freshness,
    sketch_many,
    vector_freshness,
)
from dockline.monitor.performance import PerformanceWindow, live_performance
from dockline.pipeline.platform import Platform

__all__ = [
    "DriftRun",
    "FreshnessRun",
    "HealthRun",
    "PerformanceRun",
    "check",
    "drift_live",
    "drift_tables",
    "freshness",
    "health",
    "performance",
]


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
    # -- lineage: an OpenLineage run event (never fails the run) --
    from dockline.pipeline.lineage import record_monitor

    record_monitor(platform, "health", at=when, details={s.deployment_id: s.status for s in states})
    # -- end lineage --
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
        found.extend(sorted(platform.data.datasets.rglob("_metadata.json")))  # built datasets
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
    # -- lineage: an OpenLineage run event (never fails the run) --
    from dockline.pipeline.lineage import record_monitor

    record_monitor(
        platform,
        "freshness",
        at=when,
        details={f"{r.kind}:{r.dataset_name}": r.status for r in results},
    )
    # -- end lineage --
    return FreshnessRun(results, notes)


def _champion_training_data(platform: Platform, when: datetime) -> FreshnessResult | str:
    """The champion's training data age (its newest test row), or why there is none."""
    from dockline.pipeline.features import load_plan
    from dockline.pipeline.train import has_registry, model_name_for, open_registry

    config = platform.config
    if not has_registry(platform):
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


# ------------------------------------------------------------------------------------- drift


@dataclass(frozen=True, slots=True)
class DriftRun:
    """Drift of one bundle's live inputs and predictions over one window."""

    bundle_id: str
    model_name: str
    model_version: int
    window_start: datetime
    window_end: datetime
    rows: int
    result: DatasetDrift
    """Per-feature verdicts over ``window``."""
    dataset: DatasetDrift
    """The verdicts over the trailing ``dataset_window`` (merged sketches)."""
    dataset_start: datetime
    dataset_rows: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``drift`` and ``share`` are the dataset-level verdict (over the dataset
        window), ``features`` and ``prediction`` the last window's; then bundle and windows."""
        window = self.result.to_dict()
        return {
            **window,
            "drift": self.dataset.drift,
            "share": self.dataset.share,
            "bundle_id": self.bundle_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "rows": self.rows,
            "window_drift": self.result.drift,
            "window_share": self.result.share,
            "dataset_window": {
                "start": self.dataset_start.isoformat(),
                "rows": self.dataset_rows,
                "drifted": sorted(n for n, f in self.dataset.features.items() if f.drift),
            },
        }


def drift_tables(platform: Platform, reference: Path, current: Path) -> DatasetDrift:
    """Drift of ``current`` against ``reference`` (Parquet files; their shared numeric columns)."""
    frames = []
    for path in (reference, current):
        try:
            frames.append(numeric_columns(pq.read_table(path)))
        except FileNotFoundError:
            raise NotFoundError("no such Parquet file", where=str(path)) from None
        except (OSError, pa.ArrowInvalid) as exc:
            raise ContractError(f"not a readable Parquet file: {exc}", where=str(path)) from exc
    config = platform.config.monitor.drift
    reference_columns = {k: v for k, v in frames[0].items() if k not in config.exclude}
    return drift_frames(reference_columns, frames[1], config)


def drift_live(
    platform: Platform,
    *,
    window: timedelta | None = None,
    dataset_window: timedelta | None = None,
    at: datetime | None = None,
) -> list[DriftRun]:
    """Drift per bundle of the prediction log before ``at`` against each bundle's drift
    baseline, most rows first: per-feature verdicts over the last ``window``, the dataset-level
    verdict over the trailing ``dataset_window`` (defaults from ``[monitor.drift]``).

    The sketches are built once per hour-sized window and merged, so the dataset window costs
    its rows once, not once per verdict.
    """
    config = platform.config.monitor.drift
    span = window or config.window
    whole = max(dataset_window or config.dataset_window, span)
    end = _now(platform, at)
    start, first = end - span, end - whole
    table = read_prediction_log(
        platform.data.serving_predictions,
        start=first,
        end=end,
        columns=["bundle_id", "model_name", "model_version", "features", "probability"],
    )
    runs: list[DriftRun] = []
    if table.num_rows == 0:
        return runs
    ids = table["bundle_id"].to_numpy(zero_copy_only=False)
    times = pc.cast(table["logged_at"].cast(TS_TYPE), pa.int64()).to_numpy()
    # Window 1 is the last `span`, window 0 the rest of the dataset window.
    recent = (times >= to_micros(start)).astype(np.intp)
    for bundle_id in sorted(set(ids.tolist())):
        mask = ids == bundle_id
        if not recent[mask].any():
            continue  # this bundle served in the dataset window but not in the last window
        rows = table.filter(pa.array(mask))
        which = recent[mask]
        bundle = load_bundle(platform.data.bundles / bundle_id)
        baseline = bundle.drift_baseline()
        names = bundle.manifest.features
        matrix = feature_matrix(rows, len(names))
        column = {name: i for i, name in enumerate(names)}
        refs = [
            reference_from_baseline(fb, categorical_max_values=config.categorical_max_values)
            for fb in baseline.features
            if fb.name in column and fb.bin_counts and fb.name not in config.exclude
        ]
        parts = {r.name: sketch_many(r, matrix[:, column[r.name]], which, 2) for r in refs}
        prediction = whole_prediction = None
        if baseline.prediction is not None and baseline.prediction.bin_counts:
            ref = reference_from_baseline(baseline.prediction, categorical_max_values=0)
            probs = rows["probability"].to_numpy(zero_copy_only=False).astype(np.float64)
            older, last = sketch_many(ref, probs, which, 2)
            prediction, whole_prediction = (ref, last), (ref, older.merge(last))
        last_window = compare(
            refs, {n: p[1] for n, p in parts.items()}, config, prediction=prediction
        )
        dataset = compare(
            refs,
            {n: p[0].merge(p[1]) for n, p in parts.items()},
            config,
            prediction=whole_prediction,
        )
        runs.append(
            DriftRun(
                bundle_id=bundle_id,
                model_name=str(rows["model_name"][0]),
                model_version=int(rows["model_version"][0].as_py()),
                window_start=start,
                window_end=end,
                rows=int(which.sum()),
                result=last_window,
                dataset=dataset,
                dataset_start=first,
                dataset_rows=rows.num_rows,
            )
        )
    runs.sort(key=lambda r: (-r.rows, r.bundle_id))
    # -- lineage: an OpenLineage run event (never fails the run) --
    from dockline.pipeline.lineage import record_monitor

    record_monitor(platform, "drift", at=end, details={r.bundle_id: r.dataset.drift for r in runs})
    # -- end lineage --
    return runs


# ------------------------------------------------------------------------------- performance


@dataclass(frozen=True, slots=True)
class PerformanceRun:
    """Live performance per bundle and window, with the bundle's test metrics beside it."""

    windows: list[tuple[str, PerformanceWindow]]
    reference: dict[str, dict[str, float]]
    """Per bundle id: the test-split metrics in its manifest."""
    start: datetime
    end: datetime
    rows: int


def _labels_for(platform: Platform, rows: pa.Table, at: datetime) -> npt.NDArray[np.float64]:
    """The plan's label at each row's (entity, logged_at), NaN until ``label_available_at``
    has passed at ``at`` (or where the offline store cannot say)."""
    from dockline.pipeline.features import load_plan, offline_executor

    plan = load_plan(platform)
    label = platform.config.train.label
    spine = pa.table({plan.key: rows["entity"], "as_of": rows["logged_at"].cast(TS_TYPE)})
    unique = spine.group_by([plan.key, "as_of"]).aggregate([])
    with offline_executor(platform, plan) as offline:
        known = offline.features(unique, labels=True).select(
            [plan.key, "as_of", label, "label_available_at"]
        )
    ready = pc.and_(
        pc.is_valid(known[label]),
        pc.less_equal(known["label_available_at"], pa.scalar(at, type=TS_TYPE)),
    )
    known = known.filter(ready).select([plan.key, "as_of", label])
    positions = spine.append_column("_row", pa.array(np.arange(spine.num_rows)))
    joined = positions.join(known, [plan.key, "as_of"], join_type="inner")
    out = np.full(spine.num_rows, np.nan)
    idx = joined["_row"].to_numpy()
    out[idx] = joined[label].cast(pa.float64()).to_numpy(zero_copy_only=False)
    return out


def performance(
    platform: Platform,
    *,
    window: timedelta | None = None,
    lookback: timedelta = timedelta(days=1),
    at: datetime | None = None,
) -> PerformanceRun:
    """PR-AUC, Brier, ECE, precision and recall per bundle and ``window`` (default
    ``[monitor.drift] window``) of the served predictions of the last ``lookback`` before
    ``at``, against the labels known at ``at``; a CBPE estimate for every window.
    """
    end = _now(platform, at)
    start = end - lookback
    span = window or platform.config.monitor.drift.window
    rows = read_prediction_log(
        platform.data.serving_predictions,
        start=start,
        end=end,
        columns=["entity", "bundle_id", "model_version", "probability", "served", "source"],
        exclude_models=_companions(platform),  # judged on the main model's label
    )
    if rows.num_rows:
        rows = rows.filter(
            pc.and_(pc.equal(rows["source"], "model"), pc.is_valid(rows["probability"]))
        )
    windows: list[tuple[str, PerformanceWindow]] = []
    reference: dict[str, dict[str, float]] = {}
    if rows.num_rows == 0:
        return PerformanceRun(windows, reference, start, end, 0)
    labels = _labels_for(platform, rows, end)
    ids = rows["bundle_id"].to_numpy(zero_copy_only=False)
    times = pc.cast(rows["logged_at"].cast(TS_TYPE), pa.int64()).to_numpy()
    span_us = int(span / timedelta(microseconds=1))
    for bundle_id in sorted(set(ids.tolist())):
        mask = ids == bundle_id
        manifest = load_bundle(platform.data.bundles / bundle_id).manifest
        reference[bundle_id] = dict(manifest.metrics)
        subset = rows.filter(pa.array(mask))
        for result in live_performance(
            subset["model_version"].to_numpy(),
            times[mask] // span_us * span_us,
            subset["probability"].to_numpy(zero_copy_only=False),
            labels[mask],
            threshold=manifest.threshold.threshold,
        ):
            windows.append((bundle_id, result))
    # -- lineage: an OpenLineage run event (never fails the run) --
    from dockline.pipeline.lineage import record_monitor

    record_monitor(
        platform, "performance", at=end, details={"rows": rows.num_rows, "windows": len(windows)}
    )
    # -- end lineage --
    return PerformanceRun(windows, reference, start, end, rows.num_rows)


def _companions(platform: Platform) -> tuple[str, ...]:
    """The serving app's companion models (they log beside the main one)."""
    from dockline.pipeline.serve import companion_names

    if not platform.config.serve.companions:
        return ()
    return companion_names(platform)
