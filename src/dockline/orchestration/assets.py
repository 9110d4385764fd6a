"""The assets: each calls the :mod:`dockline.pipeline` function its CLI command calls, and
attaches what the command would print (row counts, bundle id, verdicts) as Dagster metadata.

``offline_store`` → ``online_features``; ``offline_store`` → ``training_set`` → ``model``
(gate as an asset check) → ``loop_state``; ``deployment_health``, ``freshness``, ``drift`` and
``live_performance`` write the CLI's ``--json`` under ``<data-dir>/monitoring/results/``.
"""

# No `from __future__ import annotations`: Dagster resolves the config and resource
# parameters' annotations as objects when the definitions load.
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from dockline.core.contracts import DatasetMetadata
from dockline.core.errors import ConfigError
from dockline.core.time import parse_duration
from dockline.orchestration.resources import DocklineResource, parse_utc
from dockline.pipeline.platform import Platform

__all__ = [
    "ACTOR",
    "ALL_ASSETS",
    "DATA",
    "LOOP",
    "MONITORING",
    "RESULTS_DIR",
    "TRAINING",
    "LoopConfig",
    "ModelConfig",
    "OfflineStoreConfig",
    "TrainingSetConfig",
    "deployment_health",
    "drift",
    "freshness",
    "live_performance",
    "loop_state",
    "model",
    "offline_store",
    "online_features",
    "results_path",
    "training_set",
]

ACTOR = "dagster"
"""Who the alias history names for a training run or loop step started here."""
DATA, TRAINING, MONITORING, LOOP = "data", "training", "monitoring", "loop"
RESULTS_DIR = "results"
"""Monitoring results land in ``<data-dir>/monitoring/results/<asset>.json``."""


def results_path(platform: Platform, name: str) -> Path:
    """Where the ``name`` monitoring asset writes its result."""
    return platform.data.monitoring / RESULTS_DIR / f"{name}.json"


