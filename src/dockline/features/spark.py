"""The Spark executor of the compiled plan: the DuckDB executor's rows, on Spark.

It reads only the :class:`~dockline.features.plan.Plan` (no second feature definition) and the
same offline store, and follows the rules of ``docs/features.md``. What it writes as the DuckDB
executor does (source views and event selects, the staircase, windows, batch joins, labels, the
final select of a plan) comes from the shared builder ``_plan_sql``; the Spark SQL dialect that
fills its hooks lives in ``_spark_sql``. Where the DuckDB executor picks between a fast and a
general path for "the newest event known at t", this one always takes the general one, which
needs no ordering assumption and scales out: duplicates collapsed by
``(event_ts, ingested_at)``, the staircase of events that are the newest at some time, and an
as-of lookup on ``avail`` written as one window pass over events and probes. ``delta`` splits
its reference set in two: the events known at ``t - w`` (the staircase again) and those ingested
late in ``(t - w, t]`` (a bucketed join). Windows use the same bucketed range join as DuckDB.
Batch features reuse the NumPy parts of ``_offline_batch`` (nearest neighbours and their means),
so only the SQL differs.

pyspark is imported lazily (here and in ``_spark_session``): ``pip install 'dockline[spark]'``
and a Java runtime. One local Spark session per process (:func:`spark_session`) is started on
first use and reused.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from dockline.core.errors import ConfigError, StorageError
from dockline.core.time import to_micros
from dockline.features import _spark_sql as sql
from dockline.features._offline_batch import neighbour_means, subplan
from dockline.features._plan_sql import (
    NULL_DOUBLE,
    WINDOWED,
    EventSource,
    alive,
    batch_join_sql,
    buckets_sql,
    check_columns,
    check_sources,
    dedup_sql,
    group_columns,
    group_inputs,
    label_column,
    plan_query,
    run_sql,
    source_view_sql,
    staircase_sql,
    windowed_value,
    windows_sql,
)
from dockline.features._spark_session import JAVA_HINT, java_available, quiet, spark_session
from dockline.features._spine import (
    distinct_points,
    finish_table,
    in_points_order,
    output_schema,
    spine_columns,
)
from dockline.features.plan import GroupSpec, NeighbourSpec, Plan, ProfileSpec, SourceSpec

__all__ = ["JAVA_HINT", "SparkExecutor", "java_available", "spark_session"]

_executors = itertools.count()


class SparkExecutor:
    """Computes a plan's features (and labels) at arbitrary points on Spark.

    Same contract as :class:`~dockline.features.offline.OfflineExecutor`: ``sources`` maps each
    source table to a Parquet directory (or glob) of the offline store, or to an Arrow table;
    :meth:`features` returns the same columns, rows and order. Call :meth:`close` when done.
    """

    def __init__(
        self, plan: Plan, sources: Mapping[str, str | pa.Table], *, session: Any = None
    ) -> None:
        self.plan = plan
        check_sources(plan, sources)
        self._spark = session if session is not None else spark_session()
        self._prefix = f"_dl{next(_executors)}"
        self._seq = itertools.count()
        self._views: list[str] = []
        self._cached: list[Any] = []
        self._sources: dict[str, EventSource] = {}
        self._known: dict[str, int | None] = {}
        raws: dict[str, str] = {}
        for spec in plan.sources:
            if spec.table not in raws:
                raws[spec.table] = self._read(spec.table, sources[spec.table])
            self._sources[spec.name] = self._register_source(spec, raws[spec.table])

    # -- setup ------------------------------------------------------------------------------

    def _read(self, table: str, source: str | pa.Table) -> str:
        with quiet():
            if isinstance(source, pa.Table):
                frame = self._spark.createDataFrame(source)
            else:
                try:
                    frame = self._spark.read.option("mergeSchema", "true").parquet(str(source))
                except Exception as exc:  # pyspark's AnalysisException and friends
                    raise StorageError(
                        f"cannot read the offline store for table {table!r}: {exc}",
                        where=str(source),
                    ) from exc
        return self._register(frame)

    def _register_source(self, spec: SourceSpec, raw: str) -> EventSource:
        types = {f.name: f.dataType.simpleString() for f in self._spark.table(raw).schema.fields}
        check_columns(spec, types)
        ets = sql.micros(spec.event_ts, types[spec.event_ts])
        ing = sql.micros(spec.ingested_at, types[spec.ingested_at])
        view = self._view(source_view_sql(spec, raw, ets, ing, sql.SPARK))
        return EventSource(spec, view, types.get("date") == "date", sql.SPARK)

    def close(self) -> None:
        """Drop this executor's views and cached tables (the session stays for reuse)."""
        for frame in self._cached:
            frame.unpersist()
        for name in self._views:
            self._spark.catalog.dropTempView(name)
        self._cached, self._views = [], []

    def __enter__(self) -> SparkExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- small helpers ----------------------------------------------------------------------

    def _register(self, frame: Any, *, cache: bool = False) -> str:
        name = f"{self._prefix}_{next(self._seq)}"
        if cache:
            frame = frame.cache()
            self._cached.append(frame)
        frame.createOrReplaceTempView(name)
        self._views.append(name)
        return name

    def _view(self, query: str, *, cache: bool = False) -> str:
        """A temp view of ``query`` (``cache``: computed once, for views read several times)."""
        return self._register(self._spark.sql(query), cache=cache)

    def _arrow(self, query: str) -> pa.Table:
        frame = self._spark.sql(query)
        with quiet():
            if hasattr(frame, "toArrow"):  # pyspark >= 4
                return frame.toArrow()
            return frame._collect_as_arrow_table()  # pragma: no cover - pyspark 3.5

    def _scalar(self, query: str) -> Any:
        rows = self._spark.sql(query).collect()
        return rows[0][0] if rows else None

    def _table(self, table: pa.Table, *, cache: bool = False) -> str:
        with quiet():
            return self._register(self._spark.createDataFrame(table), cache=cache)

    # -- public API -------------------------------------------------------------------------

    def features(self, spine: pa.Table, *, labels: bool = False) -> pa.Table:
        """Features (and labels) at every spine row, sorted by ``(as_of, key)``; none dropped."""
        keys, times = spine_columns(self.plan, spine)
        return self._compute(keys, times, labels=labels, batch=True)

    def known_until(self, source: str) -> int | None:
        """The newest ``ingested_at`` (µs) of ``source``'s events (None when it has none)."""
        name = self.plan.source(source).name
        if name not in self._known:  # one job per source, not per label
            value = self._scalar(f"SELECT max(_dl_ing) FROM {self._sources[name].view}")
            self._known[name] = None if value is None else int(value)
        return self._known[name]

    def entities(self, start: datetime, end: datetime) -> list[str]:
        """Entities with events of any feature group's source in ``[start, end)``, sorted."""
        lo, hi = to_micros(start), to_micros(end)
        parts = [
            f"SELECT k FROM ({self._sources[name].events(lo_ets=lo, hi_ets=hi - 1)})"
            for name in sorted({g.source for g in self.plan.groups})
        ]
        rows = self._spark.sql(f"SELECT DISTINCT k FROM ({' UNION ALL '.join(parts)})").collect()
        return sorted(str(r[0]) for r in rows)

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
        points, counts = distinct_points(keys, times)
        table = _Scope(self, plan, points).run(labels=labels, batch=batch)
        # back in pid order; key and time come from the points themselves
        table = in_points_order(table, points, plan.key)
        if points.num_rows != len(keys):  # repeat the duplicated spine points
            table = table.take(pa.array(np.repeat(np.arange(points.num_rows), counts)))
        return finish_table(table, schema)


