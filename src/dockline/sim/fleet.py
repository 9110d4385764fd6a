"""Trucks in the simulated city: they drive, load, carry and unload with travel time.

A :class:`Fleet` hooks into :class:`~dockline.sim.city.City` stepping. An accepted action sends
an idle truck from where it stands to the source station (it loads what is there when it arrives,
up to the bikes asked), then to the destination (it unloads; bikes that find no dock go to the
nearest free ones). Travel time is :func:`dockline.core.decisions.travel_minutes` of the street
distance, the same formula the planner's ETA uses. Impossible actions are refused with a reason.

>>> from dockline.sim.city import City, CityConfig
>>> city = City(CityConfig(stations=30, seed=1))
>>> fleet = Fleet(city, trucks=1)
>>> [r.status for r in fleet.apply([ActionRequest("t1", "s0001", "s0001", 3)])]
['refused']
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np

from dockline.core.decisions import Truck, travel_km, travel_minutes
from dockline.core.errors import NotFoundError
from dockline.sim.city import CENTER, City

__all__ = [
    "REFUSAL_REASONS",
    "ActionRequest",
    "ActionResult",
    "Fleet",
    "future_outlook",
]

REFUSAL_REASONS = (
    "unknown_truck",
    "unknown_station",
    "bad_bikes",
    "same_station",
    "over_capacity",
    "truck_busy",
    "station_closed",
    "no_bikes",
)


class ActionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One move asked of a truck (extra fields of a decision's action are ignored)."""

    truck_id: str
    from_station: str
    to_station: str
    bikes: int


class ActionResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the fleet did with one request."""

    truck_id: str
    from_station: str
    to_station: str
    bikes: int
    status: str  # accepted | refused
    reason: str | None = None
    detail: str | None = None
    pickup_at: datetime | None = None
    eta: datetime | None = None
    km: float | None = None


@dataclass(slots=True)
class _Truck:
    truck_id: str
    lat: float
    lon: float
    capacity: int
    load: int = 0
    free_at_step: int = 0  # the step from which it takes a new action


class Fleet:
    """Trucks that execute moves in a city with travel time (starting at ``depot``)."""

    def __init__(
        self,
        city: City,
        trucks: int = 3,
        capacity: int = 20,
        speed_kmh: float = 20.0,
        handling_min: float = 5.0,
        depot: tuple[float, float] = CENTER,
    ) -> None:
        self.city = city
        self.speed_kmh = speed_kmh
        self.handling_min = handling_min
        self.trucks = [_Truck(f"t{k + 1}", depot[0], depot[1], capacity) for k in range(trucks)]
        self._by_id = {t.truck_id: k for k, t in enumerate(self.trucks)}
        # (step, seq, kind, truck, station, bikes, km): kind 0 = load at source, 1 = unload.
        self._events: list[tuple[int, int, int, int, int, int, float]] = []
        self._seq = 0
        self.accepted = 0
        self.refused = 0
        city.add_step_hook(self._on_step)

    # -- state ---------------------------------------------------------------------------------

    def snapshot(self) -> list[Truck]:
        """The trucks as the decision contract sees them."""
        step_min = self.city.config.step.total_seconds() / 60.0
        now = self.city.time
        out = []
        for t in self.trucks:
            wait = max(0, t.free_at_step - self.city.step_index)
            busy = now + timedelta(minutes=wait * step_min) if wait else None
            out.append(
                Truck(
                    truck_id=t.truck_id,
                    lat=round(t.lat, 6),
                    lon=round(t.lon, 6),
                    load=t.load,
                    capacity=t.capacity,
                    busy_until=busy,
                )
            )
        return out

    # -- actions -------------------------------------------------------------------------------

    def apply(self, requests: Iterable[ActionRequest]) -> list[ActionResult]:
        """Accept or refuse each request, in order; accepted ones are scheduled now."""
        city = self.city
        results = []
        for req in requests:
            reason, detail = self._refusal(req)
            if reason is not None:
                self.refused += 1
                results.append(_result(req, "refused", reason=reason, detail=detail))
                continue
            k = self._by_id[req.truck_id]
            truck = self.trucks[k]
            src, dst = city.index_of(req.from_station), city.index_of(req.to_station)
            km1 = float(travel_km(truck.lat, truck.lon, city.lat[src], city.lon[src]))
            km2 = float(travel_km(city.lat[src], city.lon[src], city.lat[dst], city.lon[dst]))
            m1 = travel_minutes(km1, self.speed_kmh, self.handling_min)
            m2 = travel_minutes(km2, self.speed_kmh, self.handling_min)
            step_min = city.config.step.total_seconds() / 60.0
            load_step = city.step_index + max(1, math.ceil(m1 / step_min))
            unload_step = load_step + max(1, math.ceil(m2 / step_min))
            self._push(load_step, 0, k, src, req.bikes, km1)
            self._push(unload_step, 1, k, dst, 0, km2)
            truck.free_at_step = unload_step + 1
            self.accepted += 1
            now = city.time
            results.append(
                _result(
                    req,
                    "accepted",
                    pickup_at=now + timedelta(minutes=(load_step - city.step_index) * step_min),
                    eta=now + timedelta(minutes=(unload_step - city.step_index) * step_min),
                    km=round(km1 + km2, 3),
                )
            )
        return results

    def handle_actions(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /v1/actions``: ``{"actions": [...]}`` → (HTTP status, answer)."""
        try:
            payload = msgspec.json.decode(body, type=_ActionsBody)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return 400, {"reason": "bad_request", "detail": str(exc)}
        results = self.apply(payload.actions)
        answer = {
            "time": self.city.time.isoformat().replace("+00:00", "Z"),
            "accepted": sum(r.status == "accepted" for r in results),
            "refused": sum(r.status == "refused" for r in results),
            "results": msgspec.to_builtins(results),
            "trucks": msgspec.to_builtins(self.snapshot()),
        }
        return 200, answer

    def _refusal(self, req: ActionRequest) -> tuple[str | None, str | None]:
        city = self.city
        k = self._by_id.get(req.truck_id)
        if k is None:
            return "unknown_truck", f"no truck {req.truck_id!r}"
        for sid in (req.from_station, req.to_station):
            try:
                city.index_of(sid)
            except NotFoundError:
                return "unknown_station", f"no station {sid!r}"
        if req.bikes < 1:
            return "bad_bikes", f"bikes must be >= 1; got {req.bikes}"
        if req.from_station == req.to_station:
            return "same_station", "from_station and to_station must differ"
        truck = self.trucks[k]
        if req.bikes > truck.capacity:
            return "over_capacity", f"bikes must be <= {truck.capacity}; got {req.bikes}"
        if truck.free_at_step > city.step_index:
            return "truck_busy", f"{req.truck_id} is on a move until step {truck.free_at_step}"
        src = city.index_of(req.from_station)
        dst = city.index_of(req.to_station)
        if not (city.is_renting[src] and city.is_renting[dst]):
            return "station_closed", "a station of the move is out of service"
        if city.bikes[src] == 0:
            return "no_bikes", f"{req.from_station} has no bikes"
        return None, None

    # -- stepping ------------------------------------------------------------------------------

    def _push(self, step: int, kind: int, truck: int, station: int, bikes: int, km: float) -> None:
        self._seq += 1
        heapq.heappush(self._events, (step, self._seq, kind, truck, station, bikes, km))

    def _on_step(self, step: int) -> None:
        city = self.city
        while self._events and self._events[0][0] <= step:
            _, _, kind, k, station, bikes, km = heapq.heappop(self._events)
            truck = self.trucks[k]
            city.metrics.truck_km += km
            truck.lat, truck.lon = float(city.lat[station]), float(city.lon[station])
            if kind == 0:
                truck.load = city.load_truck(station, bikes)
            else:
                if truck.load:
                    city.unload_truck(station, truck.load)
                truck.load = 0


