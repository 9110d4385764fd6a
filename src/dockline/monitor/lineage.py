"""Lineage, pure: OpenLineage run events for dockline's jobs, and the trace of a prediction.

Events are built with ``openlineage-python``'s classes so any OpenLineage consumer (Marquez,
DataHub, OpenMetadata) reads them; dockline's own facts — SHA-256s, plan hash, log offsets —
ride in a ``dockline`` dataset facet beside the standard ``schema``, ``dataSource``-free
``outputStatistics`` and ``dataQualityMetrics`` facets. Run ids are UUIDs derived from the job
and its key (a dataset's content hash, a bundle id, ...), so the same run gives the same bytes.

>>> events = run_events(job="dataset_build", key="abc", started_at=t0, ended_at=t1,
...                     outputs=[DatasetInfo("datasets/train", rows=10)])  # doctest: +SKIP
>>> to_ndjson(events)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "JOBS",
    "NAMESPACE",
    "PRODUCER",
    "DatasetInfo",
    "PartitionInfo",
    "Trace",
    "TraceStep",
    "build_trace",
    "log_offsets",
    "run_events",
    "run_id",
    "source_hash",
    "to_ndjson",
]

NAMESPACE = "dockline"
"""The OpenLineage namespace of dockline's jobs."""
PRODUCER = "https://github.com/dockline/dockline"
JOBS = (
    "ingest",
    "materialize",
    "dataset_build",
    "training",
    "registration",
    "alias_move",
    "serving_deployment",
    "monitor",
)
"""The job names dockline emits runs for."""


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One input or output of a run; every field but ``name`` optional (None: not known)."""

    name: str
    fields: Sequence[tuple[str, str]] = ()
    rows: int | None = None
    bytes: int | None = None
    files: int | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    content_hash: str | None = None
    plan_hash: str | None = None
    version: str | None = None
    null_counts: Mapping[str, int] = field(default_factory=dict)
    log_offsets: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


def run_id(job: str, key: str) -> str:
    """A deterministic run UUID for ``job`` run on ``key`` (same inputs, same id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PRODUCER}/{job}/{key}"))


def run_events(
    *,
    job: str,
    key: str,
    started_at: datetime,
    ended_at: datetime,
    inputs: Iterable[DatasetInfo] = (),
    outputs: Iterable[DatasetInfo] = (),
    details: Mapping[str, Any] | None = None,
    namespace: str = NAMESPACE,
    dataset_namespace: str = NAMESPACE,
    failed: bool = False,
) -> list[Any]:
    """A run's START and COMPLETE (or FAIL) OpenLineage ``RunEvent``s; inputs, outputs and
    facets on the last. Needs ``openlineage-python`` (the ``monitor`` extra)."""
    if job not in JOBS:
        raise ValueError(f"job must be one of {JOBS}; got {job!r}")
    from dockline.monitor._openlineage import build_events

    return build_events(
        job=job,
        run_id=run_id(job, key),
        started_at=started_at,
        ended_at=ended_at,
        inputs=list(inputs),
        outputs=list(outputs),
        details=details or {},
        namespace=namespace,
        dataset_namespace=dataset_namespace,
        failed=failed,
    )


def to_ndjson(events: Iterable[Any]) -> bytes:
    """One JSON object per line (sorted keys: same events, same bytes)."""
    from openlineage.client.serde import Serde

    return b"".join(Serde.to_json(e).encode() + b"\n" for e in events)


# ---------------------------------------------------------------------------------------- trace

_OFFSET_FILE = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")


def log_offsets(file_names: Iterable[str]) -> dict[int, tuple[int, int]]:
    """Per log partition, the first and last offset held by offline data files named
    ``p{partition}-{first}-{last}.parquet`` (other names are ignored)."""
    out: dict[int, tuple[int, int]] = {}
    for name in file_names:
        m = _OFFSET_FILE.match(name.rsplit("/", 1)[-1])
        if m is None:
            continue
        part, first, last = (int(g) for g in m.groups())
        lo, hi = out.get(part, (first, last))
        out[part] = (min(lo, first), max(hi, last))
    return dict(sorted(out.items()))


