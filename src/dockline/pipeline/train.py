"""``dockline train`` and ``dockline models``: the P4 stage wired to the data directory.

One run: load a training set → train, calibrate, threshold and evaluate every candidate and
baseline (``dockline.train``) → export the selected candidate as an ONNX bundle (refused unless
ONNX matches the native model) → score the current champion on the same test window → the
promotion gate → MLflow runs, a registered version carrying the gate's verdict → aliases.

The label is ``--label``, else the one the dataset was built for; the model is named after it.
A bundle that is already registered (same data, config and seed give the same bytes) is not
registered again: the run returns that version and says so.

A version that passes the gate becomes ``champion`` when there is none yet (or ``promote`` is
asked for) and ``challenger`` otherwise; promoting a challenger later is ``dockline models
promote``, which the registry refuses for a version whose verdict failed.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dockline import __version__
from dockline.core.bundle import Bundle, BundleScorer, Lineage, load_bundle
from dockline.core.config import TrainConfig
from dockline.core.contracts import (
    DatasetMetadata,
    GateVerdict,
    ModelVersion,
    PromotionEvent,
    TrainingMetadata,
)
from dockline.core.errors import ConfigError, ContractError
from dockline.core.time import from_micros
from dockline.pipeline.platform import Platform
from dockline.train import CHALLENGER, CHAMPION, MlflowRegistry
from dockline.train.data import METADATA_FILE, TrainingData, load_training_set
from dockline.train.evaluate import HIGHER_IS_BETTER, metric
from dockline.train.export import HOURS_PER_WEEK, HourOfWeekRates, build_bundle
from dockline.train.gate import evaluate_gate
from dockline.train.mlflow_log import log_candidate_run
from dockline.train.report import write_report
from dockline.train.slices import PERSISTENCE, compare_slices
from dockline.train.trainer import TrainOutcome, train_candidates

__all__ = [
    "TrainSummary",
    "current_actor",
    "export_bundle",
    "has_registry",
    "history",
    "model_name_for",
    "open_registry",
    "promote",
    "rollback",
    "train_model",
]


@dataclass(kw_only=True)
class TrainSummary:
    """What ``dockline train`` did (printed, and ``--json``)."""

    model_name: str
    version: int
    bundle_id: str
    bundle_path: str
    selected: str
    primary_metric: str
    gate: GateVerdict
    alias: str | None
    """The alias the version holds after the run (``champion``, ``challenger``), or None."""
    test_metrics: dict[str, float]
    candidates: dict[str, dict[str, float]]
    baselines: dict[str, dict[str, float]]
    report: str
    run_ids: dict[str, str]
    dataset: str
    rows: int
    """Rows trained and evaluated on: those with a known label (after ``train.max_rows``)."""
    seconds: float
    reproducible: bool | None = None
    parity_max_abs_diff: float = 0.0
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per split: time range, rows, stations, label rate, weekend share and flags."""
    label: str = ""
    """The label trained: ``--label``, else the one the dataset was built for."""
    validation: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each trained candidate's validation metrics (what the selection used)."""
    why_selected: str = ""
    already_registered: bool = False
    """True when this very bundle was registered before: ``version`` is that version and
    nothing new was registered (no duplicate version of the same bytes)."""
    dataset_hash: str = ""
    unlabeled_rows: int = 0
    """Rows of the dataset left out because their label was unknown at build time."""
    int8: dict[str, Any] | None = None
    """The INT8 variant's parity gate (``train.quantize = "int8"``): status, reason, measured
    max and mean |Δp|; None when not asked for."""
    slices: dict[str, Any] = field(default_factory=dict)
    """The selected candidate's slice table (beside persistence and the champion) the gate
    judged; see :mod:`dockline.train.slices`."""


def has_registry(platform: Platform) -> bool:
    """Whether a registry may hold models: a configured server store, or the SQLite file exists.

    Lets read-only callers (monitors, sensors) skip creating and migrating a local database.
    """
    return platform.config.registry.tracking_uri is not None or platform.data.mlflow_db.exists()


