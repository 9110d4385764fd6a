"""Feature jobs: materialize online vectors, build training sets, measure consistency, heal.

Wiring only: it loads the project's plan, points the offline executor at the offline store,
opens the configured online store and hands them to the features stage.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import duckdb

from dockline.core import tracing
from dockline.core.config import DataDir, OnlineConfig, record_project
from dockline.core.contracts import DatasetMetadata, TrainingMetadata
from dockline.core.errors import ConfigError, ContractError
from dockline.core.ports import OnlineStore
from dockline.core.time import from_micros, to_micros
from dockline.features import Plan, compile_project, load_project
from dockline.features.consistency import (
    ConsistencyReport,
    HealReport,
    ServedConsistencyReport,
    heal,
    measure_consistency,
    measure_served_consistency,
)
from dockline.features.dataset import (
    PointInTimeExecutor,
    Published,
    build_training_set,
    publish_dataset,
)
from dockline.features.materialize import Materializer, MaterializeReport
from dockline.features.offline import OfflineExecutor, grid_spine
from dockline.pipeline.platform import Platform
from dockline.pipeline.tracing import configure_tracing
from dockline.store.online.sqlite import SqliteOnlineStore

__all__ = [
    "EXAMPLE_PROJECT",
    "OFFLINE_ENGINES",
    "ONLINE_FACTORIES",
    "PROJECT_ENV",
    "build_dataset",
    "build_dataset_published",
    "check_consistency",
    "check_served_consistency",
    "heal_online",
    "load_plan",
    "materialize",
    "offline_executor",
    "offline_pit_executor",
    "offline_sources",
    "open_online_store",
    "project_path",
]

PROJECT_ENV = "DOCKLINE_PROJECT"
"""Overrides ``features.project`` (``dockline serve --project`` hands it to its workers)."""


def _example_project() -> Path:
    # A wheel ships the project inside the package (pyproject's force-include); an editable
    # install (what `make` makes) runs from the checkout, where it sits in examples/.
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "examples" / "bikeshare"
    if packaged.is_dir():
        return packaged
    return here.parents[3] / "examples" / "bikeshare"


EXAMPLE_PROJECT = _example_project()
"""The bike-share project shipped with dockline (``dockline init`` copies it)."""


def _sqlite_online(data: DataDir, config: OnlineConfig) -> OnlineStore:
    return SqliteOnlineStore(data.online_sqlite)


def _redis_online(data: DataDir, config: OnlineConfig) -> OnlineStore:
    from dockline.store.online.redis import RedisOnlineStore  # the redis extra, only if chosen

    return RedisOnlineStore(config.url, namespace=config.namespace)


ONLINE_FACTORIES: dict[str, Callable[[DataDir, OnlineConfig], OnlineStore]] = {
    "sqlite": _sqlite_online,
    "redis": _redis_online,
}
"""Online store implementations by ``OnlineConfig.kind``."""


def open_online_store(platform: Platform) -> OnlineStore:
    """The configured online store."""
    return ONLINE_FACTORIES[platform.config.online.kind](platform.data, platform.config.online)


def project_path(platform: Platform, project: str | Path | None = None) -> tuple[Path, str]:
    """The project to use and where the choice came from: flag, env, file or default.

    A ``--project`` flag wins, then ``$DOCKLINE_PROJECT``, then ``features.project`` in the data
    dir's ``dockline.toml`` (relative to the data dir), then the bike-share example. The first
    flag given to a data dir without a recorded project is recorded there, so the data dir knows
    its project from any working directory.
    """
    if project is not None:
        path, origin = Path(project), "flag"
    elif os.environ.get(PROJECT_ENV):
        path, origin = Path(os.environ[PROJECT_ENV]), "env"
    elif platform.config.features.project:
        path, origin = Path(platform.config.features.project), "file"
        if not path.is_absolute():
            path = platform.data.root / path
    else:
        return EXAMPLE_PROJECT, "default"
    if not path.exists():
        where = {"flag": "--project", "env": PROJECT_ENV, "file": "features.project"}[origin]
        raise ConfigError(f"project not found (from {where}; pass --project PATH)", where=str(path))
    if origin == "flag":
        # A project inside the data dir is recorded relative to it, so the two move together.
        resolved, root = path.resolve(), platform.data.root.resolve()
        record_project(
            platform.data.config_file,
            resolved.relative_to(root) if resolved.is_relative_to(root) else resolved,
        )
    return path, origin


def _project_path(platform: Platform, project: str | Path | None) -> Path:
    return project_path(platform, project)[0]


def load_plan(platform: Platform, project: str | Path | None = None) -> Plan:
    """Compile the project at ``project`` (default: the configured one)."""
    return compile_project(load_project(_project_path(platform, project)))


def offline_sources(platform: Platform, plan: Plan) -> dict[str, str]:
    """Per source table of ``plan``, the offline store directory holding its Parquet files."""
    sources: dict[str, str] = {}
    for spec in plan.sources:
        root = platform.data.offline(spec.table)
        if not any(root.rglob("*.parquet")):
            raise ConfigError(
                f"the offline store has no data for source {spec.name!r};"
                " run `dockline ingest` first",
                where=str(root),
            )
        sources[spec.table] = str(root)
    return sources


@contextmanager
def offline_executor(platform: Platform, plan: Plan) -> Iterator[OfflineExecutor]:
    """An offline executor over the platform's offline store (closed on exit)."""
    executor = OfflineExecutor(
        plan,
        offline_sources(platform, plan),
        memory_limit=platform.config.features.memory_limit,
    )
    try:
        yield executor
    finally:
        executor.close()


