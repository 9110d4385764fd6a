"""Lineage, wired: OpenLineage events for every job, written and sent; the trace of an id.

Every event is appended to ``<data-dir>/lineage/openlineage-YYYY-MM-DD.ndjson`` (by event
date, UTC); with ``[lineage] url`` it is also POSTed through openlineage-python's HTTP
transport (Marquez: ``POST {url}/api/v1/lineage``). Lineage never fails the job it describes:
a write or send that fails is logged with the job and counted in :data:`FAILURES`.

>>> record_dataset(platform, metadata, started_at=t0)  # doctest: +SKIP
>>> trace(platform, "r-000001").to_dict()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dockline.core.bundle import load_bundle
from dockline.core.contracts import (
    TOPIC_STATION_STATUS,
    DatasetMetadata,
    IngestSummary,
    PromotionEvent,
    TrainingMetadata,
)
from dockline.core.errors import ContractError, DocklineError, NotFoundError
from dockline.features.dataset import METADATA_FILE
from dockline.monitor.lineage import (
    DatasetInfo,
    PartitionInfo,
    Trace,
    build_trace,
    run_events,
    to_ndjson,
)
from dockline.pipeline.platform import Platform

__all__ = [
    "FAILURES",
    "emit",
    "lineage_files",
    "read_events",
    "record_alias_move",
    "record_dataset",
    "record_ingest",
    "record_materialize",
    "record_monitor",
    "record_registration",
    "record_serving",
    "record_training",
    "suppressed",
    "trace",
]

_log = logging.getLogger(__name__)

FAILURES: Counter[str] = Counter()
"""Lineage writes (``file``) and sends (``http``) that failed in this process."""


def _namespace(platform: Platform) -> str:
    return f"file://{platform.data.root.resolve()}"


def lineage_files(platform: Platform) -> list[Path]:
    """The day files of OpenLineage events, oldest first."""
    return sorted(platform.data.lineage.glob("openlineage-*.ndjson"))


def _send_http(platform: Platform, events: list[Any]) -> None:
    config = platform.config.lineage
    if config.url is None:
        return
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    params: dict[str, Any] = {
        "url": config.url,
        "endpoint": config.endpoint,
        "timeout": config.timeout.total_seconds(),
        "retry": {"total": 0},
    }
    if config.api_key:
        params["auth"] = {"type": "api_key", "apiKey": config.api_key}
    transport = HttpTransport(HttpConfig.from_dict(params))
    try:
        for event in events:
            transport.emit(event)
    except Exception as exc:  # a lineage server down must not fail the job it describes
        FAILURES["http"] += 1
        _log.warning("sending lineage to %s failed (kept in lineage/): %s", config.url, exc)
    finally:
        transport.close()


_SUPPRESSED: ContextVar[bool] = ContextVar("dockline_lineage_suppressed", default=False)


@contextmanager
def suppressed() -> Iterator[None]:
    """No events inside: for monitor verdicts recomputed on every scrape (not runs of record)."""
    token = _SUPPRESSED.set(True)
    try:
        yield
    finally:
        _SUPPRESSED.reset(token)


def emit(platform: Platform, events: list[Any]) -> None:
    """Append ``events`` to their day files and send them when ``[lineage] url`` is set."""
    if _SUPPRESSED.get():
        return
    if not platform.data.root.is_dir():
        # a monitor run over files elsewhere (--windows) never creates a data dir to record in
        _log.info("no data dir at %s: lineage not recorded", platform.data.root)
        return
    by_day: dict[str, list[Any]] = {}
    for event in events:
        by_day.setdefault(event.eventTime[:10], []).append(event)
    try:
        platform.data.lineage.mkdir(exist_ok=True)
        for day, group in by_day.items():
            with (platform.data.lineage / f"openlineage-{day}.ndjson").open("ab") as fh:
                fh.write(to_ndjson(group))
    except OSError as exc:
        FAILURES["file"] += 1
        _log.warning("writing lineage events failed: %s", exc)
    _send_http(platform, events)


def read_events(platform: Platform) -> Iterator[dict[str, Any]]:
    """Every event written, oldest file first; a line that is not JSON is skipped with a
    warning naming the file and line."""
    for path in lineage_files(platform):
        with path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    _log.warning("%s:%d: not a JSON lineage event, skipped", path, number)


def _safely(job: str, build: Callable[[], None]) -> None:
    """Run ``build`` (which emits); a lineage failure is logged, never raised."""
    try:
        build()
    except ImportError as exc:  # openlineage-python is the monitor extra
        FAILURES[job] += 1
        _log.warning("lineage for %s not recorded: install dockline[monitor] (%s)", job, exc)
    except (DocklineError, OSError, ValueError) as exc:
        FAILURES[job] += 1
        _log.warning("lineage for %s not recorded: %s", job, exc)


def _emit_run(platform: Platform, job: str, key: str, started_at: datetime, **kw: Any) -> None:
    ended_at = kw.pop("ended_at", None) or platform.clock.now()
    events = run_events(
        job=job,
        key=key,
        started_at=min(started_at, ended_at),
        ended_at=ended_at,
        dataset_namespace=_namespace(platform),
        **kw,
    )
    emit(platform, events)


# ------------------------------------------------------------------------------------ the jobs


def _log_offsets(platform: Platform, topic: str) -> dict[int, tuple[int, int]]:
    log = platform.open_log()
    try:
        return {p: (0, end - 1) for p, end in log.end_offsets(topic).items() if end > 0}
    finally:
        log.close()


def record_ingest(platform: Platform, summary: IngestSummary) -> None:
    """An ingest run: the source in, the log topic out (its offsets), with the accounting."""

    def build() -> None:
        started_at = platform.clock.now() - timedelta(seconds=summary.seconds)
        details = {
            "received": summary.received,
            "accepted": summary.accepted,
            "unchanged": summary.unchanged,
            "dead_letters": dict(sorted(summary.dead_letters.items())),
            "documents": summary.documents,
            "stations": summary.stations,
        }
        _emit_run(
            platform,
            "ingest",
            f"{summary.source}:{platform.clock.now().isoformat()}",
            started_at,
            inputs=[DatasetInfo(f"source/{summary.source}")],
            outputs=[
                DatasetInfo(
                    f"log/{TOPIC_STATION_STATUS}",
                    rows=summary.accepted,
                    log_offsets=_log_offsets(platform, TOPIC_STATION_STATUS),
                )
            ],
            details=details,
        )

    _safely("ingest", build)


def record_materialize(
    platform: Platform, *, plan_hash: str, vectors: int, events: int, seconds: float
) -> None:
    """A materialization: the log in, the online store out."""

    def build() -> None:
        started_at = platform.clock.now() - timedelta(seconds=seconds)
        _emit_run(
            platform,
            "materialize",
            f"{plan_hash}:{platform.clock.now().isoformat()}",
            started_at,
            inputs=[
                DatasetInfo(
                    f"log/{TOPIC_STATION_STATUS}",
                    log_offsets=_log_offsets(platform, TOPIC_STATION_STATUS),
                )
            ],
            outputs=[DatasetInfo("online/features", rows=vectors, plan_hash=plan_hash)],
            details={"events": events, "vectors": vectors},
        )

    _safely("materialize", build)


def _dataset_info(meta: DatasetMetadata, name: str, root: Path | None = None) -> DatasetInfo:
    """A dataset's facets from its metadata (and its Parquet footer for types and nulls)."""
    fields: list[tuple[str, str]] = [(c, "") for c in meta.columns]
    nulls: dict[str, int] = {}
    if root is not None and meta.files:
        try:
            parquet = pq.ParquetFile(root / meta.files[0].path)
            schema = parquet.schema_arrow
            fields = [(f.name, str(f.type)) for f in schema]
            md = parquet.metadata
            for i, f in enumerate(schema):
                total = 0
                for g in range(md.num_row_groups):
                    stats = md.row_group(g).column(i).statistics
                    if stats is None or not stats.has_null_count:
                        total = -1
                        break
                    total += stats.null_count
                if total > 0:
                    nulls[f.name] = total
        except (OSError, IndexError):
            pass  # the schema from the metadata's column names is still right
    extra = {k: v for k, v in meta.extra.items() if not k.startswith("source_hash.")}
    extra["path"] = meta.path
    return DatasetInfo(
        name,
        fields=fields,
        rows=meta.row_count,
        bytes=sum(f.bytes for f in meta.files),
        files=len(meta.files),
        sha256={f.path: f.sha256 for f in meta.files},
        content_hash=meta.content_hash,
        plan_hash=str(meta.extra["plan_hash"]) if meta.extra.get("plan_hash") else None,
        version=meta.dataset_version,
        null_counts=nulls,
        extra=extra,
    )


