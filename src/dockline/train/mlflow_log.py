"""MLflow tracking: one run per trained candidate, with its dataset as a logged input.

Each run holds the candidate's parameters, test metrics, its evaluation report directory as
artifacts, and the training dataset as an MLflow dataset input whose digest is the dataset's
content hash — so a run says exactly which data it saw. Run names are deterministic
(``<candidate>-<dataset hash prefix>``), so reruns on the same data line up in the UI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dockline.core.errors import StorageError, ValidationError
from dockline.train.registry import mlflow_client

__all__ = ["DATASET_DIGEST_LENGTH", "default_artifact_root", "log_candidate_run", "run_name"]

DATASET_DIGEST_LENGTH = 32
"""MLflow stores dataset digests in a 36-character column; the full hash goes in the profile
and the ``dataset_hash`` tag."""
_BATCH = 100  # MLflow accepts at most 100 params per log_batch call


def run_name(candidate_name: str, dataset_hash: str) -> str:
    """The deterministic run name of a candidate trained on a dataset."""
    return f"{candidate_name}-{dataset_hash[:12]}"


def default_artifact_root(tracking_uri: str) -> Path | None:
    """``<dir>/artifacts`` for a ``sqlite:///<dir>/mlflow.db`` store; None for other stores."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix) :]).parent / "artifacts"


def _experiment_id(client: Any, experiment: str, artifact_root: Path | None) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if artifact_root is not None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment) or "_"
        location = (artifact_root / safe).resolve().as_uri()
    return str(client.create_experiment(experiment, artifact_location=location))


def log_candidate_run(
    tracking_uri: str,
    experiment: str,
    candidate_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    report_dir: Path | None,
    dataset_path: Path,
    dataset_hash: str,
    tags: Mapping[str, str],
    *,
    artifact_root: Path | None = None,
) -> str:
    """Log one candidate's run in ``experiment`` (created if needed) and return its run id.

    ``artifact_root`` defaults to ``artifacts/`` beside a SQLite store's database, so nothing
    lands in the working directory; other stores use the server's default.
    """
    if not dataset_hash:
        raise ValidationError("dataset_hash must be non-empty", reason="bad_value")
    client = mlflow_client(tracking_uri)
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
    from mlflow.exceptions import MlflowException

    root = artifact_root if artifact_root is not None else default_artifact_root(tracking_uri)
    all_tags = {
        **tags,
        "candidate": candidate_name,
        "dataset_hash": dataset_hash,
        "dataset_path": str(dataset_path),
    }
    try:
        run = client.create_run(
            _experiment_id(client, experiment, root),
            run_name=run_name(candidate_name, dataset_hash),
            tags=all_tags,
        )
        run_id = str(run.info.run_id)
        items = sorted(params.items())
        for start in range(0, len(items), _BATCH):
            client.log_batch(
                run_id,
                params=[Param(str(k), _param(v)) for k, v in items[start : start + _BATCH]],
            )
        timestamp = int(run.info.start_time)
        logged = [Metric(str(k), float(v), timestamp, 0) for k, v in sorted(metrics.items())]
        for start in range(0, len(logged), _BATCH * 10):
            client.log_batch(run_id, metrics=logged[start : start + _BATCH * 10])
        dataset = Dataset(
            name=dataset_path.name,
            digest=dataset_hash[:DATASET_DIGEST_LENGTH],
            source_type="local",
            source=json.dumps({"uri": dataset_path.resolve().as_uri()}),
            profile=json.dumps({"sha256": dataset_hash}),
        )
        client.log_inputs(
            run_id,
            datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])],
        )
        if report_dir is not None:
            client.log_artifacts(run_id, str(report_dir), artifact_path="report")
        client.set_terminated(run_id)
    except MlflowException as exc:
        raise StorageError(f"MLflow refused the run: {exc.message}", where=experiment) from exc
    return run_id


def _param(value: Any) -> str:
    # Params are strings in MLflow; JSON keeps lists and nested values readable and stable.
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