def _write_result(platform: Platform, name: str, payload: Mapping[str, Any]) -> Path:
    path = results_path(platform, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.replace(tmp, path)  # a reader sees the previous result or this one, never half
    return path


def _offline_partitions(
    platform: Platform, topics: Iterable[str]
) -> dict[str, tuple[int, int, str | None]]:
    """Per topic's offline table: (partitions, rows, newest partition) from its partition
    manifests."""
    found: dict[str, tuple[int, int, str | None]] = {}
    for topic in sorted(topics):
        source = platform.data.offline(topic)
        metas = [DatasetMetadata.read(m) for m in sorted(source.glob("date=*/_manifest.json"))]
        if metas:
            newest = metas[-1].partition or metas[-1].path
            found[topic] = (len(metas), sum(m.row_count for m in metas), newest)
    return found


# ------------------------------------------------------------------------------------- data


class OfflineStoreConfig(Config):
    """``offline_store``: optionally import an archive first (``dockline ingest --archive``)."""

    archive: str | None = Field(
        default=None, description="GBFS JSON directory or Parquet/CSV archive to import first."
    )
    source: str | None = Field(
        default=None, description="Source name of the archive (default derived from it)."
    )


@asset(
    group_name=DATA,
    description="The offline (Parquet) store: the event log sunk into date partitions"
    " (`dockline ingest` without the fetching), after importing `archive` when given.",
)
def offline_store(
    context: AssetExecutionContext, config: OfflineStoreConfig, dockline: DocklineResource
) -> MaterializeResult:
    """Import ``config.archive`` if given, then sink the log into the offline store."""
    from dockline.pipeline.ingest import ingest_archive, sink_offline

    platform = dockline.platform(existing=config.archive is None)
    metadata: dict[str, Any] = {}
    if config.archive is not None:
        summary = ingest_archive(platform, Path(config.archive), source=config.source)
        metadata |= {
            "received": summary.received,
            "accepted": summary.accepted,
            "dead_letters": MetadataValue.json(dict(summary.dead_letters)),
        }
        if summary.alarm:
            raise Failure(description=f"ingest alarm: {summary.alarm}", metadata=metadata)
    reports = sink_offline(platform)
    partitions = _offline_partitions(platform, reports)
    context.log.info(
        "offline store: "
        + ", ".join(f"{s}: {n} partitions, {r:,} rows" for s, (n, r, _) in partitions.items())
    )
    return MaterializeResult(
        metadata=metadata
        | {
            "rows_written": sum(r.records for r in reports.values()),
            "rows_written_by_topic": MetadataValue.json(
                {topic: r.records for topic, r in reports.items()}
            ),
            "partitions": sum(n for n, _, _ in partitions.values()),
            "rows": sum(r for _, r, _ in partitions.values()),
            "sources": MetadataValue.json(
                {
                    s: {"partitions": n, "rows": r, "newest": d}
                    for s, (n, r, d) in partitions.items()
                }
            ),
            "data_dir": MetadataValue.path(str(platform.data.root)),
        }
    )


@asset(
    group_name=DATA,
    deps=[offline_store],
    description="The online store's latest feature vector per entity"
    " (`dockline features materialize`).",
)
def online_features(dockline: DocklineResource) -> MaterializeResult:
    """Bring the online store up to date with the log."""
    from dockline.pipeline.features import materialize

    report = materialize(dockline.platform())
    return MaterializeResult(
        metadata={
            "events": report.events,
            "vectors": report.vectors,
            "entities": report.entities,
            "micro_batches": report.micro_batches,
            "seconds": round(report.seconds, 3),
        }
    )


# ---------------------------------------------------------------------------------- training


class TrainingSetConfig(Config):
    """``training_set``: a fixed range, or (default) the loop's fresh window at now."""

    start: str | None = Field(default=None, description="First spine time (ISO-8601, UTC).")
    end: str | None = Field(default=None, description="End of the spine (exclusive).")
    every: str | None = Field(
        default=None, description="Spine step, e.g. 15m (default monitor.loop.train_every)."
    )


@asset(
    group_name=TRAINING,
    deps=[offline_store],
    description="A point-in-time training set (`dockline dataset build`): by default over the"
    " freshest labelled data, `monitor.loop.train_window` ending one label horizon before now.",
)
def training_set(
    context: AssetExecutionContext, config: TrainingSetConfig, dockline: DocklineResource
) -> Output[str]:
    """Build the training set; its value is the dataset directory."""
    from dockline.pipeline.features import build_dataset
    from dockline.pipeline.loop import fresh_dataset

    platform = dockline.platform()
    now = platform.clock.now()
    if (config.start is None) != (config.end is None):
        raise ConfigError("training_set: give both start and end, or neither")
    if config.start is not None and config.end is not None:
        start = parse_utc(config.start, "training_set.start")
        end = parse_utc(config.end, "training_set.end")
        every = (
            parse_duration(config.every)
            if config.every
            else platform.config.monitor.loop.train_every
        )
        meta = build_dataset(
            platform,
            label=platform.config.train.label,
            start=start,
            end=end,
            every=every,
            out=platform.data.datasets / f"{ACTOR}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}",
        )
    else:
        meta = fresh_dataset(platform, now, prefix=ACTOR)
    extra = meta.extra
    context.log.info(f"training set {meta.dataset_name}: {meta.row_count:,} rows at {meta.path}")
    return Output(
        meta.path,
        metadata={
            "dataset_path": MetadataValue.path(meta.path),
            "rows": meta.row_count,
            "features": meta.feature_count or 0,
            "dataset_version": meta.dataset_version,
            "label": str(meta.target or platform.config.train.label),
            "label_rate": float(extra.get("label_rate") or 0.0),
            "label_unknown_rows": int(extra.get("label_unknown_rows") or 0),
            "time_range": f"{meta.time_range_start} .. {meta.time_range_end}",
        },
    )


class ModelConfig(Config):
    """``model``: as ``dockline train``'s options."""

    trials: int | None = Field(default=None, description="Optuna trials (default: config).")
    promote: bool = Field(
        default=False, description="Make the new version champion if it passes the gate."
    )


@asset(
    group_name=TRAINING,
    description="A trained, exported, gated and registered model version (`dockline train`):"
    " champion when there is none, challenger when it passes the gate against one.",
    check_specs=[
        AssetCheckSpec(
            "gate",
            asset="model",
            description="The promotion gate: beats the baselines and the champion, calibrated.",
        )
    ],
)
def model(
    context: AssetExecutionContext,
    config: ModelConfig,
    dockline: DocklineResource,
    training_set: str,
) -> MaterializeResult:
    """Train on ``training_set``; the gate's verdict is the ``gate`` check."""
    from dockline.pipeline.train import train_model

    summary = train_model(
        dockline.platform(existing=False),
        dataset=Path(training_set),
        n_trials=config.trials,
        promote=config.promote,
        actor=ACTOR,
    )
    gate = summary.gate
    context.log.info(
        f"{summary.model_name} v{summary.version} ({summary.bundle_id}): gate"
        f" {'passed' if gate.passed else 'failed: ' + '; '.join(gate.reasons)};"
        f" alias {summary.alias or '-'}"
    )
    return MaterializeResult(
        metadata={
            "model_name": summary.model_name,
            "version": summary.version,
            "bundle_id": summary.bundle_id,
            "bundle_path": MetadataValue.path(summary.bundle_path),
            "alias": summary.alias or "-",
            "selected": summary.selected,
            "gate_passed": gate.passed,
            "test_metrics": MetadataValue.json(summary.test_metrics),
            "rows": summary.rows,
            "already_registered": summary.already_registered,
            "report": MetadataValue.path(summary.report),
        },
        check_results=[
            AssetCheckResult(
                check_name="gate",
                passed=gate.passed,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "primary_metric": gate.primary_metric,
                    "value": gate.value,
                    "reasons": "; ".join(gate.reasons) or "passed",
                },
            )
        ],
    )


