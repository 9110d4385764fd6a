"""The DuckDB executor's SQL for one chunk of spine points: sources, groups, batch, labels.

A :class:`Scope` renders the plan for one chunk of points as temporary tables, each keyed by
the point's ``pid``; the executor's final select joins them (see ``offline.py`` for the paths
"newest known at t" takes). A :class:`Source` is one source registered as a DuckDB view.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.errors import ConfigError
from dockline.features._offline_batch import HOURS_OF_WEEK, profile_columns
from dockline.features._offline_order import Order
from dockline.features._offline_sql import DUCKDB, double, hkey, hkey_upto, how, quote
from dockline.features._plan_sql import (
    NULL_DOUBLE,
    WINDOWED,
    EventSource,
    alive,
    batch_join_sql,
    dedup_sql,
    group_columns,
    group_inputs,
    label_column,
    run_sql,
    staircase_sql,
    windowed_value,
    windows_sql,
)
from dockline.features.plan import AggSpec, GroupSpec, NeighbourSpec, Plan, ProfileSpec, SourceSpec

if TYPE_CHECKING:
    from dockline.features.offline import OfflineExecutor

__all__ = ["DELTA_LOOKBACK_US", "KEY_FILTER_SHARE", "Scope", "Source"]

KEY_FILTER_SHARE = 0.9
"""Events are filtered by the chunk's keys only when these are fewer than this share of all."""
DELTA_LOOKBACK_US = 2 * 86_400_000_000
"""How far before a chunk a delta first looks for its anchor events (then the whole history)."""