class _PitEngine(PointInTimeExecutor, Protocol):
    def entities(self, start: datetime, end: datetime) -> list[str]: ...

    def close(self) -> None: ...


def _duckdb_engine(platform: Platform, plan: Plan) -> _PitEngine:
    return OfflineExecutor(
        plan,
        offline_sources(platform, plan),
        memory_limit=platform.config.features.memory_limit,
    )


def _spark_engine(platform: Platform, plan: Plan) -> _PitEngine:
    from dockline.features.spark import SparkExecutor  # pyspark only when asked for

    return SparkExecutor(plan, offline_sources(platform, plan))


OFFLINE_ENGINES: dict[str, Callable[[Platform, Plan], _PitEngine]] = {
    "duckdb": _duckdb_engine,
    "spark": _spark_engine,
}
"""Point-in-time engines of ``dataset build`` by ``FeaturesConfig.engine`` (same plan, same
rows; docs/features.md)."""


@contextmanager
def offline_pit_executor(
    platform: Platform, plan: Plan, engine: str | None = None
) -> Iterator[_PitEngine]:
    """The point-in-time engine ``engine`` (default: the configured one), closed on exit."""
    name = engine or platform.config.features.engine
    if name not in OFFLINE_ENGINES:
        raise ConfigError(f"--engine must be one of {sorted(OFFLINE_ENGINES)}; got {name!r}")
    executor = OFFLINE_ENGINES[name](platform, plan)
    try:
        yield executor
    finally:
        executor.close()


def _state_path(platform: Platform, plan: Plan) -> Path:
    return platform.data.root / "online-state" / f"{plan.project}-{plan.hash[:12]}.msgpack"


