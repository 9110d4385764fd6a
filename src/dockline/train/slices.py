"""Performance per slice of the test split, and the slices where a candidate trails persistence.

Families (each left out when the dataset lacks what it needs):

* ``geography`` — k-means of the stations' ``lat__static``/``lon__static`` (deterministic
  farthest-point start, clusters numbered north to south);
* ``capacity`` — capacity bands (station terciles unless ``capacity_edges``);
* ``activity`` — the station's historical turnover on the train split (mean absolute change of
  its bike count between snapshots, or the median of ``activity_feature``), in bands;
* ``hour`` — hour bands (night, morning peak, midday, evening peak, evening) of the as-of time
  in the system time zone;
* ``day_type`` — weekday or weekend.

A slice with fewer than ``min_rows`` rows or ``min_positives`` positives is *inconclusive*:
shown, never judged. A judged slice is *worse* when the candidate trails persistence on the
configured metric by more than ``tolerance`` and, with ``bootstrap`` replicates, the interval of
the difference (stations resampled, since a station's rows are correlated) lies below zero.
Everything is seeded: the same data and config give the same table, byte for byte.

>>> import numpy as np
>>> from dockline.core.config import TrainSlicesConfig
>>> y = np.array([1, 0] * 150)
>>> masks = {"all": {"every row": np.ones(300, bool)}}
>>> t = compare_slices(y, np.array(["s"] * 300), masks, {"candidate": np.full(300, .5),
...     "persistence": y * 0.9 + 0.05}, candidate="candidate",
...     config=TrainSlicesConfig(min_positives=10, bootstrap=0), seed=0)
>>> [(f.family, f.slice) for f in flagged_slices(t)]
[('all', 'every row')]
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from dockline.core.config import TrainSlicesConfig
from dockline.core.contracts import SliceFlag
from dockline.train.data import TrainingData
from dockline.train.evaluate import HIGHER_IS_BETTER, json_safe

__all__ = [
    "PERSISTENCE",
    "compare_slices",
    "flagged_slices",
    "slice_counts",
    "slice_masks",
    "slice_table_bytes",
    "weighted_average_precision",
]

PERSISTENCE = "persistence"
"""The reference a slice is judged against."""

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Masks = dict[str, dict[str, BoolArray]]


# -- slice definitions -------------------------------------------------------------------------


def _per_station_first(values: FloatArray, codes: IntArray, n: int) -> FloatArray:
    """Each station's first non-NaN value (NaN when it has none)."""
    out = np.full(n, np.nan)
    ok = ~np.isnan(values)
    # reversed assignment: the first occurrence is written last and wins
    out[codes[ok][::-1]] = values[ok][::-1]
    return out


def _bands(
    per_station: FloatArray, edges: tuple[float, ...], unit: str
) -> list[tuple[str, float, float]]:
    """(name, low, high] bands: the given edges, else the stations' terciles."""
    if not edges:
        known = per_station[~np.isnan(per_station)]
        if known.size < 3:
            return []
        lo, hi = (float(v) for v in np.quantile(known, [1 / 3, 2 / 3]))
        edges = (lo, hi) if hi > lo else (lo,)
    bounds = [-math.inf, *edges, math.inf]
    names = ["low", "medium", "high"] if len(bounds) == 4 else [None] * (len(bounds) - 1)
    out = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        span = f"≤ {b:.3g}" if a == -math.inf else (f"> {a:.3g}" if b == math.inf else None)
        span = span or f"{a:.3g}–{b:.3g}"
        label = f"{names[i]} ({span}{unit})" if names[i] else f"{span}{unit}"
        out.append((label, a, b))
    return out


def _banded(values: FloatArray, bands: list[tuple[str, float, float]]) -> dict[str, BoolArray]:
    return {name: (values > a) & (values <= b) for name, a, b in bands}


