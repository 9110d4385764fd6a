"""Shared inputs for the decide tests: a random but valid cycle, and its oracle future."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np

from dockline.core.decisions import (
    Constraints,
    DecisionInput,
    FutureOutlook,
    HealthInput,
    StationPrediction,
    StationState,
    Truck,
)

NOON = datetime(2024, 5, 6, 17, tzinfo=UTC)  # 12:00 in Chicago: inside service hours


def city(
    seed: int = 0,
    n: int = 40,
    *,
    trucks: int = 3,
    constraints: Constraints | None = None,
    health: HealthInput | None = None,
    when: datetime = NOON,
    confident: bool = True,
    age_s: float = 30.0,
) -> DecisionInput:
    """A random but valid cycle: stations near the Loop, some empty, some full, predictions."""
    rng = np.random.default_rng(seed)
    cap = rng.integers(11, 30, n)
    bikes = rng.integers(0, cap + 1)
    bikes[rng.random(n) < 0.15] = 0
    full = rng.random(n) < 0.15
    bikes[full] = cap[full]
    lat = 41.88 + rng.normal(0, 0.03, n)
    lon = -87.63 + rng.normal(0, 0.03, n)
    stations = tuple(
        StationState(
            f"s{i:03d}",
            bikes=int(bikes[i]),
            docks=int(cap[i] - bikes[i]),
            capacity=int(cap[i]),
            lat=float(lat[i]),
            lon=float(lon[i]),
            as_of=when - timedelta(seconds=age_s),
            age_s=age_s,
        )
        for i in range(n)
    )
    fill = bikes / cap
    if confident:
        pe = np.clip(1.0 - fill * 3, 0, 1)
        pf = np.clip(fill * 3 - 2, 0, 1)
    else:
        pe = np.full(n, 0.5)
        pf = np.full(n, 0.45)
    preds = tuple(
        StationPrediction(
            station_id=s.station_id,
            p_empty=round(float(pe[i]), 6),
            p_full=round(float(pf[i]), 6),
            model_version="7",
            bundle_id="b-abc",
            expected_net=float(rng.normal(0, 2)),
        )
        for i, s in enumerate(stations)
    )
    fleet = tuple(
        Truck(truck_id=f"t{k + 1}", lat=41.88, lon=-87.63, capacity=15) for k in range(trucks)
    )
    return DecisionInput(
        cycle_time=when,
        stations=stations,
        predictions=preds,
        health=health or HealthInput("healthy", feature_age_s=age_s),
        fleet=fleet,
        constraints=constraints or Constraints(moves_per_cycle=3, truck_capacity=12),
    )


def with_future(inputs: DecisionInput) -> DecisionInput:
    """An oracle input: stations empty now need bikes, full ones must shed."""
    outlook = tuple(
        FutureOutlook(
            station_id=s.station_id,
            need=max(0, 5 - s.bikes),
            removable=max(0, s.bikes - 5),
            spill=max(0, s.bikes - (s.capacity - 3)),
            room=max(0, s.docks - 3),
            empty_minutes=40 if s.bikes < 2 else 0,
            full_minutes=40 if s.docks < 2 else 0,
        )
        for s in inputs.stations
    )
    return msgspec.structs.replace(inputs, future=outlook)
