"""What the loop measures, read from the data directory: the triggers' signals (drift, live
performance, the champion's age) and the two sides of an analysis window (prediction log and
metrics windows). :mod:`dockline.pipeline.loop` decides with them.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.errors import DocklineError
from dockline.monitor import read_prediction_log, read_windows
from dockline.monitor.canary import Side
from dockline.monitor.triggers import Signals
from dockline.pipeline.platform import Platform

__all__ = ["champion_on", "failed_requests", "signals", "window_sides"]


# ------------------------------------------------------------------------------------ signals


def signals(platform: Platform, name: str, at: datetime, last_trained: datetime | None) -> Signals:
    """Drift, live performance and the champion's age, measured now (what cannot be: None)."""
    from dockline.core.bundle import load_bundle
    from dockline.pipeline.monitor import drift_live, performance
    from dockline.pipeline.train import has_registry, open_registry

    drift: bool | None = None
    drifted: tuple[str, ...] = ()
    try:
        runs = drift_live(platform, at=at)
    except DocklineError:
        runs = []
    # no registry yet: no champion. Measuring creates nothing (a sensor polling a fresh data
    # dir must not leave an MLflow database behind, nor pay for migrating one)
    champion = open_registry(platform).resolve(name, "champion") if has_registry(platform) else None
    mine = [r for r in runs if champion is not None and r.bundle_id == champion.bundle_id]
    if mine:
        drift = mine[0].dataset.drift
        drifted = tuple(sorted(n for n, f in mine[0].dataset.features.items() if f.drift))
    live, labelled, reference, trained_end = None, 0, None, None
    if champion is not None:
        manifest = load_bundle(Path(champion.bundle_path)).manifest
        reference = manifest.metrics.get("pr_auc")
        trained_end = manifest.test_end
        try:
            perf = performance(platform, at=at)
        except DocklineError:
            perf = None
        if perf is not None:
            values, weights = [], []
            for bundle_id, window in perf.windows:
                value = window.metrics.get("pr_auc")
                if (
                    bundle_id == champion.bundle_id
                    and value is not None
                    and value.value is not None
                ):
                    values.append(value.value)
                    weights.append(window.labelled)
                    labelled += window.labelled
            if weights and sum(weights):
                live = float(np.average(values, weights=weights))
    return Signals(
        at=at,
        drift=drift,
        drifted_features=drifted,
        live_pr_auc=live,
        labelled=labelled,
        reference_pr_auc=reference,
        training_data_end=trained_end,
        last_trained=last_trained,
    )


def _is_error(probabilities: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    with np.errstate(invalid="ignore"):
        bad: np.ndarray[Any, Any] = (
            ~np.isfinite(probabilities) | (probabilities < 0) | (probabilities > 1)
        )
    return bad


def window_sides(
    platform: Platform,
    start: datetime,
    end: datetime,
    champion: int | None,
    challenger: int,
    phase: str,
    at: datetime,
) -> tuple[Side, Side, set[str]]:
    """Champion and challenger in ``[start, end)`` (and the challenger's entities), from the
    prediction log and, in canary, the deployment's failed requests (which the log does not
    hold: a refused prediction is never served) counted against the challenger — the safe
    side: a canary is rolled back, never promoted, on failures nobody can attribute."""
    columns = ["entity", "role", "model_version", "probability", "latency_ms", "source"]
    rows = read_prediction_log(
        platform.data.serving_predictions,
        start=start,
        end=end,
        columns=columns,
        exclude_models=_companions(platform),
    )
    if rows.num_rows:
        rows = rows.filter(pc.equal(rows["source"], "model"))
    labels = np.full(rows.num_rows, np.nan)
    if rows.num_rows:
        from dockline.pipeline.monitor import _labels_for

        # no offline store to label from: live performance stays inconclusive
        with contextlib.suppress(DocklineError):
            labels = _labels_for(platform, rows, at)
    roles = rows["role"].to_numpy(zero_copy_only=False) if rows.num_rows else np.array([])
    versions = rows["model_version"].to_numpy(zero_copy_only=False) if rows.num_rows else None

    def side(mask: np.ndarray[Any, Any], extra_errors: int = 0) -> Side:
        picked = rows.filter(pa.array(mask)) if rows.num_rows else rows
        if picked.num_rows == 0:
            return Side.of(requests=extra_errors, errors=extra_errors)
        probs = picked["probability"].to_numpy(zero_copy_only=False).astype(np.float64)
        bad = _is_error(probs)
        return Side.of(
            requests=picked.num_rows + extra_errors,
            errors=int(bad.sum()) + extra_errors,
            latencies_ms=picked["latency_ms"].to_numpy(zero_copy_only=False),
            probabilities=probs[~bad],
            labels=labels[mask][~bad],
        )

    if rows.num_rows:
        champ_mask = roles == "champion"
        if champion is not None and versions is not None:
            champ_mask &= versions == champion
        chal_mask = np.isin(roles, ["shadow", "canary"]) & (versions == challenger)
    else:
        champ_mask = chal_mask = np.zeros(0, dtype=bool)
    failures = failed_requests(platform, start, end) if phase == "canary" else 0
    return (
        side(champ_mask),
        side(chal_mask, failures),
        set(rows.filter(pa.array(chal_mask))["entity"].to_pylist() if rows.num_rows else []),
    )


def champion_on(
    platform: Platform, entities: set[str], start: datetime, end: datetime, champion: int | None
) -> np.ndarray[Any, Any]:
    """The champion's valid probabilities for ``entities`` in ``[start, end)``."""
    rows = read_prediction_log(
        platform.data.serving_predictions,
        start=start,
        end=end,
        columns=["entity", "role", "model_version", "probability", "source"],
        exclude_models=_companions(platform),
    )
    if rows.num_rows == 0 or not entities:
        return np.empty(0)
    mask = pc.and_(
        pc.and_(pc.equal(rows["role"], "champion"), pc.equal(rows["source"], "model")),
        pc.is_in(rows["entity"], pa.array(sorted(entities))),
    )
    if champion is not None:
        mask = pc.and_(mask, pc.equal(rows["model_version"], champion))
    probs = rows.filter(mask)["probability"].to_numpy(zero_copy_only=False).astype(np.float64)
    valid: np.ndarray[Any, Any] = probs[~_is_error(probs)]
    return valid


def failed_requests(platform: Platform, start: datetime, end: datetime) -> int:
    """Requests the deployment failed in model loading or inference, or answered with a
    prediction it refused to serve (NaN, outside [0, 1]), within ``[start, end)``."""
    if not platform.data.serving_metrics.is_dir():
        return 0  # serving has not written a window yet: it failed nothing
    scan = read_windows(platform.data.serving_metrics)
    companions = _companions(platform)  # their windows are not the main deployment's
    return sum(
        w.inference_runtime_error_count
        + w.model_load_error_count
        + w.prediction_non_finite_count
        + w.prediction_out_of_range_count
        for w in scan.windows
        if start <= w.window_start and w.window_end <= end and w.model_name not in companions
    )


def _companions(platform: Platform) -> tuple[str, ...]:
    """The serving app's companion models (they log beside the main one)."""
    from dockline.pipeline.serve import companion_names

    if not platform.config.serve.companions:
        return ()
    return companion_names(platform)