def source_hash(partitions: Iterable[tuple[str, str]]) -> str:
    """The hash a dataset records per source: SHA-256 over ``partition:content_hash`` lines of
    its offline partitions, in partition order (see ``pipeline.features``)."""
    digest = hashlib.sha256()
    for partition, content in sorted(partitions):
        digest.update(f"{partition}:{content}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One offline partition (a source's date) as its manifest describes it."""

    partition: str
    content_hash: str
    rows: int
    files: Sequence[str]


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One hop of a trace: what it is, its id, and what is known about it."""

    kind: str
    id: str
    detail: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"kind": self.kind, "id": self.id, **self.detail}


@dataclass(frozen=True, slots=True)
class Trace:
    """prediction → bundle → training run → dataset → plan → offline partitions → log offsets.

    ``problems`` names every link that could not be followed or did not verify (a missing
    training record, a partition rewritten since the dataset was built): never silent.
    """

    start: str
    steps: list[TraceStep]
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "start": self.start,
            "steps": [s.to_dict() for s in self.steps],
            "problems": list(self.problems),
        }


def build_trace(
    start: str,
    *,
    predictions: Sequence[Mapping[str, Any]] = (),
    bundle: Mapping[str, Any],
    training: Mapping[str, Any] | None,
    dataset: Mapping[str, Any] | None,
    partitions: Mapping[str, Sequence[PartitionInfo]],
) -> Trace:
    """Assemble the trace from the records read at the edge.

    ``bundle`` is the bundle manifest's ``bundle_id`` plus its ``lineage``; ``dataset`` the
    dataset's metadata (``extra`` holds ``plan_hash`` and ``source_hash.<source>``);
    ``partitions`` the offline partitions of each source as they are now. Each source's
    partitions are checked against the hash the dataset recorded at build time.
    """
    steps: list[TraceStep] = []
    problems: list[str] = []
    for row in predictions:
        steps.append(TraceStep("prediction", str(row["request_id"]), dict(row)))
    lineage = dict(bundle.get("lineage", {}))
    steps.append(
        TraceStep(
            "bundle",
            str(bundle["bundle_id"]),
            {k: v for k, v in bundle.items() if k != "bundle_id"},
        )
    )
    if training is None:
        problems.append(f"no training run recorded for bundle {bundle['bundle_id']}")
    else:
        steps.append(TraceStep("training_run", str(training.get("run_id")), dict(training)))
    plan_hash = lineage.get("plan_hash")
    if dataset is None:
        problems.append(f"dataset {lineage.get('dataset_name')!r} not found")
    else:
        extra = dict(dataset.get("extra", {}))
        if dataset.get("content_hash") != lineage.get("dataset_hash"):
            problems.append(
                f"dataset {dataset.get('dataset_name')!r} content hash"
                f" {dataset.get('content_hash')} is not the bundle's {lineage.get('dataset_hash')}"
            )
        steps.append(
            TraceStep(
                "dataset",
                f"{dataset.get('dataset_name')}@{dataset.get('dataset_version')}",
                {
                    k: dataset.get(k)
                    for k in ("path", "built_at", "row_count", "content_hash", "files")
                },
            )
        )
        if extra.get("plan_hash") not in (None, plan_hash):
            problems.append(
                f"dataset plan hash {extra.get('plan_hash')} is not the bundle's {plan_hash}"
            )
    steps.append(
        TraceStep(
            "plan",
            str(plan_hash),
            {"project": (dataset or {}).get("extra", {}).get("project")},
        )
    )
    recorded = {
        k.removeprefix("source_hash."): v
        for k, v in (dataset or {}).get("extra", {}).items()
        if k.startswith("source_hash.")
    }
    for source in sorted(recorded or partitions):
        parts = list(partitions.get(source, ()))
        now = source_hash((p.partition, p.content_hash) for p in parts)
        unchanged = recorded.get(source) == now if source in recorded else None
        if unchanged is False:
            problems.append(
                f"offline source {source} changed since the dataset was built"
                " (its partitions' hash differs)"
            )
        steps.append(
            TraceStep(
                "offline_partitions",
                source,
                {
                    "partitions": [p.partition for p in parts],
                    "rows": sum(p.rows for p in parts),
                    "source_hash": now,
                    "unchanged_since_build": unchanged,
                },
            )
        )
        offsets = log_offsets(f for p in parts for f in p.files)
        steps.append(
            TraceStep(
                "log_offsets",
                source,
                {"partitions": {str(k): {"first": a, "last": b} for k, (a, b) in offsets.items()}},
            )
        )
    return Trace(start, steps, problems)