def materialize(
    platform: Platform,
    *,
    project: str | Path | None = None,
    follow: bool = False,
    stop: Callable[[], bool] | None = None,
) -> MaterializeReport:
    """Bring the online store up to date with the log (and keep following it with ``follow``).

    Batch features (profiles, neighbourhoods) come from the offline store's runs, so run the
    offline sink first (``dockline ingest`` does).
    """
    plan = load_plan(platform, project)
    configure_tracing(platform, "materialize")
    log = platform.open_log()
    store = open_online_store(platform)
    try:
        with offline_executor(platform, plan) as offline:
            materializer = Materializer(
                plan,
                log,
                store,
                clock=platform.clock,
                state_path=_state_path(platform, plan),
                batch_provider=offline.batch_run,
            )
            if follow:
                report = materializer.follow(stop=stop or (lambda: False))
            else:
                with tracing.span("features.materialize", {"plan_hash": plan.hash}) as span:
                    report = materializer.run_once()
                    if span is not None:
                        span.set_attribute("vectors", report.vectors)
    finally:
        store.close()
        log.close()
    # -- lineage: an OpenLineage run event (never fails the job) --
    from dockline.pipeline.lineage import record_materialize

    record_materialize(
        platform,
        plan_hash=plan.hash,
        vectors=report.vectors,
        events=report.events,
        seconds=report.seconds,
    )
    # -- end lineage --
    return report


def _source_hashes(platform: Platform, plan: Plan) -> dict[str, str]:
    """Per source, a hash over its offline partitions' manifests (their content hashes)."""
    hashes: dict[str, str] = {}
    for spec in plan.sources:
        digest = hashlib.sha256()
        for manifest in sorted(platform.data.offline(spec.table).glob("date=*/_manifest.json")):
            meta = DatasetMetadata.read(manifest)
            digest.update(f"{meta.partition}:{meta.content_hash}\n".encode())
        hashes[spec.table] = digest.hexdigest()
    return hashes


def _trained_on(platform: Platform) -> Callable[[DatasetMetadata], str | None]:
    """Which registered model (by its training lineage) was trained on a dataset, if any."""

    def in_use(meta: DatasetMetadata) -> str | None:
        for path in sorted((platform.data.lineage / "training").glob("*.json")):
            try:
                run = TrainingMetadata.read(path)
            except ContractError:
                continue
            if (run.input_dataset_name, run.input_dataset_version) == (
                meta.dataset_name,
                meta.dataset_version,
            ):
                return f"model {run.model_name} version {run.model_version}"
        return None

    return in_use


def build_dataset(
    platform: Platform,
    *,
    label: str,
    start: datetime,
    end: datetime,
    every: timedelta,
    out: Path,
    name: str | None = None,
    project: str | Path | None = None,
    force: bool = False,
    engine: str | None = None,
) -> DatasetMetadata:
    """:func:`build_dataset_published`'s dataset, for callers that need not know whether it
    was written, kept unchanged or replaced."""
    return build_dataset_published(
        platform,
        label=label,
        start=start,
        end=end,
        every=every,
        out=out,
        name=name,
        project=project,
        force=force,
        engine=engine,
    ).metadata


