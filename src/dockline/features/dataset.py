"""Training sets: the offline executor's features and labels for a spine, written reproducibly.

``build_training_set`` writes ``data.parquet`` (rows sorted by ``(as_of, key)``, fixed writer
options, so the same inputs give the same bytes) and ``_metadata.json`` (a
:class:`~dockline.core.contracts.DatasetMetadata` with the plan hash and feature names, the label
rate, how many labels are unknown and why, and the data file's SHA-256).

A label is **known** only when its horizon is covered by the data known at build time:

    as_of + horizon <= known_until(label's source)

where ``known_until`` is the newest ``ingested_at`` of that source's events in the offline store
when the build runs. Past it the store cannot tell "no event happened" from "not ingested yet",
so such a label is null (unknown), never ``False``; training drops null-label rows.

``publish_dataset`` moves a staged build into place: datasets are immutable, so an existing
dataset is kept when the new build is the same and refused otherwise (``force`` replaces one no
registered model was trained on).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.contracts import TS_TYPE, DatasetMetadata, FileDigest
from dockline.core.errors import ConfigError, DocklineError, StorageError
from dockline.core.files import sha256_file, write_parquet
from dockline.core.time import Clock, from_micros
from dockline.features.plan import Plan

__all__ = [
    "DATA_FILE",
    "METADATA_FILE",
    "DatasetExistsError",
    "PointInTimeExecutor",
    "Published",
    "build_training_set",
    "publish_dataset",
    "write_parquet",
]

DATA_FILE = "data.parquet"
METADATA_FILE = "_metadata.json"


class PointInTimeExecutor(Protocol):
    """What a training set needs of an offline engine (DuckDB's ``OfflineExecutor``, Spark's
    ``SparkExecutor``): the plan, its features at a spine, and how far a source is known."""

    @property
    def plan(self) -> Plan: ...

    def features(self, spine: pa.Table, *, labels: bool = False) -> pa.Table: ...

    def known_until(self, source: str) -> int | None: ...


def _label_rate(table: pa.Table, label: str) -> float | None:
    column = table.column(label)
    if not pa.types.is_boolean(column.type):
        return None
    valid = int(len(column) - column.null_count)
    if valid == 0:
        return None
    hits = int(pc.sum(pc.cast(column, pa.int64())).as_py() or 0)
    return hits / valid


@dataclass(frozen=True, slots=True)
class _Unknown:
    rows: int
    known_until_us: int | None
    source: str
    horizon_us: int


def _null_unknown_labels(
    executor: PointInTimeExecutor, table: pa.Table
) -> tuple[pa.Table, dict[str, _Unknown]]:
    """Null every label whose horizon is not covered by its source's data (module docstring)."""
    unknown: dict[str, _Unknown] = {}
    if table.num_rows == 0:
        return table, unknown
    as_of = pc.cast(pc.cast(table.column("as_of"), TS_TYPE), pa.int64())
    for label in executor.plan.labels:
        known = executor.known_until(label.source)
        if known is None:
            mask = pa.chunked_array([pa.array(np.ones(table.num_rows, dtype=bool))])
        else:
            mask = pc.greater(pc.add(as_of, label.horizon_us), known)
        hidden = int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)
        unknown[label.name] = _Unknown(hidden, known, label.source, label.horizon_us)
        if hidden:
            i = table.column_names.index(label.name)
            column = table.column(label.name)
            nulls = pa.nulls(table.num_rows, column.type)
            table = table.set_column(i, label.name, pc.if_else(mask, nulls, column))
    return table, unknown


def _unknown_reason(name: str, u: _Unknown) -> str:
    if not u.rows:
        return ""
    if u.known_until_us is None:
        return f"source {u.source!r} has no events, so no {name} is known"
    return (
        f"their {u.horizon_us / 60e6:g} min horizon ends after"
        f" {from_micros(u.known_until_us).isoformat()}, the newest ingested_at of source"
        f" {u.source!r} known at build time: {name} is not known yet"
    )