# -------------------------------------------------------------------------------- monitoring


@asset(
    group_name=MONITORING,
    description="Each deployment's health (healthy / degraded / unhealthy) over the lookback"
    " period (`dockline monitor health --json`).",
)
def deployment_health(dockline: DocklineResource) -> MaterializeResult:
    """Deployment health from the serving windows."""
    from dockline.pipeline import monitor

    platform = dockline.platform()
    if not platform.data.serving_metrics.is_dir():
        # nothing has been served yet: an empty verdict, not a failed monitoring run (the CLI
        # refuses the missing directory, which there may be a mistyped --windows)
        note = f"nothing served yet: no {platform.data.serving_metrics}"
        path = _write_result(
            platform, "deployment_health", {"deployments": [], "bad_lines": [], "note": note}
        )
        return MaterializeResult(
            metadata={"path": MetadataValue.path(str(path)), "deployments": 0, "note": note}
        )
    run = monitor.health(platform, at=dockline.moment())
    payload = {
        "at": run.at.isoformat(),
        "deployments": [s.model_dump(mode="json") for s in run.states],
        "bad_lines": [{"file": b.file, "line": b.line, "reason": b.reason} for b in run.bad_lines],
        "duplicates": run.duplicates,
    }
    path = _write_result(platform, "deployment_health", payload)
    statuses = {s.deployment_id: s.status for s in run.states}
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "deployments": len(run.states),
            "statuses": MetadataValue.json(statuses),
            "unhealthy": sum(s == "unhealthy" for s in statuses.values()),
            "degraded": sum(s == "degraded" for s in statuses.values()),
            "bad_lines": len(run.bad_lines),
        }
    )


@asset(
    group_name=MONITORING,
    deps=[offline_store, training_set],
    description="FRESH or STALE: offline partitions, datasets, served vectors and the"
    " champion's training data (`dockline monitor freshness --json`).",
)
def freshness(dockline: DocklineResource) -> MaterializeResult:
    """Freshness of the data directory's datasets, vectors and training data."""
    from dockline.pipeline import monitor

    platform = dockline.platform()
    run = monitor.freshness(platform, at=dockline.moment())
    payload = {"results": [r.model_dump(mode="json") for r in run.results], "notes": run.notes}
    path = _write_result(platform, "freshness", payload)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "results": len(run.results),
            "stale": MetadataValue.json(
                sorted(f"{r.kind}:{r.dataset_name}" for r in run.results if r.status != "FRESH")
            ),
            "notes": "; ".join(run.notes) or "-",
        }
    )