def record_dataset(platform: Platform, meta: DatasetMetadata, *, seconds: float) -> None:
    """A dataset build: the offline sources in (with the hash of their partitions), the
    training set out (schema, rows, SHA-256s, plan hash, label rate and unknown labels)."""

    def build() -> None:
        now = platform.clock.now()
        sources = {
            k.removeprefix("source_hash."): str(v)
            for k, v in meta.extra.items()
            if k.startswith("source_hash.")
        }
        _emit_run(
            platform,
            "dataset_build",
            # a rebuild that found the very dataset published (kept as it was) is a run too:
            # keyed by when it ran, not by the kept dataset's built_at
            f"{meta.content_hash}:{now.isoformat()}",
            now - timedelta(seconds=seconds),
            ended_at=now,
            inputs=[
                DatasetInfo(f"offline/{s}", content_hash=h) for s, h in sorted(sources.items())
            ],
            outputs=[_dataset_info(meta, f"datasets/{meta.dataset_name}", Path(meta.path))],
            details={"dataset_version": meta.dataset_version},
        )

    _safely("dataset_build", build)


def _bundle_info(platform: Platform, bundle_id: str) -> DatasetInfo:
    bundle = load_bundle(platform.data.bundles / bundle_id)
    m = bundle.manifest
    return DatasetInfo(
        f"bundles/{bundle_id}",
        fields=[(f, "float32") for f in m.features],
        sha256=dict(m.lineage.files),
        content_hash=bundle_id,
        plan_hash=m.lineage.plan_hash,
        version=bundle_id,
        extra={"model_name": m.model_name, "threshold": m.threshold.threshold, **m.metrics},
    )


