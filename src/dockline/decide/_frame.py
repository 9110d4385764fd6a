"""One cycle's inputs as arrays, and the truck-side arithmetic every policy shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from dockline.core.decisions import Action, DecisionInput, travel_km, travel_minutes
from dockline.core.errors import ValidationError


@dataclass(slots=True)
class Frame:
    """Station arrays (indexed like ``ids``), idle trucks and the cycle's move slots."""

    inputs: DecisionInput
    ids: list[str]
    bikes: np.ndarray
    room: np.ndarray  # free docks
    cap: np.ndarray  # bikes + free docks (the usable capacity now)
    lat: np.ndarray
    lon: np.ndarray
    renting: np.ndarray
    trucks: list[int]  # indices into inputs.fleet of idle trucks, in fleet order
    truck_cap: dict[int, int]
    slots: int  # moves this cycle can still make
    limits: dict[str, int] = field(default_factory=dict)  # constraint name -> its move limit

    @property
    def n(self) -> int:
        return len(self.ids)

    def in_service(self) -> bool:
        """Whether the cycle time is inside the service hours (local time)."""
        c = self.inputs.constraints
        hour = self.inputs.cycle_time.astimezone(ZoneInfo(c.tz)).hour
        return c.service_start_hour <= hour < c.service_end_hour

    def truck_km_to(self, truck: int, stations: np.ndarray) -> np.ndarray:
        t = self.inputs.fleet[truck]
        out: np.ndarray = np.atleast_1d(
            travel_km(t.lat, t.lon, self.lat[stations], self.lon[stations])
        )
        return out

    def pair_km(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Street km from each ``src`` to each ``dst`` (a matrix)."""
        out: np.ndarray = np.atleast_2d(
            travel_km(
                self.lat[src][:, None], self.lon[src][:, None], self.lat[dst][None], self.lon[dst]
            )
        )
        return out

    def action(self, truck: int, src: int, dst: int, bikes: int) -> Action:
        """The action with its pickup time, ETA and km (deadhead leg included)."""
        c = self.inputs.constraints
        t = self.inputs.fleet[truck]
        km1 = float(travel_km(t.lat, t.lon, self.lat[src], self.lon[src]))
        km2 = float(travel_km(self.lat[src], self.lon[src], self.lat[dst], self.lon[dst]))
        pickup = self.inputs.cycle_time + timedelta(
            minutes=travel_minutes(km1, c.speed_kmh, c.handling_min)
        )
        eta = pickup + timedelta(minutes=travel_minutes(km2, c.speed_kmh, c.handling_min))
        return Action(
            truck_id=t.truck_id,
            from_station=self.ids[src],
            to_station=self.ids[dst],
            bikes=int(bikes),
            pickup_at=_whole_seconds(pickup),
            eta=_whole_seconds(eta),
            km=round(km1 + km2, 3),
        )

    def eta_minutes(self, truck: int, src: int, dst: int) -> float:
        a = self.action(truck, src, dst, 0)
        return (a.eta - self.inputs.cycle_time).total_seconds() / 60.0


def _whole_seconds(when: datetime) -> datetime:
    return when.replace(microsecond=0)


def build_frame(inputs: DecisionInput) -> Frame:
    """Arrays from the contract; raises on duplicate stations or inconsistent counts."""
    states = inputs.stations
    ids = [s.station_id for s in states]
    if len(set(ids)) != len(ids):
        raise ValidationError("stations must be unique; got duplicates", reason="duplicate")
    bikes = np.array([s.bikes for s in states], dtype=np.int64)
    room = np.array([s.docks for s in states], dtype=np.int64)
    c = inputs.constraints
    idle = [
        k
        for k, t in enumerate(inputs.fleet)
        if (t.busy_until is None or t.busy_until <= inputs.cycle_time)
    ]
    truck_cap = {
        k: max(0, min(inputs.fleet[k].capacity, c.truck_capacity) - inputs.fleet[k].load)
        for k in idle
    }
    idle = [k for k in idle if truck_cap[k] > 0]
    limits = {
        "moves_per_cycle": c.moves_per_cycle,
        "moves_per_day": max(0, c.moves_per_day - c.moves_used_today),
        "trucks": len(idle),
    }
    return Frame(
        inputs=inputs,
        ids=ids,
        bikes=bikes,
        room=room,
        cap=bikes + room,
        lat=np.array([s.lat for s in states], dtype=np.float64),
        lon=np.array([s.lon for s in states], dtype=np.float64),
        renting=np.array([s.renting for s in states], dtype=bool),
        trucks=idle,
        truck_cap=truck_cap,
        slots=max(0, min(limits.values())),
        limits=limits,
    )


def binding_slots(frame: Frame, wanted: int) -> list[str]:
    """Which move limits stopped the policy from making ``wanted`` moves."""
    if wanted <= frame.slots:
        return []
    return sorted(name for name, limit in frame.limits.items() if limit == frame.slots)
