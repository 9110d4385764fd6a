"""What riders want: trip departure rates per station and hour-of-week, where the trips go, and
the weather that scales them.

The generated city's demand is a zone model (residential, business, leisure × hour-of-week ×
weather); a calibrated city (:mod:`dockline.sim.calibrate`) brings each station's own hourly
departure and arrival rates. Pure functions of the city's layout, plus :class:`WeatherProcess`,
which draws only from its own generator. Re-exported in part by :mod:`dockline.sim.city`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from dockline.sim._records import Weather
from dockline.sim.calibrate import CalibratedCity

__all__ = [
    "HOUR_DEST_CUM",
    "HOUR_ORIGIN",
    "WeatherProcess",
    "calibrated_hour",
    "destination_weights",
    "expected_flows",
    "weather_factor",
    "zone_hour",
]


def weather_factor(temp_c: float, precip_mm: float) -> float:
    """Demand multiplier for the weather: cold and rain suppress riding."""
    temp = min(1.0, max(0.2, 0.2 + 0.8 * (temp_c + 5.0) / 25.0))
    rain = 1.0 / (1.0 + 1.5 * max(0.0, precip_mm))
    return temp * rain


def _hour_profiles() -> tuple[np.ndarray, np.ndarray]:
    """Departure multipliers ``[168, zone]`` and destination-zone cumulative ``[168, zone, 3]``.

    Weekday mornings flow residential → business, evenings the reverse; weekends go to
    leisure. Hour-of-week 0 is Monday 00:00 local time.
    """
    origin = np.empty((168, 3))
    dest = np.empty((168, 3, 3))
    even = np.array([0.4, 0.3, 0.3])
    for how in range(168):
        day, hour = divmod(how, 24)
        weekend = day >= 5
        if not weekend:
            base = (0.05, 0.04, 0.03, 0.03, 0.05, 0.15, 0.5, 1.6, 2.0, 1.2, 0.6, 0.6,
                    0.8, 0.7, 0.6, 0.8, 1.4, 2.0, 1.6, 0.9, 0.6, 0.4, 0.25, 0.12)[hour]  # fmt: skip
            if 6 <= hour <= 9:
                mult = (2.2, 0.4, 0.5)
                d = np.array([[0.15, 0.75, 0.10], [0.3, 0.5, 0.2], [0.3, 0.5, 0.2]])
            elif 15 <= hour <= 19:
                mult = (0.6, 2.6, 0.8)
                d = np.array([[0.5, 0.2, 0.3], [0.75, 0.1, 0.15], [0.6, 0.2, 0.2]])
            else:
                mult = (1.0, 1.0, 1.0)
                d = np.tile(even, (3, 1))
        else:
            base = (0.15, 0.1, 0.06, 0.04, 0.03, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.2,
                    1.3, 1.3, 1.3, 1.2, 1.1, 1.0, 0.8, 0.6, 0.45, 0.35, 0.25,
                    0.2)[hour]  # fmt: skip
            if 9 <= hour <= 15:
                mult = (1.3, 0.4, 1.0)
                d = np.array([[0.3, 0.1, 0.6], [0.3, 0.2, 0.5], [0.3, 0.1, 0.6]])
            elif 16 <= hour <= 22:
                mult = (0.8, 0.5, 1.8)
                d = np.array([[0.5, 0.1, 0.4], [0.5, 0.2, 0.3], [0.7, 0.1, 0.2]])
            else:
                mult = (1.0, 1.0, 1.0)
                d = np.tile(even, (3, 1))
        origin[how] = base * np.asarray(mult)
        dest[how] = np.cumsum(d / d.sum(axis=1, keepdims=True), axis=1)
    return origin, dest


HOUR_ORIGIN, HOUR_DEST_CUM = _hour_profiles()


class WeatherProcess:
    """The hourly weather: a seasonal and daily temperature cycle plus a persistent anomaly, and
    rain spells that start and stop at random; it draws only from ``rng``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._temp_anomaly = 0.0
        self._raining = False

    def next_hour(self, local: datetime) -> Weather:
        """The weather of the hour starting at ``local`` (the city's local time)."""
        doy = local.timetuple().tm_yday
        seasonal = 10.0 - 14.0 * math.cos(2 * math.pi * (doy - 20) / 365.25)
        diurnal = 4.0 * math.sin(2 * math.pi * (local.hour - 9) / 24)
        self._temp_anomaly = 0.95 * self._temp_anomaly + self._rng.normal(0.0, 0.8)
        if self._raining:
            self._raining = self._rng.random() > 0.25
        else:
            self._raining = self._rng.random() < 0.03
        precip = float(self._rng.lognormal(0.0, 0.8)) if self._raining else 0.0
        temp = seasonal + diurnal + self._temp_anomaly
        return Weather(temp_c=round(temp, 2), precip_mm=round(precip, 2))