def open_registry(platform: Platform) -> MlflowRegistry:
    """The data directory's model registry (MLflow; ``[registry] tracking_uri`` or SQLite)."""
    return MlflowRegistry.for_data_dir(
        platform.data, platform.clock, tracking_uri=platform.config.registry.tracking_uri
    )


def model_name_for(config: TrainConfig, project: str, label: str) -> str:
    """The registered model name: configured, else ``<project>-<label>``."""
    return config.model_name or f"{project}-{label}"


def _config(platform: Platform, data: TrainingData, n_trials: int | None) -> TrainConfig:
    """The train section, for the label being trained."""
    update: dict[str, Any] = {"label": data.label}
    if n_trials is not None:
        update["n_trials"] = n_trials
    return platform.config.train.model_copy(update=update)


def _label(platform: Platform, dataset: Path, label: str | None) -> str | None:
    """``--label``; else the dataset's own label (None: let the loader read it).

    A ``train.label`` set in dockline.toml that disagrees with the dataset is refused rather
    than silently overridden either way.
    """
    if label is not None:
        return label
    config = platform.config.train
    if "label" not in config.model_fields_set:
        return None
    directory = dataset if dataset.is_dir() else dataset.parent
    built_for = DatasetMetadata.read(directory / METADATA_FILE).target
    if built_for is not None and built_for != config.label:
        raise ConfigError(
            f"the dataset was built for {built_for!r} but dockline.toml sets train.label ="
            f" {config.label!r}; pass --label to choose",
            where="train.label",
        )
    return config.label


def _hour_of_week(data: TrainingData, outcome: TrainOutcome) -> HourOfWeekRates | None:
    """The train split's label rate per hour of week, for serving's stale-feature fallback."""
    hour, day = data.column("hour_of_day"), data.column("day_of_week")
    if hour is None or day is None:
        return None
    rows = outcome.splits.train.rows
    h, d, y = hour[rows], day[rows], data.y[rows].astype(np.float64)
    ok = ~(np.isnan(h) | np.isnan(d))
    how = (d[ok] * 24 + h[ok]).astype(np.int64)
    sums = np.bincount(how, weights=y[ok], minlength=HOURS_PER_WEEK)[:HOURS_PER_WEEK]
    counts = np.bincount(how, minlength=HOURS_PER_WEEK)[:HOURS_PER_WEEK]
    overall = float(y.mean()) if y.size else 0.0
    rates = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    return HourOfWeekRates(
        global_rate=round(overall, 10), hour_of_week=[round(float(r), 10) for r in rates]
    )


def export_bundle(
    root: Path,
    data: TrainingData,
    outcome: TrainOutcome,
    config: TrainConfig,
    candidate: str | None = None,
) -> Bundle:
    """Export the selected model (or another trained ``candidate``) as a verified bundle."""
    best = outcome.best if candidate is None else outcome.candidates[candidate]
    assert best.estimator is not None
    project = str(data.metadata.extra.get("project") or "project")
    splits = outcome.splits
    train_rows = splits.train.rows
    return build_bundle(
        root,
        estimator=best.estimator,
        features=outcome.features,
        x_test=outcome.test_X,
        x_train=outcome.train_X,
        train_scores=None,
        project=project,
        model_name=model_name_for(config, project, data.label),
        label=data.label,
        candidate=best.name,
        params=best.params,
        calibration=best.calibration,
        threshold=best.threshold,
        lineage=Lineage(
            dataset_name=data.metadata.dataset_name,
            dataset_hash=outcome.dataset_hash,
            plan_hash=str(data.metadata.extra.get("plan_hash") or ""),
            config_hash=outcome.config_hash,
            code_version=__version__,
            seed=outcome.seed,
        ),
        metrics=best.test_metrics,
        train_start=from_micros(int(data.as_of_us[train_rows].min())),
        test_end=from_micros(int(data.as_of_us[splits.test.rows].max())),
        tolerance=config.parity_tolerance,
        hour_of_week=_hour_of_week(data, outcome),
        int8=(config.int8_max_abs_diff, config.int8_mean_abs_diff)
        if config.quantize == "int8"
        else None,
    )