class _Scope:
    """The views of one computation over ``points`` (pid, k, t), and the SQL that fills them."""

    def __init__(self, ex: SparkExecutor, plan: Plan, points: pa.Table) -> None:
        self.ex = ex
        self.plan = plan
        self.times = np.asarray(points.column("t"), dtype=np.int64)
        self.min_t, self.max_t = int(self.times.min()), int(self.times.max())
        self.pts = ex._table(points, cache=True)
        self.base: str | None = None  # the final select starts from the points themselves

    def run(self, *, labels: bool, batch: bool) -> pa.Table:
        query = plan_query(self, self.plan, sql.SPARK, labels=labels, batch=batch)
        return self.ex._arrow(query)

    # -- "the newest event known at t" -------------------------------------------------------

    def staircase(self, rel: str, cols: Sequence[str]) -> tuple[str, str]:
        """(dedup, stair) views of ``rel``: its events collapsed by ``(k, ets, ing)`` and, of
        those, the ones newest at some time (see ``_plan_sql.staircase_sql``)."""
        dedup = self.ex._view(dedup_sql(rel, cols), cache=True)
        return dedup, self.ex._view(staircase_sql(dedup))

    def newest(self, stair: str, cols: Sequence[str], offsets: Mapping[str, int]) -> dict[str, str]:
        """Per tag, a view (pid, ets, ing, cols…): the newest event known at ``t + offset``."""
        found = self.ex._view(
            sql.asof_union(
                f"SELECT * FROM {stair}",
                ["avail"],
                ["ets", "ing", *cols],
                sql.probes(self.pts, offsets),
            ),
            cache=len(offsets) > 1,
        )
        picked = "".join(f", s.{c} AS {c}" for c in cols)
        return {
            tag: self.ex._view(
                f"SELECT pid, s.ets AS ets, s.ing AS ing{picked} FROM {found} WHERE tag = '{tag}'"
            )
            for tag in offsets
        }

    # -- feature groups --------------------------------------------------------------------

    def group(
        self, gi: int, group: GroupSpec, joins: list[tuple[str, str]], exprs: dict[str, str]
    ) -> str:
        """Add the group's views; return its ``__as_of`` expression (BIGINT µs)."""
        source = self.ex._sources[group.source]
        values, preds = group_inputs(group, sql.SPARK)  # source column / predicate → alias
        cols = group_columns(values, preds, sql.SPARK)
        deltas = [(j, a) for j, a in enumerate(group.aggs) if a.op == "delta"]
        # a delta may reach back to any older event (rule 4): then the whole history
        lo = None if deltas else self.min_t - group.horizon_us
        rel = self.ex._view(source.events(cols, lo_ets=lo, hi_avail=self.max_t), cache=True)
        dedup, stair = self.staircase(f"SELECT * FROM {rel}", list(values.values()))
        offsets = {"n": 0} | {f"d{j}": -int(a.window_us or 0) for j, a in deltas}
        found = self.newest(stair, list(values.values()), offsets)
        n = f"g{gi}"
        joins.append((n, found["n"]))

        def live(expr: str) -> str:
            return alive(n, group.ttl_us, expr)

        if any(a.op in WINDOWED for a in group.aggs):
            windows = windows_sql(group, values, preds, self.pts, rel, sql.SPARK)
            joins.append((f"w{gi}", self.ex._view(windows)))
        for j, agg in enumerate(group.aggs):
            if agg.op == "last":
                assert agg.column is not None
                exprs[agg.name] = live(f"{n}.{values[agg.column]}")
            elif agg.op in WINDOWED:
                exprs[agg.name] = live(windowed_value(agg.op, f"w{gi}.f{j}"))
            elif agg.op == "delta":
                assert agg.column is not None
                d = f"d{gi}_{j}"
                c = values[agg.column]
                joins.append((d, self.delta(dedup, found[f"d{j}"], c, int(agg.window_us or 0))))
                exprs[agg.name] = live(f"{n}.{c} - {d}.ref.c")
            else:  # time_since
                assert agg.predicate is not None
                s = f"s{gi}_{j}"
                hits = source.events(hi_avail=self.max_t, where=sql.expr_sql(agg.predicate))
                _, hit_stair = self.staircase(hits, [])
                joins.append((s, self.newest(hit_stair, [], {"n": 0})["n"]))
                exprs[agg.name] = live(f"(p.t - {s}.ets) / {sql.real(agg.unit_us)}")
        return live(f"{n}.ets")

    def delta(self, dedup: str, known: str, c: str, window_us: int) -> str:
        """View (pid, ref struct<ets, ing, c>): the newest event with ``ets <= t - w`` known at
        t. Such an event is either known at ``t - w`` already (``known``: the staircase probed
        there) or ingested late, in ``(t - w, t]`` (a bucketed join on avail); the newer wins."""
        w = window_us
        width = max(1, w // 4)
        late = self.ex._view(
            f"SELECT p.pid, max(named_struct('ets', e.ets, 'ing', e.ing, 'c', e.{c})) AS r"
            f" FROM ({buckets_sql(self.pts, width, w, sql.SPARK)}) p JOIN"
            f" (SELECT *, {sql.fdiv('avail', width)} AS b FROM {dedup}"
            f" WHERE avail > {self.min_t - w} AND avail <= {self.max_t}) e"
            f" ON p.k = e.k AND p.b = e.b"
            f" WHERE e.avail > p.t - {w} AND e.avail <= p.t AND e.ets <= p.t - {w} GROUP BY p.pid"
        )
        return self.ex._view(
            f"SELECT p.pid, greatest(CASE WHEN a.ets IS NOT NULL THEN named_struct('ets', a.ets,"
            f" 'ing', a.ing, 'c', a.{c}) END, l.r) AS ref FROM {self.pts} p"
            f" LEFT JOIN {known} a ON a.pid = p.pid LEFT JOIN {late} l ON l.pid = p.pid"
        )

    # -- static, batch, labels ---------------------------------------------------------------

    def static(self, joins: list[tuple[str, str]], exprs: dict[str, str]) -> None:
        """Static attributes: the newest information event known at t (rule 5)."""
        spec = self.plan.static
        assert spec is not None
        source = self.ex._sources[spec.source]
        cols = [f"{sql.double(sql.quote(c))} AS v{i}" for i, c in enumerate(spec.columns)]
        names = [f"v{i}" for i in range(len(spec.columns))]
        _, stair = self.staircase(source.events(cols, hi_avail=self.max_t), names)
        joins.append(("st", self.newest(stair, names, {"n": 0})["n"]))
        for i, name in enumerate(spec.names):
            exprs[name] = f"st.v{i}"

    def _runs(self, every_us: int, lag_us: int) -> list[int]:
        """The batch runs in force at the points (from the points in memory: no Spark job)."""
        lo = (self.min_t - lag_us) // every_us
        hi = (self.max_t - lag_us) // every_us
        if hi - lo > 100_000:
            raise ConfigError(f"the spine spans {hi - lo} batch runs; split it into shorter ranges")
        return [int(r) for r in np.unique((self.times - lag_us) // every_us * every_us)]

    def profile(self, profile: ProfileSpec, joins: list[tuple[str, str]]) -> str:
        """Join the profile value of the run in force at t, at t's hour of week (rule 8)."""
        runs = self._runs(profile.every_us, profile.lag_us)
        tz = self.plan.source(profile.source).tz
        source = self.ex._sources[profile.source]
        value = sql.double(sql.expr_sql(profile.value))
        events = source.events(
            [f"{value} AS v"], lo_ets=runs[0] - profile.lookback_us, hi_avail=runs[-1]
        )
        table = self.ex._table(pa.table({"r": pa.array(runs, pa.int64())}))
        long = self.ex._view(
            f"SELECT x.r, e.k, {sql.how(tz, 'e.ets')} AS h, avg(e.v) AS v FROM {table} x"
            f" JOIN ({events}) e ON e.ets >= x.r - {profile.lookback_us} AND e.ets < x.r"
            " AND e.avail <= x.r WHERE e.v IS NOT NULL AND NOT isnan(e.v)"
            f" GROUP BY x.r, e.k, {sql.how(tz, 'e.ets')}"
        )
        alias = f"pr{len(joins)}"
        in_force = run_sql("p.t", profile.every_us, profile.lag_us, sql.SPARK)
        joins.append(
            (alias, self.ex._view(batch_join_sql(self.pts, long, in_force, sql.how(tz, "p.t"))))
        )
        return f"{alias}.v"

    def hood(self, hood: NeighbourSpec, joins: list[tuple[str, str]]) -> str:
        """Join the neighbourhood value of the run in force at t (rule 8)."""
        runs = self._runs(hood.every_us, hood.lag_us)
        source = self.ex._sources[hood.locations]
        lat, lon = sql.quote(hood.lat), sql.quote(hood.lon)
        events = source.events(
            [f"CAST({lat} AS DOUBLE) AS lat", f"CAST({lon} AS DOUBLE) AS lon"],
            hi_avail=runs[-1],
        )
        table = self.ex._table(pa.table({"r": pa.array(runs, pa.int64())}))
        # the location of each entity at each run: its newest event known at r (rule 5; ties
        # by the greater lat, then lon, nulls lowest, as the DuckDB executor orders them)
        located = self.ex._arrow(
            f"SELECT r, k, s.lat AS lat, s.lon AS lon FROM (SELECT x.r, e.k,"
            f" max(named_struct('ets', e.ets, 'ing', e.ing, 'lat', e.lat, 'lon', e.lon)) AS s"
            f" FROM {table} x JOIN ({events}) e ON e.avail <= x.r GROUP BY x.r, e.k)"
            " WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL ORDER BY r, k"
        )
        alias = f"nb{len(joins)}"
        if located.num_rows == 0:
            return NULL_DOUBLE
        keys = located.column("k").combine_chunks()
        computed = self.ex._compute(
            keys,
            located.column("r").combine_chunks(),
            labels=False,
            batch=False,
            plan=subplan(self.plan, hood.feature),
        )
        # the same (r, k) order; None → NaN
        values = np.asarray(computed.column(hood.feature).to_numpy(zero_copy_only=False), float)
        parts = [
            pa.table(
                {"r": pa.array(np.full(len(here), run, dtype=np.int64)), "k": here, "v": value}
            )
            for run, here, value in neighbour_means(located, values, runs, hood.k)
        ]
        lookup = self.ex._table(pa.concat_tables(parts))
        in_force = run_sql("p.t", hood.every_us, hood.lag_us, sql.SPARK)
        joins.append((alias, self.ex._view(batch_join_sql(self.pts, lookup, in_force))))
        return f"{alias}.v"

    def labels(self, joins: list[tuple[str, str]]) -> list[str]:
        """Label columns (rule 9): events in (t, t + h], regardless of ingestion time."""
        out = []
        for i, label in enumerate(self.plan.labels):
            source = self.ex._sources[label.source]
            h = label.horizon_us
            alias = f"lb{i}"
            if label.op == "future_any":
                assert label.predicate is not None
                hits = source.events(
                    lo_ets=self.min_t + 1,
                    hi_ets=self.max_t + h,
                    where=sql.expr_sql(label.predicate),
                )
                # the first hit strictly after t
                nxt = sql.asof_union(
                    hits, ["ets"], ["ets"], sql.probes(self.pts, {"n": 0}), forward=True
                )
                view = self.ex._view(
                    f"SELECT x.pid, (x.s.ets IS NOT NULL AND x.s.ets <= p.t + {h}) AS v"
                    f" FROM ({nxt}) x JOIN {self.pts} p ON p.pid = x.pid"
                )
                joins.append((alias, view))
                out.append(label_column(alias, label, sql.SPARK))
            else:
                assert label.column is not None
                rows = source.events(
                    [f"{sql.double(sql.quote(label.column))} AS c"],
                    lo_ets=self.min_t + 1,
                    hi_ets=self.max_t + h,
                )
                dedup = f"SELECT k, ets, ing, max(c) AS c FROM ({rows}) GROUP BY k, ets, ing"
                # the newest (ets, ing) with ets <= t + h; a value only if it is after t
                last = sql.asof_union(
                    dedup, ["ets", "ing"], ["ets", "c"], sql.probes(self.pts, {"n": h})
                )
                view = self.ex._view(
                    f"SELECT x.pid, CASE WHEN x.s.ets > p.t THEN x.s.c END AS v"
                    f" FROM ({last}) x JOIN {self.pts} p ON p.pid = x.pid"
                )
                joins.append((alias, view))
                out.append(label_column(alias, label, sql.SPARK))
        return out