def build_dataset_published(
    platform: Platform,
    *,
    label: str,
    start: datetime,
    end: datetime,
    every: timedelta,
    out: Path,
    name: str | None = None,
    project: str | Path | None = None,
    force: bool = False,
    engine: str | None = None,
) -> Published:
    """A point-in-time training set: every entity × every ``every`` in ``[start, end)``.

    Built in a staging directory beside ``out`` and then published: datasets are immutable, so
    an ``out`` holding a different dataset is refused (``force`` replaces it unless a
    registered model was trained on it); the same dataset again is kept as it is. ``engine``
    (``duckdb`` or ``spark``; default ``features.engine``) computes it: same rows either way.
    """
    began = time.perf_counter()  # lineage: the build's duration
    plan = load_plan(platform, project)
    if label not in plan.label_names:
        raise ConfigError(f"--label must be one of {list(plan.label_names)}; got {label!r}")
    if end <= start:
        raise ConfigError(f"--end must be after --start; got {start} .. {end}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with offline_pit_executor(platform, plan, engine) as offline:
        entities = offline.entities(start, end)
        if not entities:
            raise ConfigError(f"no entity has events between {start} and {end}")
        spine = grid_spine(entities, start, end, every)
        staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
        try:
            build_training_set(
                offline,
                spine,
                staged,
                name=name or out.name,
                label=label,
                clock=platform.clock,
                source_hashes=_source_hashes(platform, plan),
                publish_as=out,
            )
            published = publish_dataset(staged, out, force=force, in_use=_trained_on(platform))
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    # -- lineage: an OpenLineage run event (never fails the build) --
    from dockline.pipeline.lineage import record_dataset

    record_dataset(platform, published.metadata, seconds=time.perf_counter() - began)
    # -- end lineage --
    return published


def _log_time_range(platform: Platform, plan: Plan) -> tuple[int, int]:
    """The ``ingested_at`` range of the offline store (µs), to default consistency windows."""
    spec = plan.sources[0]
    for candidate in plan.sources:
        if candidate.name == plan.groups[0].source:
            spec = candidate
    pattern = str(platform.data.offline(spec.table) / "**" / "*.parquet")
    with duckdb.connect() as con:
        row = con.execute(
            f"select epoch_us(min({spec.ingested_at})), epoch_us(max({spec.ingested_at}))"
            " from read_parquet(?, hive_partitioning = true)",
            [pattern],
        ).fetchone()
    if row is None or row[0] is None:
        raise ConfigError("the offline store is empty; run `dockline ingest` first")
    return int(row[0]), int(row[1])


def check_consistency(
    platform: Platform,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    sample: int = 2000,
    seed: int = 0,
    project: str | Path | None = None,
) -> ConsistencyReport:
    """Replay the log online and compare sampled vectors with the offline executor."""
    plan = load_plan(platform, project)
    log = platform.open_log()
    try:
        with offline_executor(platform, plan) as offline:
            return measure_consistency(
                plan,
                log,
                offline,
                start_us=None if start is None else to_micros(start),
                end_us=None if end is None else to_micros(end),
                sample=sample,
                seed=seed,
                batch_provider=offline.batch_run,
            )
    finally:
        log.close()


def check_served_consistency(
    platform: Platform,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    project: str | Path | None = None,
) -> ServedConsistencyReport:
    """Recompute offline, at their request times, the vectors serving logged in ``[start, end)``.

    Reads ``serving/predictions/`` (every row that carries its served vector); a log written
    before vectors were logged has none and is counted under ``skipped``.
    """
    plan = load_plan(platform, project)
    files = sorted(platform.data.serving_predictions.rglob("*.parquet"))
    if not files:
        raise ConfigError(
            "no prediction log to check; serve some requests first",
            reason="not_found",
            where=str(platform.data.serving_predictions),
        )
    where, params = [], [[str(f) for f in files]]
    if start is not None:
        where.append("logged_at >= ?")
        params.append(start)  # type: ignore[arg-type]
    if end is not None:
        where.append("logged_at < ?")
        params.append(end)  # type: ignore[arg-type]
    clause = f"where {' and '.join(where)}" if where else ""
    with duckdb.connect() as con:
        names = {
            r[0]
            for r in con.execute(
                "describe select * from read_parquet(?, union_by_name = true)", params[:1]
            ).fetchall()
        }
        vector = "vector" if "vector" in names else "null::double[] as vector"
        served = con.sql(
            f"select entity, logged_at, {vector}"
            f" from read_parquet(?, union_by_name = true) {clause}",
            params=params,
        ).to_arrow_table()
    with offline_executor(platform, plan) as offline:
        return measure_served_consistency(plan, offline, served)


def heal_online(
    platform: Platform, *, at: datetime | None = None, project: str | Path | None = None
) -> HealReport:
    """Recompute every entity's vector offline at ``at`` and overwrite the online store.

    ``at`` defaults to the newest ingestion time in the offline store (what is known now).
    """
    plan = load_plan(platform, project)
    t_us = to_micros(at) if at is not None else _log_time_range(platform, plan)[1]
    store = open_online_store(platform)
    try:
        with offline_executor(platform, plan) as offline:
            entities = offline.entities(from_micros(0), from_micros(t_us + 1))
            return heal(plan, offline, store, entities, t_us, clock=platform.clock)
    finally:
        store.close()