def _champion_scores(
    registry: MlflowRegistry, name: str, outcome: TrainOutcome
) -> tuple[int, npt.NDArray[np.float64]] | None:
    """The current champion's probabilities on this run's test window, or None.

    The champion is scored by its own bundle (its ONNX model and calibration) on the new test
    split, so the gate compares like with like. A champion needing features this dataset lacks
    cannot be compared here; that is an error, not a silent pass.
    """
    current = registry.resolve(name, CHAMPION)
    if current is None:
        return None
    bundle = load_bundle(Path(current.bundle_path))
    wanted = bundle.manifest.features
    index = {f: i for i, f in enumerate(outcome.features)}
    missing = [f for f in wanted if f not in index]
    if missing:
        raise ContractError(
            f"the champion (version {current.version}) needs features this training set lacks:"
            f" {', '.join(missing[:5])}",
            reason="feature_mismatch",
            where=name,
        )
    columns = np.ascontiguousarray(outcome.test_X[:, [index[f] for f in wanted]])
    return current.version, np.asarray(BundleScorer(bundle).score(columns), dtype=np.float64)


def _slice_table(
    outcome: TrainOutcome,
    config: TrainConfig,
    champion: tuple[int, npt.NDArray[np.float64]] | None,
) -> dict[str, Any]:
    """The selected candidate's slice table beside persistence and, when there is one, the
    champion (scored on the same test rows)."""
    best = outcome.best
    persistence = outcome.baselines[PERSISTENCE]
    assert best.test_p is not None and persistence.test_p is not None
    models = {best.name: best.test_p, PERSISTENCE: persistence.test_p}
    if champion is not None:
        models[f"champion v{champion[0]}"] = champion[1]
    assert outcome.test_station_ids is not None
    return compare_slices(
        outcome.test_y,
        outcome.test_station_ids,
        outcome.slice_masks,
        models,
        candidate=best.name,
        config=config.slices,
        seed=config.seed,
    )