class _ActionsBody(msgspec.Struct, frozen=True):
    actions: list[ActionRequest]


def _result(req: ActionRequest, status: str, **kw: Any) -> ActionResult:
    return ActionResult(
        truck_id=req.truck_id,
        from_station=req.from_station,
        to_station=req.to_station,
        bikes=req.bikes,
        status=status,
        **kw,
    )


def future_outlook(city: City, minutes: int) -> dict[str, np.ndarray]:
    """Perfect foresight: run a copy of the city (trucks in flight included) ``minutes`` steps
    with no new moves, and say per station how many bikes it needs / can spare / must shed /
    can take, and its empty and full minutes. The city itself does not move."""
    import copy

    twin = copy.deepcopy(city)
    n = city.n
    start = city.bikes.copy()
    cap = city.capacity - city.docks_disabled
    flow = np.zeros(n, dtype=np.int64)
    low = np.zeros(n, dtype=np.int64)
    high = np.zeros(n, dtype=np.int64)
    empty = np.zeros(n, dtype=np.int64)
    full = np.zeros(n, dtype=np.int64)
    for _ in range(minutes):
        twin.step()
        flow += twin.last_arrivals - twin.last_demand
        np.minimum(low, flow, out=low)
        np.maximum(high, flow, out=high)
        empty += twin.bikes == 0
        full += twin.bikes + twin.docks_disabled >= twin.capacity
    return {
        "need": np.maximum(0, 1 - (start + low)),
        "removable": np.maximum(0, start + low - 1),
        "spill": np.maximum(0, start + high - (cap - 1)),
        "room": np.maximum(0, cap - 1 - (start + high)),
        "empty_minutes": empty,
        "full_minutes": full,
    }