def _kmeans(points: FloatArray, k: int, iterations: int = 50) -> tuple[IntArray, FloatArray]:
    """Deterministic k-means: farthest-point start from the point nearest the mean, then Lloyd."""
    centre = points.mean(axis=0)
    chosen = [int(np.argmin(((points - centre) ** 2).sum(axis=1)))]
    dist = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))  # ties: the lowest index
        chosen.append(nxt)
        dist = np.minimum(dist, ((points - points[nxt]) ** 2).sum(axis=1))
    centres = points[chosen].copy()
    assign = np.zeros(points.shape[0], dtype=np.int64)
    for _ in range(iterations):
        d = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        new = np.argmin(d, axis=1).astype(np.int64)
        for j in range(k):
            members = points[new == j]
            if members.size:
                centres[j] = members.mean(axis=0)
        if np.array_equal(new, assign):
            break
        assign = new
    return assign, centres


def _geography(
    data: TrainingData, rows: IntArray, codes: IntArray, n_stations: int, k: int
) -> dict[str, BoolArray]:
    lat, lon = data.column("lat__static"), data.column("lon__static")
    if lat is None or lon is None or k < 1:
        return {}
    st_lat = _per_station_first(lat[rows].astype(np.float64), codes, n_stations)
    st_lon = _per_station_first(lon[rows].astype(np.float64), codes, n_stations)
    known = ~(np.isnan(st_lat) | np.isnan(st_lon))
    places = np.unique(np.c_[st_lat[known], st_lon[known]], axis=0)
    k = min(k, places.shape[0])
    if k < 2:
        return {}
    # Distances in local kilometres: a degree of longitude shrinks with the cosine of latitude.
    scale = np.array([1.0, math.cos(math.radians(float(np.mean(places[:, 0]))))])
    assign, centres = _kmeans(places * scale, k)
    centres = centres / scale
    order = sorted(range(k), key=lambda j: (-centres[j, 0], centres[j, 1]))  # north to south
    station_cluster = np.full(n_stations, -1, dtype=np.int64)
    lookup = {(float(a), float(b)): int(c) for (a, b), c in zip(places, assign, strict=True)}
    for s in np.flatnonzero(known):
        station_cluster[s] = lookup[(float(st_lat[s]), float(st_lon[s]))]
    row_cluster = station_cluster[codes]
    out = {}
    for rank, j in enumerate(order, start=1):
        name = f"cluster {rank} ({centres[j, 0]:.3f}, {centres[j, 1]:.3f})"
        out[name] = row_cluster == j
    if (row_cluster < 0).any():
        out["no position"] = row_cluster < 0
    return out


