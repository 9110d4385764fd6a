"""OpenLineage classes for :mod:`dockline.monitor.lineage`: imported only when events are built,
so the rest of dockline runs without ``openlineage-python`` (the ``monitor`` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    OutputDatasetFacet,
    RunFacet,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    job_type_job,
    output_statistics_output_dataset,
    schema_dataset,
)

from dockline.core.time import ensure_utc
from dockline.monitor.lineage import PRODUCER, DatasetInfo

__all__ = ["DocklineDatasetFacet", "DocklineRunFacet", "build_events"]

_FACET_SCHEMA = "https://dockline.dev/spec/facets/1-0-0/{}.json"

# OpenLineage facet fields are camelCase by specification.


@attr.define
class DocklineDatasetFacet(DatasetFacet):
    """dockline's facts about a dataset: file SHA-256s, content and plan hash, log offsets."""

    sha256: dict[str, str] = attr.field(factory=dict)
    contentHash: str | None = attr.field(default=None)
    planHash: str | None = attr.field(default=None)
    logOffsets: dict[str, list[int]] = attr.field(factory=dict)
    extra: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return _FACET_SCHEMA.format("DocklineDatasetFacet")


@attr.define
class DocklineRunFacet(RunFacet):
    """What the run did, in dockline's words (counts, verdicts), and how long it took."""

    durationSeconds: float
    details: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return _FACET_SCHEMA.format("DocklineRunFacet")


def _facets(d: DatasetInfo) -> dict[str, DatasetFacet]:
    facets: dict[str, DatasetFacet] = {}
    if d.fields:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in d.fields]
        )
    if d.version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=d.version
        )
    facets["dockline"] = DocklineDatasetFacet(
        sha256=dict(sorted(d.sha256.items())),
        contentHash=d.content_hash,
        planHash=d.plan_hash,
        logOffsets={str(p): [a, b] for p, (a, b) in sorted(d.log_offsets.items())},
        extra=dict(sorted(d.extra.items())),
    )
    return facets


def _input(d: DatasetInfo, namespace: str) -> InputDataset:
    """The input, with data-quality metrics (row count, bytes, files, null counts)."""
    quality: dict[str, InputDatasetFacet] = {}
    if d.rows is not None or d.null_counts:
        quality["dataQualityMetrics"] = (
            data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                columnMetrics={
                    c: data_quality_metrics_input_dataset.ColumnMetrics(nullCount=n)
                    for c, n in sorted(d.null_counts.items())
                },
                rowCount=d.rows,
                bytes=d.bytes,
                fileCount=d.files,
            )
        )
    return InputDataset(namespace=namespace, name=d.name, facets=_facets(d), inputFacets=quality)


def _output(d: DatasetInfo, namespace: str) -> OutputDataset:
    """The output, with output statistics (rows, bytes, files)."""
    stats: dict[str, OutputDatasetFacet] = {}
    if d.rows is not None:
        stats["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=d.rows, size=d.bytes, fileCount=d.files
            )
        )
    return OutputDataset(namespace=namespace, name=d.name, facets=_facets(d), outputFacets=stats)


def _ts(value: datetime) -> str:
    return ensure_utc(value).isoformat(timespec="microseconds")


def build_events(
    *,
    job: str,
    run_id: str,
    started_at: datetime,
    ended_at: datetime,
    inputs: list[DatasetInfo],
    outputs: list[DatasetInfo],
    details: Mapping[str, Any],
    namespace: str,
    dataset_namespace: str,
    failed: bool,
) -> list[RunEvent]:
    """START and COMPLETE (FAIL) events of one run."""
    job_facets = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DOCKLINE", jobType=job.upper()
        )
    }
    duration = max(0.0, (ensure_utc(ended_at) - ensure_utc(started_at)).total_seconds())
    run_facets: dict[str, RunFacet] = {
        "dockline": DocklineRunFacet(
            durationSeconds=round(duration, 6), details=dict(sorted(details.items()))
        )
    }
    start = RunEvent(
        eventType=RunState.START,
        eventTime=_ts(started_at),
        run=Run(runId=run_id),
        job=Job(namespace=namespace, name=job, facets=dict(job_facets)),
        producer=PRODUCER,
    )
    end = RunEvent(
        eventType=RunState.FAIL if failed else RunState.COMPLETE,
        eventTime=_ts(ended_at),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=namespace, name=job, facets=dict(job_facets)),
        inputs=[_input(d, dataset_namespace) for d in inputs],
        outputs=[_output(d, dataset_namespace) for d in outputs],
        producer=PRODUCER,
    )
    return [start, end]
