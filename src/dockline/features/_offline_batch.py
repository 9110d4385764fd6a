"""Batch features (hour-of-week profiles, neighbourhoods) of the offline engines.

The plan and NumPy parts (the sub-plan a neighbourhood needs, nearest neighbours, the means
over them per run) are shared by the DuckDB and Spark executors; the runs here are the DuckDB
executor's, which it caches per run (``OfflineExecutor.batch_run``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import pyarrow as pa

from dockline.features._offline_sql import double, how, quote
from dockline.features.plan import NeighbourSpec, Plan, ProfileSpec

if TYPE_CHECKING:
    from dockline.features.offline import OfflineExecutor

__all__ = [
    "EARTH_RADIUS_KM",
    "HOURS_OF_WEEK",
    "mean_of",
    "nearest",
    "neighbour_means",
    "neighbourhood_runs",
    "profile_columns",
    "profile_run",
    "subplan",
]

HOURS_OF_WEEK = 168
EARTH_RADIUS_KM = 6371.0088


def profile_columns() -> list[str]:
    """The hour-of-week columns of a profile table: ``h000`` … ``h167``."""
    return [f"h{h:03d}" for h in range(HOURS_OF_WEEK)]


def subplan(plan: Plan, feature: str) -> Plan:
    """The part of ``plan`` that ``feature`` needs (streaming features only)."""
    need = {feature}
    for item in reversed(plan.derived):
        if item.name in need:
            need |= item.expr.columns()
    groups = tuple(
        msgspec.structs.replace(g, aggs=tuple(a for a in g.aggs if a.name in need))
        for g in plan.groups
        if any(a.name in need for a in g.aggs)
    )
    static = plan.static
    if static is not None:
        columns = tuple(c for c, n in zip(static.columns, static.names, strict=True) if n in need)
        static = msgspec.structs.replace(static, columns=columns) if columns else None
    calendar = plan.calendar
    if calendar is not None:
        features = tuple(f for f in calendar.features if f in need)
        calendar = msgspec.structs.replace(calendar, features=features) if features else None
    return msgspec.structs.replace(
        plan,
        groups=groups,
        static=static,
        calendar=calendar,
        derived=tuple(d for d in plan.derived if d.name in need),
        labels=(),
        profiles=(),
        neighbourhoods=(),
    )


def nearest(coords: np.ndarray, k: int) -> np.ndarray:
    """Per entity (rows sorted by key): indices of its ``k`` nearest others (haversine; ties
    by key). Rows may be fewer than k when there are not enough others."""
    n = len(coords)
    if n < 2:
        return np.zeros((n, 0), dtype=np.int64)
    lat = np.radians(coords[:, 0])
    dp = lat[None, :] - lat[:, None]
    dl = np.radians(coords[None, :, 1] - coords[:, None, 1])
    a = np.sin(dp / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dl / 2) ** 2
    dist = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")  # stable: equal distances by key
    return order[:, : min(k, n - 1)]


def mean_of(values: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (NaN = null) over each row's neighbours, ignoring nulls."""
    if neighbours.shape[1] == 0:
        return np.full(len(values), np.nan)
    chosen = values[neighbours]
    valid = ~np.isnan(chosen)
    counts = valid.sum(axis=1)
    sums = np.where(valid, chosen, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def profile_run(ex: OfflineExecutor, profile: ProfileSpec, run_us: int) -> pa.Table:
    """Profile ``profile`` at run ``run_us``: key + ``h000``..``h167`` (value-ordered means)."""
    source = ex._sources[profile.source]
    value = double(profile.value.to_sql())
    events = source.events(
        [f"{value} AS v"],
        lo_ets=run_us - profile.lookback_us,
        hi_avail=run_us,
        where=f"_dl_ets < {run_us}",
    )
    long = ex._arrow(
        # value order: a float mean in the order of DuckDB's threads is not reproducible
        f"SELECT k, {how(source.spec.tz, 'ets')} AS h, list_avg(list_sort(list(v))) AS v"
        f" FROM ({events})"
        " WHERE v IS NOT NULL AND NOT isnan(v) GROUP BY ALL ORDER BY k, h"
    )
    entities = sorted(set(long.column("k").to_pylist()))
    index = {k: i for i, k in enumerate(entities)}
    grid = np.full((len(entities), HOURS_OF_WEEK), np.nan)
    rows = np.array([index[k] for k in long.column("k").to_pylist()], dtype=np.int64)
    hours = long.column("h").to_numpy().astype(np.int64)
    grid[rows, hours] = long.column("v").to_numpy()
    arrays: list[pa.Array] = [pa.array(entities, pa.string())]
    for h in range(HOURS_OF_WEEK):
        column = grid[:, h]
        arrays.append(pa.array(column, pa.float64(), mask=np.isnan(column)))
    return pa.Table.from_arrays(arrays, names=[ex.plan.key, *profile_columns()])


def neighbour_means(
    located: pa.Table, values: np.ndarray, runs: Sequence[int], k: int
) -> Iterator[tuple[int, pa.Array, pa.Array]]:
    """Per run: the keys located then, and the mean of their ``k`` nearest ones' ``values``.

    ``located`` (r, k, lat, lon) is sorted by (r, k); ``values`` follows its rows (NaN = null).
    Runs with the same stations in the same places share one nearest-neighbour search.
    """
    run_of = located.column("r").to_numpy()
    keys = located.column("k").combine_chunks()
    coords = np.column_stack(
        [located.column("lat").to_numpy(), located.column("lon").to_numpy()]
    ).reshape(-1, 2)
    bounds = np.searchsorted(run_of, np.asarray(runs, dtype=np.int64), side="left")
    ends = np.searchsorted(run_of, np.asarray(runs, dtype=np.int64), side="right")
    neighbours: dict[bytes, np.ndarray] = {}
    for run, lo, hi in zip(runs, bounds, ends, strict=True):
        here = coords[lo:hi]
        fingerprint = here.tobytes() + b"|" + ",".join(keys[lo:hi].to_pylist()).encode()
        if fingerprint not in neighbours:  # the same stations in the same places
            neighbours[fingerprint] = nearest(here, k)
        result = mean_of(values[lo:hi], neighbours[fingerprint])
        yield run, keys[lo:hi], pa.array(result, pa.float64(), mask=np.isnan(result))


def neighbourhood_runs(
    ex: OfflineExecutor, hood: NeighbourSpec, runs: Sequence[int]
) -> dict[int, pa.Table]:
    """Neighbourhood values at each run: all runs' feature values in one computation."""
    source = ex._sources[hood.locations]
    lat, lon = quote(hood.lat), quote(hood.lon)
    events = source.events(
        [f"CAST({lat} AS DOUBLE) AS lat", f"CAST({lon} AS DOUBLE) AS lon"],
        hi_avail=max(runs),
    )
    name = ex._name()
    ex._con.register(name, pa.table({"r": pa.array(runs, pa.int64())}))
    try:
        # the location of each entity at each run: its newest event known at r (rule 5)
        located = ex._arrow(
            f"SELECT r, k, lat, lon FROM (SELECT x.r, e.* FROM {name} x JOIN ({events}) e"
            " ON e.avail <= x.r QUALIFY row_number() OVER (PARTITION BY x.r, e.k"
            " ORDER BY e.ets DESC, e.ing DESC, e.lat DESC NULLS LAST, e.lon DESC NULLS LAST)"
            " = 1) WHERE lat IS NOT NULL AND lon IS NOT NULL ORDER BY r, k"
        )
    finally:
        ex._con.unregister(name)
    keys = located.column("k").combine_chunks()
    values = np.full(located.num_rows, np.nan)
    if located.num_rows:
        computed = ex._compute(
            keys,
            located.column("r").combine_chunks(),
            labels=False,
            batch=False,
            plan=subplan(ex.plan, hood.feature),
        )
        column = computed.column(hood.feature).to_numpy(zero_copy_only=False)
        values = np.asarray(column, dtype=np.float64)  # same (r, k) order; None → NaN
    out: dict[int, pa.Table] = {}
    for run, here, value in neighbour_means(located, values, runs, hood.k):
        out[run] = pa.table({ex.plan.key: here, "value": value})
    return out