@asset(
    group_name=MONITORING,
    deps=[model],
    description="Feature and prediction drift of each served bundle against its baseline"
    " (`dockline monitor drift --json`).",
)
def drift(dockline: DocklineResource) -> MaterializeResult:
    """Drift of the prediction log's last window per bundle."""
    from dockline.pipeline import monitor

    platform = dockline.platform()
    runs = monitor.drift_live(platform, at=dockline.moment())
    top: dict[str, Any] = runs[0].to_dict() if runs else {"drift": False, "features": {}}
    path = _write_result(platform, "drift", {**top, "bundles": [r.to_dict() for r in runs]})
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "bundles": len(runs),
            "drift": bool(top["drift"]),
            "drifted": MetadataValue.json(
                {
                    r.bundle_id: sorted(n for n, f in r.dataset.features.items() if f.drift)
                    for r in runs
                }
            ),
        }
    )


@asset(
    group_name=MONITORING,
    deps=[model, offline_store],
    description="Live PR-AUC, Brier, ECE, precision and recall per bundle and window, with"
    " bootstrap intervals and a label-free estimate (`dockline monitor performance --json`).",
)
def live_performance(dockline: DocklineResource) -> MaterializeResult:
    """Live performance of the served predictions against the labels known so far."""
    from dockline.pipeline import monitor

    platform = dockline.platform()
    run = monitor.performance(platform, at=dockline.moment())
    payload = {
        "start": run.start.isoformat(),
        "end": run.end.isoformat(),
        "rows": run.rows,
        "windows": [{"bundle_id": b, **w.to_dict()} for b, w in run.windows],
        "reference": run.reference,
    }
    path = _write_result(platform, "live_performance", payload)
    latest: dict[str, float] = {}
    for bundle_id, window in run.windows:
        value = window.metrics.get("pr_auc")
        if value is not None and value.value is not None:
            latest[bundle_id] = value.value  # windows come in time order: the last one stays
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "predictions": run.rows,
            "windows": len(run.windows),
            "labelled": sum(w.labelled for _, w in run.windows),
            "latest_pr_auc": MetadataValue.json(latest),
        }
    )


# -------------------------------------------------------------------------------------- loop


class LoopConfig(Config):
    """``loop_state``: one cycle of ``dockline monitor run``."""

    serve_url: str | None = Field(
        default=None, description="The serving app (default monitor.loop.serve_url)."
    )
    train: bool = Field(
        default=False,
        description="Let the cycle train on its own triggers. Off: training is the training"
        " job's (the retraining sensor requests it) and the cycle adopts its challenger.",
    )


@asset(
    group_name=LOOP,
    deps=[model],
    description="One cycle of the retraining loop (`dockline monitor run --once`): a new"
    " challenger goes to shadow, then canary against the champion, then is promoted or rolled"
    " back; state in monitoring/loop.json, every step in the alias history.",
)
def loop_state(
    context: AssetExecutionContext, config: LoopConfig, dockline: DocklineResource
) -> MaterializeResult:
    """Advance the loop as far as the clock allows."""
    from dockline.pipeline.loop import control_for, run_cycle

    platform = dockline.platform()
    report = run_cycle(
        platform, control_for(platform, config.serve_url), at=dockline.moment(), train=config.train
    )
    for action in report.actions:
        context.log.info(f"{action['action']}: {action['reason']}")
    fired = [] if report.triggers is None else report.triggers.reasons
    return MaterializeResult(
        metadata={
            "model_name": report.model_name,
            "phase_before": report.phase_before,
            "phase": report.phase,
            "challenger": report.state.challenger if report.state else None,
            "triggers_fired": MetadataValue.json(fired),
            "analyses": len(report.analyses),
            "actions": MetadataValue.json(report.actions),
        }
    )


ALL_ASSETS = [
    offline_store,
    online_features,
    training_set,
    model,
    deployment_health,
    freshness,
    drift,
    live_performance,
    loop_state,
]
