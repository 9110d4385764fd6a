"""Where a simulated city's stations are: zones, positions, capacities, first bikes, names, ids,
and the plane geometry the step uses (street distances, nearest stations).

Generated cities put business stations around the Loop, leisure along the lake and residential in
a ring west of it; a calibrated city (:mod:`dockline.sim.calibrate`) brings its own stations and
gets zones by where they are. Re-exported by :mod:`dockline.sim.city`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dockline.sim._records import CityConfig

__all__ = [
    "BUSINESS",
    "CENTER",
    "DETOUR",
    "LEISURE",
    "RESIDENTIAL",
    "ZONES",
    "Layout",
    "build_layout",
    "distance_km",
    "nearest",
]

ZONES: tuple[str, ...] = ("residential", "business", "leisure")
RESIDENTIAL, BUSINESS, LEISURE = 0, 1, 2

CENTER = (41.88, -87.63)  # Chicago Loop
_KM_PER_DEG_LAT = 110.57
_KM_PER_DEG_LON = 111.32 * math.cos(math.radians(CENTER[0]))
DETOUR = 1.25  # street distance / straight-line distance

_STREETS_NS = (
    "State St", "Clark St", "Wells St", "Halsted St", "Ashland Ave", "Damen Ave", "Western Ave",
    "Racine Ave", "Morgan St", "Wabash Ave", "Michigan Ave", "Lincoln Ave", "Milwaukee Ave",
    "Sheffield Ave", "Kedzie Ave", "Pulaski Rd", "California Ave", "Wood St", "Canal St",
)  # fmt: skip
_STREETS_EW = (
    "Madison St", "Monroe St", "Adams St", "Jackson Blvd", "Van Buren St", "Harrison St",
    "Roosevelt Rd", "Cermak Rd", "Division St", "North Ave", "Armitage Ave", "Fullerton Ave",
    "Diversey Pkwy", "Belmont Ave", "Addison St", "Irving Park Rd", "Lake St", "Randolph St",
    "Chicago Ave", "Grand Ave", "18th St", "31st St", "47th St",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Layout:
    """A city's stations at the start (arrays indexed by station; ``x``/``y`` km from CENTER)."""

    zone: np.ndarray  # int8
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    capacity: np.ndarray  # int64
    docks_disabled: np.ndarray  # int64
    bikes: np.ndarray  # int64
    popularity: np.ndarray  # departure weight, mean 1
    jitter_s: np.ndarray  # int64, how far each station's last_reported lags
    names: list[str]
    station_ids: list[str]


def build_layout(config: CityConfig, layout: np.random.Generator) -> Layout:
    """The stations of ``config``, drawn from ``layout``; a calibrated city's own stations
    replace the drawn ones (zones then follow where they are)."""
    n = config.stations
    # Layout: business around the Loop, leisure along the lake, residential in a ring west.
    zone = layout.choice(3, size=n, p=[0.5, 0.25, 0.25]).astype(np.int8)
    x = np.empty(n)
    y = np.empty(n)
    for z, count in enumerate(np.bincount(zone, minlength=3)):
        mask = zone == z
        if z == BUSINESS:
            xs = layout.normal(-0.8, 1.0, count)
            ys = layout.normal(0.0, 1.4, count)
        elif z == LEISURE:
            xs = layout.uniform(-1.5, 0.6, count)
            ys = layout.uniform(-9.0, 9.0, count)
        else:
            radius = layout.uniform(2.5, 10.0, count)
            angle = layout.uniform(0.5 * math.pi, 1.5 * math.pi, count)
            xs = radius * np.cos(angle)
            ys = radius * np.sin(angle)
        x[mask] = np.minimum(xs, 0.8)  # the lake is east
        y[mask] = ys
    lat = np.round(CENTER[0] + y / _KM_PER_DEG_LAT, 6)
    lon = np.round(CENTER[1] + x / _KM_PER_DEG_LON, 6)
    cal = config.calibrated
    if cal is not None:
        lat = np.asarray(cal.lat, dtype=float).copy()
        lon = np.asarray(cal.lon, dtype=float).copy()
        # Zones only steer the generated demand model; here they label stations for the
        # zone-level forecaster: the Loop is business, the lakefront leisure, else residential.
        east = lon > CENTER[1] - 0.012 + 0.02 * np.abs(lat - CENTER[0])
        loop = np.hypot((lat - CENTER[0]) * _KM_PER_DEG_LAT,
                        (lon - CENTER[1]) * _KM_PER_DEG_LON) < 2.5  # fmt: skip
        zone = np.where(loop, BUSINESS, np.where(east, LEISURE, RESIDENTIAL)).astype(np.int8)
    mean_cap = np.where(zone == BUSINESS, 24.0, np.where(zone == LEISURE, 21.0, 17.0))
    capacity = np.clip(np.rint(layout.normal(mean_cap, 5.0)), 11, 39).astype(np.int64)
    disabled = layout.choice(3, size=n, p=[0.9, 0.08, 0.02]).astype(np.int64)
    fill = layout.uniform(*config.initial_fill, size=n)
    bikes = np.minimum(layout.binomial(capacity, fill), capacity - disabled).astype(np.int64)
    popularity = layout.lognormal(0.0, 0.5, n)
    popularity = popularity / popularity.mean()
    jitter_s = layout.integers(0, 46, size=n).astype(np.int64)
    ns = layout.integers(0, len(_STREETS_NS), size=n)
    ew = layout.integers(0, len(_STREETS_EW), size=n)
    names = [f"{_STREETS_NS[a]} & {_STREETS_EW[b]}" for a, b in zip(ns, ew, strict=True)]
    if cal is not None:
        capacity = np.asarray(cal.capacity, dtype=np.int64).copy()
        disabled = np.zeros(n, dtype=np.int64)
        bikes = np.asarray(cal.bikes, dtype=np.int64).copy()
        popularity = np.ones(n)
        names = list(cal.names)
        station_ids = list(cal.station_ids)
    elif config.faults.numeric_ids > 0:
        station_ids = [str(1001 + i) for i in range(n)]
    else:
        width = max(4, len(str(n)))
        station_ids = [f"s{i + 1:0{width}d}" for i in range(n)]
    return Layout(
        zone=zone,
        lat=lat,
        lon=lon,
        x=(lon - CENTER[1]) * _KM_PER_DEG_LON,
        y=(lat - CENTER[0]) * _KM_PER_DEG_LAT,
        capacity=capacity,
        docks_disabled=disabled,
        bikes=bikes,
        popularity=popularity,
        jitter_s=jitter_s,
        names=names,
        station_ids=station_ids,
    )


def distance_km(x: np.ndarray, y: np.ndarray, a: int, b: int) -> float:
    """Street distance between stations ``a`` and ``b``."""
    return float(math.hypot(x[a] - x[b], y[a] - y[b]) * DETOUR)


def nearest(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest other stations of each station, nearest first."""
    n = len(x)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    out = np.empty((n, k), dtype=np.int64)
    for lo in range(0, n, 512):
        hi = min(n, lo + 512)
        d = np.hypot(x[lo:hi, None] - x[None, :], y[lo:hi, None] - y)
        d[np.arange(hi - lo), np.arange(lo, hi)] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.argsort(d, axis=1)
        rows = np.take_along_axis(d, part, axis=1)
        out[lo:hi] = np.take_along_axis(part, np.argsort(rows, axis=1, kind="stable"), axis=1)
    return out