def _zone_cumulative(
    zone: np.ndarray, order: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each station's cumulative ``weight`` within its zone, over stations in ``order`` (zone z
    owns the interval [z, z + 1)), and each zone's total weight."""
    cumw = np.empty(len(zone))
    totals = np.zeros(3)
    for z in range(3):
        in_z = zone[order] == z
        sel = order[in_z]
        if sel.size:
            c = np.cumsum(weight[sel])
            totals[z] = c[-1]
            cumw[in_z] = z + c / c[-1]
    return cumw, totals


def destination_weights(zone: np.ndarray, popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Destination sampling of the zone model: stations sorted by zone (stable) and their
    cumulative popularity within their zone (zone z owns the interval [z, z + 1))."""
    order = np.argsort(zone, kind="stable")
    cumw, _ = _zone_cumulative(zone, order, popularity)
    return order, cumw


def zone_hour(
    how: int, zone: np.ndarray, popularity: np.ndarray, zone_present: np.ndarray, per_step: float
) -> tuple[np.ndarray, np.ndarray]:
    """The zone model's departure rate per station and step in hour-of-week ``how``
    (``per_step``: an average station's rate at multiplier 1, the weather included) and the
    cumulative destination-zone shares ``[origin zone, 3]``."""
    lam = per_step * popularity * HOUR_ORIGIN[how][zone]
    cum = HOUR_DEST_CUM[how].copy()
    if not zone_present.all():  # tiny cities: never send a trip to an empty zone
        probs = np.diff(cum, axis=1, prepend=0.0) * zone_present
        cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    return lam, cum


def calibrated_hour(
    cal: CalibratedCity, how: int, zone: np.ndarray, order: np.ndarray, step_min: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-station rates per step of hour-of-week ``how``; destinations ∝ that hour's arrival
    rates: (rates, cumulative weights within zones, cumulative zone shares ``[3, 3]``).

    Trips pick a zone then a station within it by cumulative weight, so the zone shares are set
    to the zones' arrival totals (the same for every origin) and the weights within a zone to the
    stations' arrival rates: together, P(station) ∝ its arrival rate.
    """
    lam = cal.departures[:, how] / 60.0 * step_min
    w = cal.arrivals[:, how] + 1e-9
    cumw, zone_w = _zone_cumulative(zone, order, w)
    return lam, cumw, np.tile(np.cumsum(zone_w / zone_w.sum()), (3, 1))


def expected_flows(
    start: datetime,
    minutes: float,
    tz: ZoneInfo,
    *,
    zone: np.ndarray,
    popularity: np.ndarray,
    zone_present: np.ndarray,
    per_min: float,
    calibrated: CalibratedCity | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected (departures, arrivals) per station over ``minutes`` from ``start`` at the rates
    of the hours they fall in (``per_min``: an average station's departures per minute at
    multiplier 1, the weather included; unused by a calibrated city)."""
    n = len(zone)
    dep = np.zeros(n)
    arr = np.zeros(n)
    rate = per_min * popularity
    zone_pop = np.bincount(zone, weights=popularity, minlength=3)
    share = popularity / np.maximum(zone_pop[zone], 1e-12)
    t = start
    left = float(minutes)
    while left > 0:
        local = t.astimezone(tz)
        span = min(left, 60.0 - local.minute - local.second / 60.0)
        how = local.weekday() * 24 + local.hour
        if calibrated is not None:
            d = calibrated.departures[:, how] / 60.0 * span
            w = calibrated.arrivals[:, how] + 1e-9
            dep += d
            arr += d.sum() * w / w.sum()
            left -= span
            t += timedelta(minutes=span)
            continue
        d = rate * HOUR_ORIGIN[how][zone] * span
        probs = np.diff(HOUR_DEST_CUM[how], axis=1, prepend=0.0) * zone_present
        probs /= probs.sum(axis=1, keepdims=True)
        to_zone = np.bincount(zone, weights=d, minlength=3) @ probs
        dep += d
        arr += to_zone[zone] * share
        left -= span
        t += timedelta(minutes=span)
    return dep, arr
