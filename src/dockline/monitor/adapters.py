"""Adapters from other layers' native artifacts to the seed's input contracts.

A P4-style bundle directory (``metadata.json``, ``metrics.json``, ``model_uri.txt``, as seed
003's ``adapt_p4_bundle`` reads it) becomes a :class:`TrainingMetadata`; fields the bundle does not
carry get the seed's fallbacks (``"unknown"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dockline.core.contracts import TrainingMetadata
from dockline.core.errors import ContractError

__all__ = ["adapt_p4_bundle"]

# metrics.json name -> TrainingMetadata.metrics name (the seed keeps the test-split metrics).
_METRIC_NAMES = {"test_rmse": "rmse", "test_mae": "mae"}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError("bundle file is missing", where=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"not valid JSON: {exc}", where=str(path)) from exc
    if not isinstance(data, dict):
        raise ContractError(f"must be a JSON object; got {type(data).__name__}", where=str(path))
    return data


def adapt_p4_bundle(directory: Path) -> TrainingMetadata:
    """The training metadata of a P4 bundle directory (seed 003's mapping).

    >>> adapt_p4_bundle(Path("p4_bundle")).model_name  # doctest: +SKIP
    'lightgbm_default'
    """
    meta = _json(directory / "metadata.json")
    metrics = _json(directory / "metrics.json")
    uri_file = directory / "model_uri.txt"
    try:
        artifact = uri_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ContractError("bundle file is missing", where=str(uri_file)) from None
    created = meta.get("created_at")
    try:
        return TrainingMetadata.model_validate(
            {
                "run_id": meta.get("run_id"),
                "model_name": meta.get("candidate_name"),
                "model_version": meta.get("model_version", "unknown"),
                "input_dataset_name": meta.get("input_dataset_name", "unknown"),
                "input_dataset_version": meta.get("input_dataset_version", "unknown"),
                "started_at": meta.get("started_at", created),
                "completed_at": meta.get("completed_at", created),
                "metrics": {
                    new: float(metrics[old]) for old, new in _METRIC_NAMES.items() if old in metrics
                },
                "artifact_path": artifact,
            }
        )
    except ValueError as exc:
        detail = "; ".join(str(exc).splitlines()[:3])
        raise ContractError(
            f"bundle does not map to TrainingMetadata: {detail}", where=str(directory)
        ) from exc
