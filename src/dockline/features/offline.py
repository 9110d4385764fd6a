"""The offline executor: point-in-time feature values for a spine, rendered as DuckDB SQL.

It reads only the :class:`~dockline.features.plan.Plan` and follows ``docs/features.md`` exactly.
Times are handled as BIGINT microseconds inside DuckDB. The core of every group is "the newest
event known at t" (rules 1–3); it is computed in two ways:

* **fast path** — for an entity whose events, ordered by ``avail = max(event_ts, ingested_at)``,
  are strictly increasing in ``avail`` and non-decreasing in ``event_ts`` (the normal case: a feed
  that is ingested in order), one ``ASOF JOIN`` on ``avail`` is exact. One vectorized pass over
  the source in storage order (the offline store writes rows sorted by key and time) finds the
  entities that break this, or are not stored in order; when it cannot decide, a window pass
  (``lag``) in SQL does;
* **general path** — for the others: duplicates collapsed by ``(event_ts, ingested_at)`` (greater
  value wins), then the "staircase" of events that are the newest at some time (an event is kept
  iff its ``avail`` is smaller than that of every newer event), on which ``ASOF`` is again exact.

Windowed aggregations use a bucketed range join (points × events of the same entity in the few
buckets the window touches), filtered exactly on ``avail <= t`` and ``t - w < event_ts <= t``, so
they need no ordering assumption. Large spines are processed in time chunks under DuckDB's
``memory_limit`` (spilling to a private temporary directory).

This module keeps the executor (setup, caching, chunking, the public API); its parts live in
private modules: ``_offline_scope`` (the SQL of one chunk of points), ``_offline_order`` (the
storage-order scan), ``_offline_batch`` (profiles and neighbourhoods) and ``_offline_sql`` (the
DuckDB dialect). What the Spark executor writes alike is shared: ``_plan_sql`` (the SQL builder
with dialect hooks) and ``_spine`` (spine in, features table out).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from dockline.core.errors import StorageError
from dockline.core.time import to_micros
from dockline.features._offline_batch import (
    HOURS_OF_WEEK,
    neighbourhood_runs,
    profile_columns,
    profile_run,
)
from dockline.features._offline_order import (
    Order,
    file_batches,
    row_groups,
    scan_order,
    table_batches,
)
from dockline.features._offline_scope import Scope, Source
from dockline.features._offline_sql import DUCKDB, quote
from dockline.features._plan_sql import check_columns, check_sources, plan_query, source_view_sql
from dockline.features._spine import (
    distinct_points,
    finish_table,
    grid_spine,
    in_points_order,
    output_schema,
    spine_columns,
)
from dockline.features.plan import BatchProvider, Plan, SourceSpec

__all__ = [
    "HOURS_OF_WEEK",
    "BatchProvider",
    "OfflineExecutor",
    "entities_in",
    "finish_table",
    "grid_spine",
    "output_schema",
    "profile_columns",
    "spine_columns",
]

# the storage-order scan's former names here (tests import them from this module)
_file_batches = file_batches
_scan_order = scan_order
_table_batches = table_batches

CHUNK_POINTS = 2_000_000
"""Spines with more distinct points than this are processed in time chunks of this size."""


class OfflineExecutor:
    """Computes a plan's features (and labels) at arbitrary points, point-in-time correct.

    ``sources`` maps each source *table* (``SourceSpec.table``) to a Parquet glob or directory of
    the offline store, or to an in-memory Arrow table. Call :meth:`close` when done (or use the
    executor as a context manager).
    """

    def __init__(
        self,
        plan: Plan,
        sources: Mapping[str, str | pa.Table],
        *,
        memory_limit: str = "2GB",
        threads: int | None = None,
        batch_provider: BatchProvider | None = None,
    ) -> None:
        self.plan = plan
        self.batch_provider = batch_provider
        check_sources(plan, sources)
        self._tmp = Path(tempfile.mkdtemp(prefix="dockline-offline-"))
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            "temp_directory": str(self._tmp),
            "preserve_insertion_order": False,
        }
        if threads is not None:
            config["threads"] = threads
        self._threads = threads or os.cpu_count() or 1
        self._con = duckdb.connect(config=config)
        self._con.execute("SET TimeZone = 'UTC'")
        self._seq = itertools.count()
        self._runs: dict[int, dict[str, pa.Table]] = {}
        self._sources: dict[str, Source] = {}
        raws: dict[str, tuple[str, str | pa.Table]] = {}
        for i, spec in enumerate(plan.sources):
            if spec.table not in raws:
                raws[spec.table] = self._register_raw(len(raws), spec.table, sources[spec.table])
            raw, data = raws[spec.table]
            self._sources[spec.name] = self._register_source(i, spec, raw, data)

    # -- setup ------------------------------------------------------------------------------

    def _register_raw(
        self, i: int, table: str, source: str | pa.Table
    ) -> tuple[str, str | pa.Table]:
        name = f"_raw_{i}"
        if isinstance(source, pa.Table):
            self._con.register(name, source)
            return name, source
        path = Path(source)
        pattern = str(path / "**" / "*.parquet") if path.is_dir() else str(source)
        literal = pattern.replace("'", "''")
        try:
            self._con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{literal}',"
                " hive_partitioning = true, union_by_name = true)"
            )
        except duckdb.Error as exc:
            raise StorageError(
                f"cannot read the offline store for table {table!r}: {exc}", where=pattern
            ) from exc
        return name, pattern

    def _register_source(self, i: int, spec: SourceSpec, raw: str, data: str | pa.Table) -> Source:
        described = self._con.execute(f"DESCRIBE SELECT * FROM {raw}").fetchall()
        types = {str(row[0]): str(row[1]).upper() for row in described}
        check_columns(spec, types)

        def micros(column: str) -> str:
            if types[column].startswith("TIMESTAMP"):
                return f"epoch_us({quote(column)})"
            return f"CAST({quote(column)} AS BIGINT)"

        ets, ing = micros(spec.event_ts), micros(spec.ingested_at)
        view = f"_src_{i}"
        self._con.execute(f"CREATE VIEW {view} AS {source_view_sql(spec, raw, ets, ing, DUCKDB)}")
        is_path = isinstance(data, str)
        return Source(spec, view, is_path and types.get("date") == "DATE", data)

    def close(self) -> None:
        """Release the DuckDB connection and its spill directory."""
        self._con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> OfflineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- small helpers ----------------------------------------------------------------------

    def _exec(self, sql: str) -> None:
        self._con.execute(sql)

    def _arrow(self, sql: str) -> pa.Table:
        return self._con.sql(sql).to_arrow_table()

    def _scalar(self, sql: str) -> Any:
        rows = self._con.execute(sql).fetchall()  # all: leaves no open result behind
        return rows[0][0] if rows else None

    def _name(self) -> str:
        return f"_q{next(self._seq)}"

    def _order_of(self, source: Source) -> Order | None:
        """The source's disordered entities, from one scan in storage order (cached).

        None when the scan cannot decide (a type or null it does not read exactly as the SQL
        view does); the caller then checks ordering in SQL.
        """
        if not source.scanned:
            source.scanned = True
            spec = source.spec
            columns = (spec.key, spec.event_ts, spec.ingested_at)
            if isinstance(source.data, pa.Table):
                found = scan_order([(source.data, columns)], table_batches, 1)
            else:
                literal = source.data.replace("'", "''")
                files = self._con.execute(f"SELECT file FROM glob('{literal}')").fetchall()
                units = [(g, columns) for f in files for g in row_groups(str(f[0]))]
                found = scan_order(units, file_batches, self._threads)
            if found is not None:
                source.order = found
                source.n_keys = found.n_keys
                if len(found.bad):
                    name = f"_bad_{source.view}"
                    self._con.register(name, pa.table({"k": found.bad}))
                    found.table = name
        return source.order

    def _entity_count(self, source: Source) -> int:
        """Distinct entities of a source (from the order scan when it ran, else by SQL)."""
        if source.n_keys is None:
            count = self._scalar(f"SELECT count(DISTINCT _dl_k) FROM {source.view}")
            source.n_keys = int(count or 0)
        return source.n_keys

    # -- public API -------------------------------------------------------------------------

    def features(self, spine: pa.Table, *, labels: bool = False) -> pa.Table:
        """Features (and labels) at every spine row, sorted by ``(as_of, key)``; none dropped."""
        keys, times = spine_columns(self.plan, spine)
        return self._compute(keys, times, labels=labels, batch=True)

    def batch_run(self, run_us: int) -> dict[str, pa.Table]:
        """Batch features of run ``run_us`` (those whose ``every`` divides it).

        Profiles: key + ``h000``..``h167``; neighbourhoods: key + ``value``. Runs are cached.
        """
        names = [p.name for p in self.plan.profiles] + [n.name for n in self.plan.neighbourhoods]
        for name in names:
            self._batch_runs(name, [run_us])
        return dict(self._runs.get(run_us, {}))

    def _batch_runs(self, name: str, runs: Sequence[int]) -> None:
        """Compute and cache batch feature ``name`` at each of ``runs`` not cached yet."""
        for profile in self.plan.profiles:
            if profile.name == name:
                for run in runs:
                    if run % profile.every_us == 0 and name not in self._runs.get(run, {}):
                        self._runs.setdefault(run, {})[name] = profile_run(self, profile, run)
        for hood in self.plan.neighbourhoods:
            if hood.name == name:
                todo = sorted(
                    {
                        r
                        for r in runs
                        if r % hood.every_us == 0 and name not in self._runs.get(r, {})
                    }
                )
                if todo:
                    for run, table in neighbourhood_runs(self, hood, todo).items():
                        self._runs.setdefault(run, {})[name] = table

    def known_until(self, source: str) -> int | None:
        """The newest ``ingested_at`` (µs) of source ``source``'s events: how far its data is
        known now. None when it has no events. Labels use it to tell unknown from negative."""
        view = self._sources[self.plan.source(source).name].view
        value = self._scalar(f"SELECT max(_dl_ing) FROM {view}")
        return None if value is None else int(value)

    def entities(self, start: datetime, end: datetime) -> list[str]:
        """Entities with events of any feature group's source in ``[start, end)``, sorted."""
        lo, hi = to_micros(start), to_micros(end)
        parts = []
        for name in sorted({g.source for g in self.plan.groups}):
            parts.append(self._sources[name].events(lo_ets=lo, hi_ets=hi - 1))
        union = " UNION ALL ".join(f"SELECT k FROM ({p})" for p in parts)
        rows = self._con.execute(f"SELECT DISTINCT k FROM ({union}) ORDER BY k").fetchall()
        return [str(r[0]) for r in rows]

    # -- the computation --------------------------------------------------------------------

    def _compute(
        self,
        keys: pa.Array,
        times: pa.Array,
        *,
        labels: bool,
        batch: bool,
        plan: Plan | None = None,
    ) -> pa.Table:
        plan = plan or self.plan
        schema = output_schema(plan, labels)
        if len(keys) == 0:
            return schema.empty_table()
        q = self._name()
        points, counts = distinct_points(keys, times)
        n_pts = points.num_rows
        results = []
        for lo in range(0, n_pts, CHUNK_POINTS):
            part = points.slice(lo, CHUNK_POINTS)
            results.append(self._chunk(plan, f"{q}_c{lo}", part, labels=labels, batch=batch))
        table = pa.concat_tables(results) if len(results) > 1 else results[0]
        if n_pts != len(keys):  # repeat the duplicated spine points
            table = table.take(pa.array(np.repeat(np.arange(n_pts), counts)))
        return finish_table(table, schema)

    def _chunk(
        self, plan: Plan, c: str, points: pa.Table, *, labels: bool, batch: bool
    ) -> pa.Table:
        """Features of one chunk of ``points`` (pid, k, t; sorted by t)."""
        pts = f"{c}_pts"
        keys = f"{c}_keys"
        self._con.register(pts, points)
        times = points.column("t")
        min_t, max_t = int(times[0].as_py()), int(times[-1].as_py())
        scope = Scope(self, plan, c, pts, keys, min_t, max_t)
        try:
            self._exec(f"CREATE TEMP TABLE {keys} AS SELECT DISTINCT k FROM {pts}")
            table = self._arrow(plan_query(scope, plan, DUCKDB, labels=labels, batch=batch))
        finally:
            scope.drop()
        # back in pid order; key and time come from the points themselves (already in order)
        return in_points_order(table, points, plan.key)

    # -- batch features ---------------------------------------------------------------------

    def _run_tables(self, name: str, runs: Sequence[int]) -> dict[int, pa.Table | None]:
        if self.batch_provider is not None:
            return {run: self.batch_provider(run).get(name) for run in runs}
        self._batch_runs(name, runs)
        return {run: self._runs.get(run, {}).get(name) for run in runs}


def entities_in(
    plan: Plan, sources: Mapping[str, str | pa.Table], start: datetime, end: datetime
) -> list[str]:
    """Entities with events of the plan's feature-group sources in ``[start, end)`` (for grids)."""
    executor = OfflineExecutor(plan, sources, threads=None)
    try:
        return executor.entities(start, end)
    finally:
        executor.close()