def _run_of(t: int, every_us: int, lag_us: int) -> int:
    return ((t - lag_us) // every_us) * every_us


class Source(EventSource):
    """A source registered as a DuckDB view, with what the storage-order scan found of it."""

    def __init__(self, spec: SourceSpec, view: str, hive_date: bool, data: str | pa.Table) -> None:
        super().__init__(spec, view, hive_date, DUCKDB)
        self.data = data  # the Parquet glob or the Arrow table behind ``view``
        self.scanned = False  # whether the storage-order scan ran (see OfflineExecutor._order_of)
        self.order: Order | None = None
        self.n_keys: int | None = None


class Scope:
    """The temporary tables of one chunk of points, and the SQL that fills them."""

    def __init__(
        self,
        ex: OfflineExecutor,
        plan: Plan,
        prefix: str,
        pts: str,
        keys: str,
        min_t: int,
        max_t: int,
    ) -> None:
        self.ex = ex
        self.plan = plan
        self.prefix = prefix
        self.pts = pts
        self.keys = keys
        self.min_t = min_t
        self.max_t = max_t
        self.tables: list[str] = [keys]
        self.views: list[str] = [pts]  # registered Arrow tables
        self.n_keys: int | None = None
        self.base: str | None = None  # query of every point to start the final select from
        self._n = itertools.count()

    def keys_for(self, source: Source) -> str | None:
        """The chunk's keys table, or None when it holds (nearly) every entity of ``source``.

        Filtering events by key only pays when it drops many of them; otherwise the semi-join
        costs more than the few extra events it would keep out of the joins.
        """
        if self.n_keys is None:
            self.n_keys = int(self.ex._scalar(f"SELECT count(*) FROM {self.keys}"))
        total = self.ex._entity_count(source)
        return None if self.n_keys >= KEY_FILTER_SHARE * total else self.keys

    def table(self, sql: str) -> str:
        name = f"{self.prefix}_t{next(self._n)}"
        self.ex._exec(f"CREATE TEMP TABLE {name} AS {sql}")
        self.tables.append(name)
        return name

    def drop(self) -> None:
        for name in reversed(self.tables):
            self.ex._exec(f"DROP TABLE IF EXISTS {name}")
        for name in self.views:
            self.ex._con.unregister(name)

    def register(self, table: pa.Table) -> str:
        name = f"{self.prefix}_a{next(self._n)}"
        self.ex._con.register(name, table)
        self.views.append(name)
        return name

    # -- "the newest event known at t" -------------------------------------------------------

    def newest(
        self, rel: str, cols: Sequence[str], source: Source, *, inline: bool = False
    ) -> tuple[str, str]:
        """Table (pid, ets, cols…): per point, the newest event of ``rel`` with avail <= t.

        ``rel`` yields k, ets, ing, avail and ``cols`` for a subset of ``source``'s events; ties
        on (ets, ing) go to the greater value of each column (nulls lowest), as rule 2 says.
        Also returns the table of entities that took the general path ("" if none). With
        ``inline``, when every entity takes the fast path, the first item is instead a query
        yielding every point (pid, k, t) with its newest event: the chunk's final select can
        start from it rather than join a materialized copy.
        """
        order = self.ex._order_of(source)
        if order is not None:
            # disordered in the whole source covers disordered in any subset of it
            bad = order.table or ""
            n_bad = len(order.bad)
        else:
            bad = self.table(
                f"SELECT DISTINCT k FROM (SELECT k, ets, avail, lag(ets) OVER w AS pe,"
                f" lag(avail) OVER w AS pa FROM ({rel}) WINDOW w AS (PARTITION BY k"
                f" ORDER BY avail)) WHERE pe > ets OR pa = avail"
            )
            n_bad = int(self.ex._scalar(f"SELECT count(*) FROM {bad}"))
        picked = "".join(f", e.{c}" for c in cols)
        if n_bad == 0:
            if inline:
                return (
                    f"SELECT p.pid, p.k, p.t, e.ets{picked} FROM {self.pts} p"
                    f" ASOF LEFT JOIN ({rel}) e ON p.k = e.k AND e.avail <= p.t"
                ), ""
            fast = self.table(
                f"SELECT p.pid, e.ets{picked} FROM {self.pts} p ASOF LEFT JOIN ({rel}) e"
                " ON p.k = e.k AND e.avail <= p.t"
            )
            return fast, ""
        good = (
            f"SELECT p.pid, e.ets{picked} FROM (SELECT * FROM {self.pts} WHERE k NOT IN"
            f" (SELECT k FROM {bad})) p ASOF LEFT JOIN (SELECT * FROM ({rel}) WHERE k NOT IN"
            f" (SELECT k FROM {bad})) e ON p.k = e.k AND e.avail <= p.t"
        )
        stair = staircase_sql(f"({dedup_sql(rel, cols, keys=bad)})")
        slow = (
            f"SELECT p.pid, e.ets{picked} FROM (SELECT * FROM {self.pts} WHERE k IN"
            f" (SELECT k FROM {bad})) p ASOF LEFT JOIN ({stair}) e"
            " ON p.k = e.k AND e.avail <= p.t"
        )
        return self.table(f"{good} UNION ALL {slow}"), bad

    # -- feature groups --------------------------------------------------------------------

    def group(
        self, gi: int, group: GroupSpec, joins: list[tuple[str, str]], exprs: dict[str, str]
    ) -> str:
        """Fill the group's tables; return its ``__as_of`` expression (BIGINT µs)."""
        source = self.ex._sources[group.source]
        values, preds = group_inputs(group, DUCKDB)  # source column / predicate → alias
        # a group of `last`s only picks values, never computes with them: they stay in their
        # stored type through the join (narrower rows to sort) and become DOUBLE at the end
        only_last = all(a.op in ("last", "time_since") for a in group.aggs)
        cols = group_columns(values, preds, DUCKDB, as_double=not only_last)
        lo = self.min_t - group.horizon_us
        self.ex._order_of(source)  # first: its scan also counts the entities for keys_for
        keys = self.keys_for(source)
        recent = source.events(cols, keys=keys, lo_ets=lo, hi_avail=self.max_t)
        rel = recent
        if any(a.op == "delta" for a in group.aggs):
            # the newest events before `lo`: a delta may reach back to them (rule 4). Look a
            # few days back first; only entities with nothing there need the whole history.
            def newest_before(events: str) -> str:
                return (
                    f"SELECT h.* FROM ({events}) h JOIN (SELECT k AS mk, max(ets) AS me"
                    f" FROM ({events}) GROUP BY k) m ON h.k = m.mk AND h.ets = m.me"
                )

            before = f"_dl_ets < {lo}"
            near = source.events(
                cols,
                keys=keys,
                lo_ets=lo - DELTA_LOOKBACK_US,
                hi_avail=self.max_t,
                where=before,
            )
            anchors = [self.table(newest_before(near))]
            missing = self.table(
                f"SELECT k FROM {self.keys} WHERE k NOT IN (SELECT k FROM {anchors[0]})"
            )
            if int(self.ex._scalar(f"SELECT count(*) FROM {missing}")):
                far = source.events(cols, keys=missing, hi_avail=self.max_t, where=before)
                anchors.append(self.table(newest_before(far)))
            union = " UNION ALL ".join(f"SELECT * FROM {a}" for a in anchors)
            rel = f"SELECT * FROM {self.table(f'{recent} UNION ALL {union}')}"
        elif any(a.op in WINDOWED for a in group.aggs):
            rel = f"SELECT * FROM {self.table(rel)}"
        last_cols = sorted(
            {values[a.column] for a in group.aggs if a.op in ("last", "delta") and a.column}
        )
        # the first group's newest events can be the base of the final select (no join) when
        # nothing else needs them as a table (delta joins them)
        inline = self.base is None and not any(a.op == "delta" for a in group.aggs)
        newest, bad = self.newest(rel, last_cols, source, inline=inline)
        if inline and not bad:
            self.base = newest
            n = "p"
        else:
            n = f"g{gi}"
            joins.append((n, newest))

        def live(sql: str) -> str:
            return alive(n, group.ttl_us, sql)

        if any(a.op in WINDOWED for a in group.aggs):
            windows = windows_sql(group, values, preds, self.pts, f"({rel})", DUCKDB)
            joins.append((f"w{gi}", self.table(windows)))
        for j, agg in enumerate(group.aggs):
            if agg.op == "last":
                assert agg.column is not None
                exprs[agg.name] = live(f"{n}.{values[agg.column]}")
            elif agg.op in WINDOWED:
                exprs[agg.name] = live(windowed_value(agg.op, f"w{gi}.f{j}"))
            elif agg.op == "delta":
                assert agg.column is not None and agg.window_us is not None
                d = f"d{gi}_{j}"
                joins.append((d, self._delta(rel, source, values[agg.column], agg, newest, bad)))
                exprs[agg.name] = live(f"{d}.v")
            else:  # time_since
                assert agg.predicate is not None
                s = f"s{gi}_{j}"
                hits = source.events(
                    keys=keys, hi_avail=self.max_t, where=f"({agg.predicate.to_sql()})"
                )
                joins.append((s, self.newest(hits, [], source)[0]))
                exprs[agg.name] = live(f"(p.t - {s}.ets) / {float(agg.unit_us)!r}")
        return live(f"{n}.ets")

    def _delta(self, rel: str, source: Source, c: str, agg: AggSpec, newest: str, bad: str) -> str:
        """Table (pid, v): last(c) minus c of the newest known event with ets <= t - w.

        Fast-path entities: the newest event with (ets, ing) <= (t - w, ∞) by one ASOF on the
        packed pair; if it is not yet known at t, every known event is older, so the newest
        known one (``newest``) is the reference. General-path entities: a direct search.
        """
        assert agg.column is not None and agg.window_us is not None
        column, window_us = agg.column, agg.window_us
        keep = f" WHERE k NOT IN (SELECT k FROM {bad})" if bad else ""
        good = (
            f"SELECT p.pid, CASE WHEN e.avail <= p.t THEN e.{c} ELSE n.{c} END AS ref,"
            f" n.{c} AS cur, e.ets AS rets FROM (SELECT * FROM {self.pts}{keep}) p"
            f" ASOF LEFT JOIN (SELECT *, {hkey('ets', 'ing')} AS hk FROM ({rel}){keep}) e"
            f" ON p.k = e.k AND e.hk <= {hkey_upto(f'p.t - {window_us}')}"
            f" LEFT JOIN {newest} n ON n.pid = p.pid"
        )
        sql = f"SELECT pid, CASE WHEN rets IS NOT NULL THEN cur - ref END AS v FROM ({good})"
        if bad:
            hist = source.events(
                [f"{double(quote(column))} AS c"],
                keys=bad,
                hi_avail=self.max_t,
            )
            slow = (
                f"SELECT p.pid, e.c AS ref, row_number() OVER (PARTITION BY p.pid ORDER BY"
                f" e.ets DESC, e.ing DESC, e.c DESC NULLS LAST) AS rn"
                f" FROM (SELECT * FROM {self.pts} WHERE k IN (SELECT k FROM {bad})) p"
                f" JOIN ({hist}) e ON p.k = e.k AND e.avail <= p.t"
                f" AND e.ets <= p.t - {window_us}"
            )
            sql += (
                f" UNION ALL SELECT p.pid, n.{c} - s.ref AS v FROM"
                f" (SELECT * FROM {self.pts} WHERE k IN (SELECT k FROM {bad})) p"
                f" JOIN ({slow}) s ON s.pid = p.pid AND s.rn = 1"
                f" LEFT JOIN {newest} n ON n.pid = p.pid"
            )
        return self.table(sql)

    # -- static, batch, labels ---------------------------------------------------------------

    def static(self, joins: list[tuple[str, str]], exprs: dict[str, str]) -> None:
        """Static attributes: the newest information event known at t (rule 5)."""
        spec = self.plan.static
        assert spec is not None
        source = self.ex._sources[spec.source]
        cols = [f"{double(quote(c))} AS v{i}" for i, c in enumerate(spec.columns)]
        rel = source.events(cols, keys=self.keys_for(source), hi_avail=self.max_t)
        table, _ = self.newest(rel, [f"v{i}" for i in range(len(spec.columns))], source)
        joins.append(("st", table))
        for i, name in enumerate(spec.names):
            exprs[name] = f"st.v{i}"

    def _runs(self, every_us: int, lag_us: int) -> list[int]:
        lo = _run_of(self.min_t, every_us, lag_us)
        hi = _run_of(self.max_t, every_us, lag_us)
        if (hi - lo) // every_us > 100_000:
            raise ConfigError(
                f"the spine spans {(hi - lo) // every_us} batch runs; split it into shorter ranges"
            )
        rows = self.ex._con.execute(
            f"SELECT DISTINCT {run_sql('t', every_us, lag_us, DUCKDB)} FROM {self.pts}"
        ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def profile(self, profile: ProfileSpec, joins: list[tuple[str, str]]) -> str:
        """Join the profile value of the run in force at t, at t's hour of week."""
        key = self.plan.key
        parts = []
        runs = self._runs(profile.every_us, profile.lag_us)
        for run, table in self.ex._run_tables(profile.name, runs).items():
            if table is None or table.num_rows == 0:
                continue
            n = table.num_rows
            hours = np.tile(np.arange(HOURS_OF_WEEK, dtype=np.int64), n)
            grid = np.column_stack(
                [
                    table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                    for c in profile_columns()
                ]
            ).reshape(-1)
            parts.append(
                pa.table(
                    {
                        "r": pa.array(np.full(n * HOURS_OF_WEEK, run, dtype=np.int64)),
                        "k": pc.cast(table.column(key), pa.string())
                        .combine_chunks()
                        .take(pa.array(np.repeat(np.arange(n), HOURS_OF_WEEK))),
                        "h": pa.array(hours),
                        "v": pa.array(grid, pa.float64(), mask=np.isnan(grid)),
                    }
                )
            )
        alias = f"pr{len(joins)}"
        if not parts:
            return NULL_DOUBLE
        lookup = self.register(pa.concat_tables(parts))
        tz = self.plan.source(profile.source).tz
        in_force = run_sql("p.t", profile.every_us, profile.lag_us, DUCKDB)
        table = self.table(batch_join_sql(self.pts, lookup, in_force, how(tz, "p.t")))
        joins.append((alias, table))
        return f"{alias}.v"

    def hood(self, hood: NeighbourSpec, joins: list[tuple[str, str]]) -> str:
        """Join the neighbourhood value of the run in force at t."""
        key = self.plan.key
        parts = []
        runs = self._runs(hood.every_us, hood.lag_us)
        for run, table in self.ex._run_tables(hood.name, runs).items():
            if table is None or table.num_rows == 0:
                continue
            parts.append(
                pa.table(
                    {
                        "r": pa.array(np.full(table.num_rows, run, dtype=np.int64)),
                        "k": pc.cast(table.column(key), pa.string()),
                        "v": pc.cast(table.column("value"), pa.float64()),
                    }
                )
            )
        alias = f"nb{len(joins)}"
        if not parts:
            return NULL_DOUBLE
        lookup = self.register(pa.concat_tables(parts))
        in_force = run_sql("p.t", hood.every_us, hood.lag_us, DUCKDB)
        table = self.table(batch_join_sql(self.pts, lookup, in_force))
        joins.append((alias, table))
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
                    keys=self.keys_for(source),
                    lo_ets=self.min_t + 1,
                    hi_ets=self.max_t + h,
                    where=f"({label.predicate.to_sql()})",
                )
                table = self.table(
                    f"SELECT p.pid, (e.ets IS NOT NULL AND e.ets <= p.t + {h}) AS v"
                    f" FROM {self.pts} p ASOF LEFT JOIN ({hits}) e ON p.k = e.k AND e.ets > p.t"
                )
                joins.append((alias, table))
                out.append(label_column(alias, label, DUCKDB))
            else:
                assert label.column is not None
                rows = source.events(
                    [f"{double(quote(label.column))} AS c"],
                    keys=self.keys_for(source),
                    lo_ets=self.min_t + 1,
                    hi_ets=self.max_t + h,
                )
                dedup = (
                    f"SELECT k, ets, max(c) AS c, {hkey('ets', 'ing')} AS hk FROM ({rows})"
                    " GROUP BY k, ets, ing"
                )
                table = self.table(
                    f"SELECT p.pid, CASE WHEN e.ets > p.t THEN e.c END AS v FROM {self.pts} p"
                    f" ASOF LEFT JOIN ({dedup}) e ON p.k = e.k"
                    f" AND e.hk <= {hkey_upto(f'p.t + {h}')}"
                )
                joins.append((alias, table))
                out.append(label_column(alias, label, DUCKDB))
        return out