def train_model(
    platform: Platform,
    *,
    dataset: Path,
    label: str | None = None,
    n_trials: int | None = None,
    progress: bool = False,
    check_reproducible: bool = False,
    promote: bool = False,
    actor: str | None = None,
) -> TrainSummary:
    """Train on ``dataset``, export, gate and register; see the module docstring."""
    began = time.perf_counter()
    started_at = platform.clock.now()
    directory = dataset if dataset.is_dir() else dataset.parent
    if not (directory / METADATA_FILE).is_file():
        # what the user typed names no dataset: a usage error, not a broken artifact
        raise ConfigError(
            f"no dataset here (no {METADATA_FILE}); build one with `dockline dataset build`"
            " (DatasetMetadata missing)",
            reason="not_found",
            where=str(dataset),
        )
    max_rows = platform.config.train.max_rows
    data = load_training_set(dataset, _label(platform, dataset, label), max_rows=max_rows)
    config = _config(platform, data, n_trials)
    project = str(data.metadata.extra.get("project") or "project")
    name = model_name_for(config, project, data.label)
    run_key = hashlib.sha256(
        (data.metadata.content_hash + config.model_dump_json()).encode()
    ).hexdigest()[:12]
    out_dir = platform.data.root / "runs" / f"{name}-{run_key}"
    platform.data.mlruns.mkdir(parents=True, exist_ok=True)
    # a shared study (``[train] tuning_storage``, e.g. PostgreSQL) or the data dir's own
    storage = config.tuning_storage or f"sqlite:///{platform.data.tuning_db.resolve()}"
    outcome = train_candidates(data, config, storage=storage, out_dir=out_dir, progress=progress)
    bundle = export_bundle(platform.data.bundles, data, outcome, config)

    reproducible: bool | None = None
    if check_reproducible:
        with tempfile.TemporaryDirectory(prefix="dockline-repro-") as tmp:
            again = train_candidates(
                data, config, storage=f"sqlite:///{Path(tmp) / 'optuna.db'}", out_dir=Path(tmp)
            )
            reproducible = export_bundle(Path(tmp) / "bundles", data, again, config).bundle_id == (
                bundle.bundle_id
            )
        if not reproducible:
            raise ContractError(
                "a second run with the same dataset, config and seed gave a different bundle",
                reason="not_reproducible",
                where=str(dataset),
            )

    registry = open_registry(platform)
    best = outcome.best
    primary = outcome.primary_metric
    same = next((v for v in registry.versions(name) if v.bundle_id == bundle.bundle_id), None)
    if same is not None:
        # the very bytes are registered already: another version would be a duplicate
        if same.gate is not None:
            verdict, slices = same.gate, _slice_table(outcome, config, None)
        else:
            verdict, slices = _verdict(registry, name, outcome, config)
        version, alias, run_ids = same, (same.aliases[0] if same.aliases else None), {}
        # aliases are not moved here: `dockline models promote` promotes a registered version
    else:
        verdict, slices = _verdict(registry, name, outcome, config)
        run_ids = {
            result.name: log_candidate_run(
                registry.tracking_uri,
                name,
                result.name,
                result.params,
                result.test_metrics,
                result.report_dir,
                dataset,
                data.metadata.content_hash,
                {"kind": result.kind, "selected": str(result.name == outcome.selected).lower()},
                # the data dir's artifacts/ for any store (a PostgreSQL one has no default
                # beside it: MLflow would write to the working directory)
                artifact_root=registry.artifact_root,
            )
            for result in (*outcome.candidates.values(), *outcome.baselines.values())
        }
        version = registry.register(name, bundle.path, run_id=run_ids[best.name], gate=verdict)
        alias = _place(registry, version, verdict, promote=promote, actor=actor or current_actor())
    summary = TrainSummary(
        model_name=name,
        version=version.version,
        bundle_id=bundle.bundle_id,
        bundle_path=str(bundle.path),
        selected=outcome.selected,
        primary_metric=primary,
        gate=verdict,
        alias=alias,
        test_metrics=best.test_metrics,
        candidates={n: r.test_metrics for n, r in outcome.candidates.items()},
        baselines=outcome.baseline_test_metrics(),
        report=str(best.report_dir / "report.html"),
        run_ids=run_ids,
        dataset=str(dataset),
        rows=data.n_rows,
        seconds=round(time.perf_counter() - began, 2),
        reproducible=reproducible,
        parity_max_abs_diff=bundle.manifest.parity.max_abs_diff,
        splits=outcome.composition,
        label=data.label,
        validation={n: r.validation_metrics for n, r in outcome.candidates.items()},
        why_selected=outcome.why_selected(),
        already_registered=same is not None,
        dataset_hash=data.metadata.content_hash,
        unlabeled_rows=data.unlabeled_rows,
        int8=bundle.manifest.int8.model_dump(mode="json") if bundle.manifest.int8 else None,
        slices=slices,
    )
    _finish_reports(outcome, summary, data)
    if same is None:
        _write_training_metadata(platform, summary, data, run_ids[best.name], started_at)
    _record_lineage(platform, summary, data, registry, new_version=same is None)
    return summary


# -- lineage: OpenLineage run events for training, registration and alias moves -----------------


def _record_lineage(
    platform: Platform,
    summary: TrainSummary,
    data: TrainingData,
    registry: MlflowRegistry,
    *,
    new_version: bool,
) -> None:
    from dockline.pipeline.lineage import (
        record_alias_move,
        record_registration,
        record_training,
    )

    details = {
        "model_name": summary.model_name,
        "selected": summary.selected,
        "gate_passed": summary.gate.passed,
        "gate_slices_worse": summary.gate.slices_flagged,
        "rows": summary.rows,
        **{f"test.{k}": v for k, v in summary.test_metrics.items()},
    }
    record_training(
        platform,
        dataset=data.metadata,
        bundle_id=summary.bundle_id,
        details=details,
        seconds=summary.seconds,
    )
    if not new_version:
        return
    record_registration(
        platform,
        model_name=summary.model_name,
        version=summary.version,
        bundle_id=summary.bundle_id,
        gate_passed=summary.gate.passed,
    )
    if summary.alias is not None:
        moves = [e for e in registry.history(summary.model_name) if e.action != "register"]
        if moves and moves[-1].to_version == summary.version:
            record_alias_move(platform, moves[-1])


