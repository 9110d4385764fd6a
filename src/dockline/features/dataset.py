"""Training sets: the offline executor's features and labels for a spine, written reproducibly.

``build_training_set`` writes ``data.parquet`` (rows sorted by ``(as_of, key)``, fixed writer
options, so the same inputs give the same bytes) and ``_metadata.json`` (a
:class:`~dockline.core.contracts.DatasetMetadata` with the plan hash, the label rate and the data
file's SHA-256).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.contracts import TS_TYPE, DatasetMetadata, FileDigest
from dockline.core.errors import ConfigError, StorageError
from dockline.core.files import sha256_file, write_parquet
from dockline.core.time import Clock, from_micros
from dockline.features.offline import OfflineExecutor

__all__ = ["DATA_FILE", "METADATA_FILE", "build_training_set", "write_parquet"]

DATA_FILE = "data.parquet"
METADATA_FILE = "_metadata.json"


def _label_rate(table: pa.Table, label: str) -> float | None:
    column = table.column(label)
    if not pa.types.is_boolean(column.type):
        return None
    valid = int(len(column) - column.null_count)
    if valid == 0:
        return None
    hits = int(pc.sum(pc.cast(column, pa.int64())).as_py() or 0)
    return hits / valid


def build_training_set(
    executor: OfflineExecutor,
    spine: pa.Table,
    out_dir: Path,
    *,
    name: str,
    label: str | None,
    clock: Clock,
    source_hashes: Mapping[str, str] | None = None,
) -> DatasetMetadata:
    """Compute features and labels for ``spine`` and write ``out_dir/data.parquet`` + metadata.

    ``label`` names the target (one of the plan's labels, or None); ``source_hashes`` (e.g. the
    offline store's manifest content hashes) are recorded for lineage.
    """
    plan = executor.plan
    if label is not None and label not in plan.label_names:
        raise ConfigError(f"unknown label {label!r}; the project has {list(plan.label_names)}")
    table = executor.features(spine, labels=True)
    out_dir = Path(out_dir)
    data = out_dir / DATA_FILE
    write_parquet(table, data)
    digest = FileDigest(
        path=DATA_FILE, rows=table.num_rows, bytes=data.stat().st_size, sha256=sha256_file(data)
    )
    content_hash = hashlib.sha256(digest.sha256.encode()).hexdigest()
    low = high = None
    if table.num_rows:
        bounds = pc.min_max(pc.cast(table.column("as_of").cast(TS_TYPE), pa.int64()))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
    extra: dict[str, str | int | float | bool | None] = {
        "project": plan.project,
        "plan_hash": plan.hash,
        "label": label,
        "label_rate": _label_rate(table, label) if label is not None else None,
        "horizon_us": max((lb.horizon_us for lb in plan.labels), default=0),
        "spine_rows": spine.num_rows,
        "labels": ",".join(plan.label_names),
    }
    for source, value in sorted((source_hashes or {}).items()):
        extra[f"source_hash.{source}"] = value
    metadata = DatasetMetadata(
        dataset_name=name,
        dataset_version=content_hash[:16],
        path=str(out_dir),
        built_at=clock.now(),
        row_count=table.num_rows,
        entity=plan.key,
        event_ts="as_of",
        time_range_start=None if low is None else from_micros(low),
        time_range_end=None if high is None else from_micros(high),
        columns=table.column_names,
        files=[digest],
        content_hash=content_hash,
        feature_count=len(plan.feature_names),
        target=label,
        extra=extra,
    )
    try:
        metadata.write(out_dir / METADATA_FILE)
    except OSError as exc:
        raise StorageError(f"cannot write metadata: {exc}", where=str(out_dir)) from exc
    return metadata