def record_training(
    platform: Platform,
    *,
    dataset: DatasetMetadata,
    bundle_id: str,
    details: Mapping[str, Any],
    seconds: float,
) -> None:
    """A training run: the dataset in, the bundle out (files' SHA-256s, plan hash, metrics)."""

    def build() -> None:
        _emit_run(
            platform,
            "training",
            bundle_id,
            platform.clock.now() - timedelta(seconds=seconds),
            inputs=[_dataset_info(dataset, f"datasets/{dataset.dataset_name}")],
            outputs=[_bundle_info(platform, bundle_id)],
            details=dict(details),
        )

    _safely("training", build)


def record_registration(
    platform: Platform, *, model_name: str, version: int, bundle_id: str, gate_passed: bool
) -> None:
    """A bundle registered as a model version."""

    def build() -> None:
        now = platform.clock.now()
        _emit_run(
            platform,
            "registration",
            f"{model_name}:{version}",
            now,
            inputs=[_bundle_info(platform, bundle_id)],
            outputs=[DatasetInfo(f"registry/{model_name}/v{version}", version=str(version))],
            details={"bundle_id": bundle_id, "gate_passed": gate_passed},
        )

    _safely("registration", build)


def record_alias_move(platform: Platform, event: PromotionEvent) -> None:
    """An alias moved (promote, rollback, demote), with who, why and from which version."""

    def build() -> None:
        source = f"registry/{event.name}/v{event.from_version}" if event.from_version else None
        _emit_run(
            platform,
            "alias_move",
            f"{event.name}:{event.alias}:{event.action}:{event.from_version}:{event.to_version}"
            f":{event.at.isoformat()}",
            event.at,
            ended_at=event.at,
            inputs=[DatasetInfo(f"registry/{event.name}/v{event.to_version}")]
            + ([DatasetInfo(source)] if source else []),
            outputs=[DatasetInfo(f"registry/{event.name}@{event.alias}")],
            details=event.model_dump(mode="json", exclude={"schema_version"}),
        )

    _safely("alias_move", build)


def record_serving(
    platform: Platform, *, deployment_id: str, model_name: str, bundle_id: str | None
) -> None:
    """A serving deployment started: the champion's bundle and the online store in."""

    def build() -> None:
        now = platform.clock.now()
        inputs = [DatasetInfo("online/features")]
        if bundle_id:
            inputs.insert(0, _bundle_info(platform, bundle_id))
        _emit_run(
            platform,
            "serving_deployment",
            f"{deployment_id}:{now.isoformat()}",
            now,
            inputs=inputs,
            outputs=[DatasetInfo("serving/predictions"), DatasetInfo("serving/metrics")],
            details={
                "deployment_id": deployment_id,
                "model_name": model_name,
                "bundle_id": bundle_id,
            },
        )

    _safely("serving_deployment", build)