def build_training_set(
    executor: PointInTimeExecutor,
    spine: pa.Table,
    out_dir: Path,
    *,
    name: str,
    label: str | None,
    clock: Clock,
    source_hashes: Mapping[str, str] | None = None,
    publish_as: Path | None = None,
) -> DatasetMetadata:
    """Compute features and labels for ``spine`` and write ``out_dir/data.parquet`` + metadata.

    ``label`` names the target (one of the plan's labels, or None); ``source_hashes`` (e.g. the
    offline store's manifest content hashes) are recorded for lineage. Labels not known at
    build time are null (module docstring); ``extra`` says how many and why. ``publish_as`` is
    the path recorded in the metadata when ``out_dir`` is a staging directory.
    """
    plan = executor.plan
    if label is not None and label not in plan.label_names:
        raise ConfigError(f"unknown label {label!r}; the project has {list(plan.label_names)}")
    table, unknown = _null_unknown_labels(executor, executor.features(spine, labels=True))
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
        "features": ",".join(plan.feature_names),
    }
    for label_name, u in unknown.items():
        extra[f"unknown_rows.{label_name}"] = u.rows
    target = unknown.get(label) if label is not None else None
    if target is not None:
        known = target.known_until_us
        extra["label_known_until"] = None if known is None else from_micros(known).isoformat()
        extra["label_unknown_rows"] = target.rows
        extra["label_unknown_reason"] = _unknown_reason(label or "", target)
    for source, value in sorted((source_hashes or {}).items()):
        extra[f"source_hash.{source}"] = value
    metadata = DatasetMetadata(
        dataset_name=name,
        dataset_version=content_hash[:16],
        path=str(publish_as or out_dir),
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


class DatasetExistsError(DocklineError, FileExistsError):
    """The output directory already holds a different dataset (datasets are immutable)."""

    default_reason = "dataset_exists"


@dataclass(frozen=True, slots=True)
class Published:
    """What :func:`publish_dataset` did with a staged build."""

    metadata: DatasetMetadata
    status: Literal["written", "unchanged", "replaced"]
    """``unchanged``: ``out`` already held this very dataset (kept, staged copy discarded)."""


def _same_dataset(a: DatasetMetadata, b: DatasetMetadata) -> bool:
    return (a.content_hash, a.target, a.dataset_name) == (b.content_hash, b.target, b.dataset_name)


def publish_dataset(
    staged: Path,
    out: Path,
    *,
    force: bool = False,
    in_use: Callable[[DatasetMetadata], str | None] = lambda _: None,
) -> Published:
    """Move the dataset built in ``staged`` to ``out``, never overwriting another one silently.

    ``out`` missing or empty: the build goes there. ``out`` holding the same dataset (content
    hash, label and name): kept as it is. A different one: :class:`DatasetExistsError`, unless
    ``force`` — and even then not when ``in_use(existing)`` names a model trained on it.
    ``staged`` must be on the same file system as ``out`` (a sibling), so the move is a rename.
    """
    new = DatasetMetadata.read(staged / METADATA_FILE)
    if out.exists() and not out.is_dir():
        raise DatasetExistsError(
            "the output path is a file, not a dataset directory", where=str(out)
        )
    if not out.exists() or not any(out.iterdir()):
        if out.exists():
            out.rmdir()
        os.replace(staged, out)
        return Published(new, "written")
    try:
        old = DatasetMetadata.read(out / METADATA_FILE)
    except DocklineError:
        raise DatasetExistsError(
            "the output directory exists and holds no dataset; choose an empty or new --out",
            where=str(out),
        ) from None
    if _same_dataset(old, new):
        shutil.rmtree(staged)
        return Published(old, "unchanged")
    what = (
        f"already holds dataset {old.dataset_name!r} {old.dataset_version}"
        f" (label {old.target}, built {old.built_at.isoformat(timespec='seconds')})"
    )
    user = in_use(old)
    if user is not None:
        raise DatasetExistsError(
            f"{what}, which {user} was trained on; it is never overwritten: build into a new --out",
            reason="dataset_in_use",
            where=str(out),
        )
    if not force:
        raise DatasetExistsError(
            f"{what}; datasets are immutable: build into a new --out, or pass --force to replace"
            " it (refused for one a registered model was trained on)",
            where=str(out),
        )
    retired = out.with_name(f".{out.name}.replaced")
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(out, retired)
    os.replace(staged, out)
    shutil.rmtree(retired, ignore_errors=True)
    return Published(new, "replaced")