def promote(
    platform: Platform, name: str, version: int, *, actor: str, reason: str
) -> PromotionEvent:
    """Make ``version`` of ``name`` champion (the gate permitting) and record the move."""
    from dockline.pipeline.lineage import record_alias_move

    event = open_registry(platform).promote(name, version, actor=actor, reason=reason)
    record_alias_move(platform, event)
    return event


def rollback(platform: Platform, name: str, *, actor: str, reason: str) -> PromotionEvent:
    """Point ``name``'s champion back at its previous version and record the move."""
    from dockline.pipeline.lineage import record_alias_move

    event = open_registry(platform).rollback(name, actor=actor, reason=reason)
    record_alias_move(platform, event)
    return event


# -- end lineage ---------------------------------------------------------------------------------


def _verdict(
    registry: MlflowRegistry, name: str, outcome: TrainOutcome, config: TrainConfig
) -> tuple[GateVerdict, dict[str, Any]]:
    """The gate's verdict and the slice table it judged (the champion scored once for both)."""
    primary = outcome.primary_metric
    best = outcome.best
    champion = _champion_scores(registry, name, outcome)
    slices = _slice_table(outcome, config, champion)
    verdict = evaluate_gate(
        primary,
        HIGHER_IS_BETTER[primary],
        best.test_metrics[primary],
        {n: r.test_metrics[primary] for n, r in outcome.baselines.items()},
        None if champion is None else (champion[0], metric(primary, outcome.test_y, champion[1])),
        best.test_metrics["ece"],
        config,
        slices=slices,
    )
    return verdict, slices


def _finish_reports(outcome: TrainOutcome, summary: TrainSummary, data: TrainingData) -> None:
    """Re-render every candidate's report with the run's story: what was selected and why,
    the gate's verdict, the registered version and the dataset with its hash."""
    registered = f"{summary.model_name} version {summary.version} (bundle {summary.bundle_id})"
    if summary.already_registered:
        registered += "; this bundle was registered before, nothing new registered"
    for result in (*outcome.candidates.values(), *outcome.baselines.values()):
        if result.report is None:
            continue
        chosen = result.name == outcome.selected
        report = result.report
        if chosen:
            # the table the gate judged: the candidate beside persistence and the champion
            report = dataclasses.replace(report, slices=summary.slices)
        run = {
            "selected": outcome.selected,
            "why": summary.why_selected,
            "gate": summary.gate.model_dump(mode="json") if chosen else None,
            "version": registered if chosen else "",
            "dataset": f"{data.metadata.dataset_name} ({summary.dataset})",
            "dataset_hash": summary.dataset_hash,
        }
        write_report(result.report_dir, dataclasses.replace(report, run=run))


def current_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _place(
    registry: MlflowRegistry,
    version: ModelVersion,
    verdict: GateVerdict,
    *,
    promote: bool,
    actor: str,
) -> str | None:
    if not verdict.passed:
        return None
    if promote or registry.resolve(version.name, CHAMPION) is None:
        registry.promote(
            version.name,
            version.version,
            actor=actor,
            reason="passed the promotion gate"
            + ("" if promote else " (no champion yet)")
            + verdict.slice_note(),
        )
        return CHAMPION
    registry.set_alias(
        version.name,
        CHALLENGER,
        version.version,
        actor=actor,
        reason="passed the promotion gate; awaiting promotion" + verdict.slice_note(),
        action="promote",
    )
    return CHALLENGER


def _write_training_metadata(
    platform: Platform,
    summary: TrainSummary,
    data: TrainingData,
    run_id: str,
    started_at: datetime,
) -> None:
    TrainingMetadata(
        run_id=run_id,
        model_name=summary.model_name,
        model_version=str(summary.version),
        input_dataset_name=data.metadata.dataset_name,
        input_dataset_version=data.metadata.dataset_version,
        started_at=started_at,
        completed_at=platform.clock.now(),
        metrics=summary.test_metrics,
        artifact_path=summary.bundle_path,
        bundle_id=summary.bundle_id,
        candidate=summary.selected,
    ).write(platform.data.lineage / "training" / f"{summary.model_name}-v{summary.version}.json")


def history(platform: Platform, name: str) -> list[PromotionEvent]:
    """The alias history of ``name``."""
    return open_registry(platform).history(name)