def _group_medians(codes: IntArray, values: FloatArray, n: int) -> FloatArray:
    """The median of ``values`` per code in ``range(n)`` (NaN ignored; NaN for none)."""
    ok = ~np.isnan(values)
    codes, values = codes[ok], values[ok]
    order = np.lexsort((values, codes))
    codes, values = codes[order], values[order]
    counts = np.bincount(codes, minlength=n)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    has = counts > 0
    lo = values[(starts + (counts - 1) // 2)[has]]
    hi = values[(starts + counts // 2)[has]]
    out = np.full(n, np.nan)
    out[has] = (lo + hi) / 2
    return out


def _activity(
    data: TrainingData,
    history: IntArray,
    names: npt.NDArray[np.str_],
    codes: IntArray,
    config: TrainSlicesConfig,
) -> dict[str, BoolArray]:
    n = len(names)
    ids = data.station_ids[history]
    at = np.minimum(np.searchsorted(names, ids), n - 1)
    keep = names[at] == ids  # stations of the test split only
    hist, h_codes = history[keep], at[keep].astype(np.int64)
    if config.activity_feature is not None:
        column = data.column(config.activity_feature)
        if column is None:
            return {}
        per_station = _group_medians(h_codes, column[hist].astype(np.float64), n)
        unit = ""
    else:
        bikes = data.column("num_bikes_available__last")
        if bikes is None:
            return {}
        # rows are time-ordered, so a stable sort by station keeps each station's series in order
        order = np.argsort(h_codes, kind="mergesort")
        c, b = h_codes[order], bikes[hist][order].astype(np.float64)
        same = c[1:] == c[:-1]
        step = np.abs(np.diff(b))[same]
        ok = ~np.isnan(step)
        sums = np.bincount(c[1:][same][ok], weights=step[ok], minlength=n)
        counts = np.bincount(c[1:][same][ok], minlength=n)
        per_station = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        unit = " bikes/step"
    bands = _bands(per_station, config.activity_edges, unit)
    if not bands:
        return {}
    out = _banded(per_station[codes], bands)
    unseen = np.isnan(per_station[codes])
    if unseen.any():
        out["no history"] = unseen
    return out


def _offset_seconds(epoch_seconds: int, zone: tzinfo) -> int:
    offset = datetime.fromtimestamp(epoch_seconds, zone).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def _hours(data: TrainingData, rows: IntArray, tz: str | None) -> tuple[FloatArray, str]:
    """Local hour of each row and where it came from."""
    hour = data.column("hour_of_day")
    if tz is None and hour is not None:
        return hour[rows].astype(np.float64), "hour_of_day"
    zone = ZoneInfo(tz) if tz is not None else UTC
    seconds = data.as_of_us[rows] // 1_000_000
    # Offsets change at most a few times a year: compute one per distinct UTC hour, not per row.
    hours_utc, inverse = np.unique(seconds // 3600, return_inverse=True)
    offsets = np.array([_offset_seconds(int(h) * 3600, zone) for h in hours_utc], dtype=np.int64)
    local = ((seconds + offsets[inverse]) // 3600) % 24
    return local.astype(np.float64), tz or "UTC"


def slice_masks(
    data: TrainingData, rows: IntArray, history: IntArray, config: TrainSlicesConfig
) -> Masks:
    """Row masks over ``rows`` (the test split) per slice family; ``history`` (the train split)
    defines each station's activity. Empty slices are left out."""
    ids = data.station_ids[rows]
    names, codes = np.unique(ids, return_inverse=True)
    codes = codes.astype(np.int64)
    out: Masks = {}
    out["geography"] = _geography(data, rows, codes, len(names), config.geo_clusters)
    cap = data.column("capacity__static")
    if cap is None:
        cap = data.column("capacity__last")
    if cap is not None:
        per_station = _per_station_first(cap[rows].astype(np.float64), codes, len(names))
        bands = _bands(per_station, config.capacity_edges, " docks")
        out["capacity"] = _banded(cap[rows].astype(np.float64), bands) if bands else {}
    out["activity"] = _activity(data, history, names, codes, config)
    if config.hour_bands:
        h, _ = _hours(data, rows, config.tz)
        starts = [s for _, s in config.hour_bands]
        ends = [*starts[1:], 24]
        out["hour"] = {
            f"{name} ({a:02d}–{b:02d}h)": (h >= a) & (h < b)
            for (name, a), b in zip(config.hour_bands, ends, strict=True)
        }
    weekend = data.column("is_weekend")
    day = data.column("day_of_week")
    if weekend is not None:
        w = weekend[rows] > 0.5
        out["day_type"] = {"weekday": ~w, "weekend": w}
    elif day is not None:
        w = day[rows] >= 5
        out["day_type"] = {"weekday": ~w, "weekend": w}
    return {f: {n: m for n, m in g.items() if m.any()} for f, g in out.items() if g}


# -- metrics with weights (the bootstrap) -----------------------------------------------------


def _sorted(y: FloatArray, p: FloatArray) -> tuple[IntArray, IntArray]:
    """Order by score descending and the last index of each run of tied scores."""
    order = np.argsort(-p, kind="mergesort").astype(np.int64)
    ps = p[order]
    ends = np.r_[np.flatnonzero(np.diff(ps) != 0), ps.size - 1].astype(np.int64)
    return order, ends


def weighted_average_precision(
    y: FloatArray, w: FloatArray, order: IntArray, ends: IntArray
) -> float:
    """Average precision with row weights, given :func:`_sorted`'s order and tie ends; with
    unit weights it is :func:`~dockline.train.evaluate.average_precision`."""
    return _ap_sorted(y[order], w[order], ends)


def _ap_sorted(ys: FloatArray, ws: FloatArray, ends: IntArray) -> float:
    """Weighted average precision of rows already in score order."""
    tp = np.cumsum(ws * ys)[ends]
    seen = np.cumsum(ws)[ends]
    total = tp[-1] if tp.size else 0.0
    if total <= 0:
        return math.nan
    # where nothing is seen yet, tp is 0 too: the recall step there is 0 whatever the precision
    precision = tp / np.maximum(seen, 1e-300)
    # np.sum, not `@`: a BLAS dot spawns threads, and on a busy machine that costs 10x
    return float(np.sum(np.diff(tp, prepend=0.0) * precision)) / float(total)


def _weighted_brier(y: FloatArray, p: FloatArray, w: FloatArray) -> float:
    total = float(w.sum())
    return float(np.sum(w * (p - y) ** 2) / total) if total > 0 else math.nan


def _metrics(y: FloatArray, p: FloatArray) -> dict[str, float]:
    ones = np.ones_like(y)
    order, ends = _sorted(y, p)
    return {
        "pr_auc": weighted_average_precision(y, ones, order, ends),
        "brier": _weighted_brier(y, p, ones),
    }


def _improvement(metric: str, candidate: float, reference: float) -> float:
    return candidate - reference if HIGHER_IS_BETTER[metric] else reference - candidate


def _interval(
    metric: str,
    y: FloatArray,
    candidate: FloatArray,
    reference: FloatArray,
    codes: IntArray,
    config: TrainSlicesConfig,
    rng: np.random.Generator,
) -> tuple[float, float] | None:
    """Station-bootstrap interval of the candidate's improvement over the reference.

    A replicate draws stations with replacement; a row's weight is its station's draw count.
    Each score order is sorted once: a replicate is then a gather and two cumulative sums.
    """
    if config.bootstrap == 0:
        return None
    _, local = np.unique(codes, return_inverse=True)
    n_st = int(local.max()) + 1
    prepared = []
    for p in (candidate, reference):
        order, ends = _sorted(y, p)
        prepared.append((y[order], local[order], ends, (p[order] - y[order]) ** 2))
    draws = np.empty(config.bootstrap)
    for b in range(config.bootstrap):
        counts = np.bincount(rng.integers(0, n_st, n_st), minlength=n_st).astype(np.float64)
        values = []
        for ys, ls, ends, sq in prepared:
            w = counts[ls]
            if metric == "pr_auc":
                values.append(_ap_sorted(ys, w, ends))
            else:
                total = float(w.sum())
                values.append(float(np.sum(w * sq)) / total if total > 0 else math.nan)
        draws[b] = _improvement(metric, values[0], values[1])
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return None
    alpha = (1.0 - config.confidence) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    return round(float(lo), 6), round(float(hi), 6)


# -- the table ---------------------------------------------------------------------------------


def compare_slices(
    y: npt.ArrayLike,
    station_ids: npt.NDArray[np.str_],
    masks: Masks,
    models: Mapping[str, npt.ArrayLike],
    *,
    candidate: str,
    config: TrainSlicesConfig,
    seed: int,
) -> dict[str, Any]:
    """The slice table: per family and slice, rows, positives, base rate, each model's PR-AUC
    and Brier, and the candidate's verdict against persistence (``worse``, ``ok``,
    ``inconclusive`` with why). ``models`` maps a name to its test probabilities (the
    candidate, ``persistence`` and, when present, the champion); values are rounded to 6
    decimals so the table's bytes are stable."""
    yy = np.asarray(y, dtype=np.float64)
    probs = {name: np.asarray(p, dtype=np.float64) for name, p in models.items()}
    _, codes = np.unique(station_ids, return_inverse=True)
    codes = codes.astype(np.int64)
    metric = config.metric
    judge = candidate != PERSISTENCE and PERSISTENCE in probs
    families: dict[str, list[dict[str, Any]]] = {}
    for f_index, (family, groups) in enumerate(masks.items()):
        rows_out = []
        for s_index, (name, mask) in enumerate(groups.items()):
            ys = yy[mask]
            positives = int(ys.sum())
            scores = {m: _metrics(ys, p[mask]) for m, p in probs.items()}
            row: dict[str, Any] = {
                "slice": name,
                "rows": int(ys.size),
                "positives": positives,
                "base_rate": round(float(ys.mean()), 6) if ys.size else math.nan,
                "models": {m: {k: round(v, 6) for k, v in s.items()} for m, s in scores.items()},
            }
            if judge:
                row.update(
                    _judge(
                        ys, probs, mask, codes, candidate, scores, config, (seed, f_index, s_index)
                    )
                )
            rows_out.append(row)
        families[family] = rows_out
    return {
        "candidate": candidate,
        "reference": PERSISTENCE,
        "metric": metric,
        "tolerance": config.tolerance,
        "min_rows": config.min_rows,
        "min_positives": config.min_positives,
        "bootstrap": config.bootstrap,
        "confidence": config.confidence,
        "models": list(probs),
        "families": families,
    }


def _judge(
    ys: FloatArray,
    probs: Mapping[str, FloatArray],
    mask: BoolArray,
    codes: IntArray,
    candidate: str,
    scores: Mapping[str, Mapping[str, float]],
    config: TrainSlicesConfig,
    key: tuple[int, int, int],
) -> dict[str, Any]:
    metric = config.metric
    c, r = scores[candidate][metric], scores[PERSISTENCE][metric]
    if ys.size < config.min_rows or int(ys.sum()) < config.min_positives:
        why = f"fewer than {config.min_rows} rows or {config.min_positives} positives"
        return {"status": "inconclusive", "why": why, "delta": None, "interval": None}
    if math.isnan(c) or math.isnan(r):
        return {
            "status": "inconclusive",
            "why": f"{metric} undefined",
            "delta": None,
            "interval": None,
        }
    delta = round(_improvement(metric, c, r), 6)
    interval = None
    worse = delta < -config.tolerance
    if worse:
        # Only a slice that looks worse needs the (costly) interval: does it hold up?
        rng = np.random.default_rng(list(key))
        interval = _interval(
            metric, ys, probs[candidate][mask], probs[PERSISTENCE][mask], codes[mask], config, rng
        )
        # without bootstrap the point estimate decides; with it, the interval must agree
        worse = interval[1] < 0 if interval is not None else config.bootstrap == 0
    if worse:
        why = f"trails persistence by {-delta:.3g} > tolerance {config.tolerance:g}"
    elif delta < -config.tolerance:
        why = "trails persistence, but the interval includes no difference"
    else:
        why = f"within tolerance {config.tolerance:g} of persistence or better"
    return {"status": "worse" if worse else "ok", "why": why, "delta": delta, "interval": interval}


def flagged_slices(table: Mapping[str, Any]) -> list[SliceFlag]:
    """The slices of ``table`` judged ``worse``, in table order."""
    metric = str(table["metric"])
    candidate = str(table["candidate"])
    out = []
    for family, rows in table["families"].items():
        for row in rows:
            if row.get("status") != "worse":
                continue
            out.append(
                SliceFlag(
                    family=family,
                    slice=row["slice"],
                    metric=metric,
                    candidate=row["models"][candidate][metric],
                    persistence=row["models"][PERSISTENCE][metric],
                    rows=row["rows"],
                    positives=row["positives"],
                    interval=None if row["interval"] is None else tuple(row["interval"]),
                )
            )
    return out


def slice_counts(table: Mapping[str, Any]) -> tuple[int, int]:
    """(judged, inconclusive) slices of ``table``."""
    statuses = [r.get("status") for rows in table["families"].values() for r in rows]
    return sum(s in ("ok", "worse") for s in statuses), statuses.count("inconclusive")


def slice_table_bytes(table: Mapping[str, Any]) -> bytes:
    """The table as canonical JSON (sorted keys, NaN as null): what determinism is checked on."""
    return json.dumps(json_safe(table), sort_keys=True, allow_nan=False).encode()