def record_monitor(
    platform: Platform, kind: str, *, at: datetime, details: Mapping[str, Any]
) -> None:
    """A monitor run (health, freshness, drift, performance) and its verdicts."""

    def build() -> None:
        inputs = {
            "health": ["serving/metrics"],
            "freshness": ["offline", "datasets", "serving/predictions"],
        }.get(kind, ["serving/predictions"])
        _emit_run(
            platform,
            "monitor",
            f"{kind}:{at.isoformat()}",
            platform.clock.now(),
            inputs=[DatasetInfo(n) for n in inputs],
            outputs=[DatasetInfo(f"monitoring/{kind}")],
            details={"kind": kind, "at": at.isoformat(), **details},
        )

    _safely("monitor", build)


# ---------------------------------------------------------------------------------------- trace


def _prediction_rows(platform: Platform, request_id: str) -> list[dict[str, Any]]:
    root = platform.data.serving_predictions
    files = sorted(str(p) for p in root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        return []
    columns = ["request_id", "logged_at", "entity", "role", "served", "model_name"]
    columns += ["model_version", "bundle_id", "probability", "source", "as_of", "feature_age_s"]
    dataset = ds.dataset(files, format="parquet")
    table = dataset.to_table(columns=columns, filter=ds.field("request_id") == request_id)
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for key in ("logged_at", "as_of"):
            if row.get(key) is not None:
                row[key] = row[key].isoformat()
    return rows


def _training_for(platform: Platform, bundle_id: str) -> dict[str, Any] | None:
    for path in sorted((platform.data.lineage / "training").glob("*.json")):
        try:
            run = TrainingMetadata.read(path)
        except ContractError:
            continue
        if run.bundle_id == bundle_id:
            return run.model_dump(mode="json", exclude={"schema_version"})
    return None


def _dataset_for(platform: Platform, content_hash: str) -> DatasetMetadata | None:
    """The dataset a bundle was trained on, by content hash: under ``datasets/``, else where
    a ``dataset_build`` event says it was written (``--out`` may be anywhere)."""
    candidates: list[Path] = []
    if platform.data.datasets.is_dir():
        candidates = sorted(platform.data.datasets.rglob(METADATA_FILE))
    for event in read_events(platform):
        if event.get("eventType") != "COMPLETE" or event["job"]["name"] != "dataset_build":
            continue
        for out in event.get("outputs", []):
            facet = out.get("facets", {}).get("dockline", {})
            if facet.get("contentHash") == content_hash and facet.get("extra", {}).get("path"):
                candidates.append(Path(facet["extra"]["path"]) / METADATA_FILE)
    for path in candidates:
        try:
            meta = DatasetMetadata.read(path)
        except (ContractError, NotFoundError, OSError):
            continue
        if meta.content_hash == content_hash:
            return meta
    return None


def _partitions(platform: Platform, sources: Iterable[str]) -> dict[str, list[PartitionInfo]]:
    out: dict[str, list[PartitionInfo]] = {}
    for source in sources:
        parts = []
        for manifest in sorted(platform.data.offline(source).glob("date=*/_manifest.json")):
            meta = DatasetMetadata.read(manifest)
            parts.append(
                PartitionInfo(
                    partition=str(meta.partition),
                    content_hash=meta.content_hash,
                    rows=meta.row_count,
                    files=[f.path for f in meta.files],
                )
            )
        out[source] = parts
    return out


def trace(platform: Platform, ident: str) -> Trace:
    """Walk a prediction (its ``request_id``) or a bundle id back to the log offsets."""
    predictions = _prediction_rows(platform, ident)
    if predictions:
        # the answer's model first (a shadow scored the same request but answered nobody)
        models = sorted(
            (not r["served"], str(r["bundle_id"])) for r in predictions if r["bundle_id"]
        )
        if not models:
            raise NotFoundError("the prediction was not made by a model", where=ident)
        bundle_id = models[0][1]
    elif (platform.data.bundles / ident).is_dir():
        bundle_id = ident
    else:
        raise NotFoundError(
            "no prediction with this request id and no bundle with this id",
            reason="unknown_id",
            where=ident,
        )
    bundle = load_bundle(platform.data.bundles / bundle_id)
    lineage = bundle.manifest.lineage
    dataset = _dataset_for(platform, lineage.dataset_hash)
    sources = [
        k.removeprefix("source_hash.")
        for k in (dataset.extra if dataset else {})
        if k.startswith("source_hash.")
    ]
    return build_trace(
        ident,
        predictions=predictions,
        bundle={
            "bundle_id": bundle_id,
            "model_name": bundle.manifest.model_name,
            "path": str(bundle.path),
            "lineage": lineage.model_dump(mode="json"),
        },
        training=_training_for(platform, bundle_id),
        dataset=dataset.model_dump(mode="json") if dataset else None,
        partitions=_partitions(platform, sources),
    )
