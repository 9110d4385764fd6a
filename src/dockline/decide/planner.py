"""Move planners: the dispatcher's greedy rule and a min-cost flow solved by HiGHS.

Both return :class:`Plan`: moves ``(truck, src, dst, bikes)`` in station/truck indices of a
:class:`~dockline.decide._frame.Frame`, the benefit they expect and the constraints that bound.
A move never takes more than the source can spare, brings more than the destination wants, or
loads more than the truck carries; the number of moves never exceeds the frame's slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, linprog, milp
from scipy.sparse import coo_matrix

from dockline.core.decisions import travel_minutes
from dockline.decide._frame import Frame, binding_slots

__all__ = ["Plan", "plan_flow", "plan_reactive"]


@dataclass(slots=True)
class Plan:
    """Planned moves (frame indices) with their expected benefit and binding constraints."""

    moves: list[tuple[int, int, int, int]] = field(default_factory=list)
    benefit: float = 0.0
    binding: set[str] = field(default_factory=set)


def plan_reactive(frame: Frame, target_fill: float) -> Plan:
    """The dispatcher's rule: send the nearest idle truck to the nearest station empty or full
    now; an empty one gets bikes from the nearest station above its target fill, a full one
    sends bikes to the nearest station below it. Each station is touched once per cycle."""
    plan = Plan()
    target = np.rint(target_fill * frame.cap).astype(np.int64)
    ok = frame.renting & (frame.cap > 0)
    empty = np.flatnonzero(ok & (frame.bikes == 0))
    full = np.flatnonzero(ok & (frame.room == 0))
    problems = [(int(i), "empty") for i in empty] + [(int(j), "full") for j in full]
    surplus = np.where(ok, frame.bikes - target, 0)
    deficit = np.where(ok, target - frame.bikes, 0)
    used = np.zeros(frame.n, dtype=bool)
    trucks = list(frame.trucks)
    c = frame.inputs.constraints
    plan.binding.update(binding_slots(frame, len(problems)))
    while problems and trucks and len(plan.moves) < frame.slots:
        where = np.array([p for p, _ in problems])
        dist = np.stack([frame.truck_km_to(t, where) for t in trucks])
        k, p = np.unravel_index(int(np.argmin(dist)), dist.shape)
        truck = trucks[int(k)]
        station, kind = problems.pop(int(p))
        if kind == "empty":
            donors = np.flatnonzero((surplus > 0) & ~used)
            if donors.size == 0:
                continue
            route = (
                frame.truck_km_to(truck, donors) + frame.pair_km(donors, np.array([station]))[:, 0]
            )
            src, dst = int(donors[int(np.argmin(route))]), station
        else:
            sinks = np.flatnonzero((deficit > 0) & ~used)
            if sinks.size == 0:
                continue
            dst = int(sinks[int(np.argmin(frame.pair_km(np.array([station]), sinks)[0]))])
            src = station
        bikes = int(min(frame.truck_cap[truck], surplus[src], deficit[dst]))
        if bikes <= 0:
            continue
        if frame.eta_minutes(truck, src, dst) > c.max_eta_min:
            plan.binding.add("travel_time")
            continue
        if bikes == frame.truck_cap[truck]:
            plan.binding.add("truck_capacity")
        plan.moves.append((truck, src, dst, bikes))
        plan.benefit += 1.0
        surplus[src] -= bikes
        deficit[dst] -= bikes
        used[src] = used[dst] = True
        trucks.remove(truck)
    return plan


def plan_flow(
    frame: Frame,
    supply: np.ndarray,
    value_out: np.ndarray,
    demand: np.ndarray,
    value_in: np.ndarray,
    *,
    km_cost: float,
    max_candidates: int,
) -> Plan:
    """Moves surplus → deficit as a min-cost flow solved by HiGHS.

    A move (one truck) from source j to sink i carries ``b = min(truck, supply[j], demand[i])``
    bikes and is worth ``b × (value_in[i] + value_out[j]) - km_cost × km``. The flow network
    (super source → sources → sinks → super sink, unit capacities, at most ``frame.slots`` units)
    picks the best set of moves, each station in at most one; its constraint matrix is totally
    unimodular, so HiGHS's solution is integral at the root. Idle trucks are then assigned to
    the chosen moves by least deadhead time (Hungarian); a move a truck cannot finish within
    ``max_eta_min`` is dropped.
    """
    plan = Plan()
    if frame.slots == 0 or not frame.trucks:
        return plan
    c = frame.inputs.constraints
    src = _top(supply, value_out, max_candidates)
    dst = _top(demand, value_in, max_candidates)
    if src.size == 0 or dst.size == 0:
        return plan
    km = frame.pair_km(src, dst)
    # The fastest any idle truck reaches each source: pairs no truck can finish in time go.
    deadhead = np.min(
        np.stack(
            [travel_minutes(frame.truck_km_to(t, src), c.speed_kmh, c.handling_min)
             for t in frame.trucks]
        ),
        axis=0,
    )  # fmt: skip
    minutes = deadhead[:, None] + travel_minutes(km, c.speed_kmh, c.handling_min)
    q = max(frame.truck_cap[t] for t in frame.trucks)
    bikes = np.minimum(np.minimum(supply[src][:, None], demand[dst][None, :]), q)
    weight = value_out[src][:, None] + value_in[dst][None, :]
    worth = bikes * weight - km_cost * km
    useful = (worth > 0) & (src[:, None] != dst[None, :])
    feasible = useful & (minutes <= c.max_eta_min)
    if useful.any() and not feasible.all(where=useful):
        plan.binding.add("travel_time")
    js, is_ = np.nonzero(feasible)
    p = js.size
    if p == 0:
        return plan
    cols = np.arange(p)
    rows = np.concatenate([js, src.size + is_, np.full(p, src.size + dst.size)])
    matrix = coo_matrix(
        (np.ones(3 * p), (rows, np.tile(cols, 3))), shape=(src.size + dst.size + 1, p)
    )
    upper = np.concatenate([np.ones(src.size + dst.size), [float(frame.slots)]])
    # Totally unimodular: the dual simplex lands on an integral vertex; the MILP is the fallback
    # should rounding ever leave it fractional.
    lp = linprog(
        -worth[js, is_],
        A_ub=matrix.tocsr(),
        b_ub=upper,
        bounds=(0.0, 1.0),
        method="highs-ds",
    )
    x = lp.x if lp.status == 0 else None
    if x is None or np.abs(x - np.rint(x)).max() > 1e-6:
        result = milp(
            -worth[js, is_],
            constraints=[LinearConstraint(matrix, -np.inf, upper)],
            integrality=np.ones(p),
            bounds=Bounds(np.zeros(p), np.ones(p)),
            options={"time_limit": 2.0},
        )
        x = result.x
    if x is None:
        return plan
    chosen = np.flatnonzero(np.rint(x) > 0)
    if chosen.size == 0:
        return plan
    # Trucks to moves by deadhead time (deterministic: the Hungarian method breaks ties by index).
    trucks = frame.trucks
    dead: np.ndarray = np.stack(
        [travel_minutes(frame.truck_km_to(t, src[js[chosen]]), c.speed_kmh, c.handling_min)
         for t in trucks]
    )  # fmt: skip
    rows_t, cols_m = linear_sum_assignment(dead)
    order = sorted(zip(rows_t.tolist(), cols_m.tolist(), strict=True), key=lambda rc: rc[1])
    for r, col in order:
        pair = int(chosen[col])
        truck = trucks[r]
        s, d = int(src[js[pair]]), int(dst[is_[pair]])
        load = int(min(bikes[js[pair], is_[pair]], frame.truck_cap[truck]))
        if frame.eta_minutes(truck, s, d) > c.max_eta_min:
            plan.binding.add("travel_time")
            continue
        if load == frame.truck_cap[truck]:
            plan.binding.add("truck_capacity")
        plan.moves.append((truck, s, d, load))
        plan.benefit += float(load * weight[js[pair], is_[pair]])
    if chosen.size >= frame.slots:
        wanted = int(np.count_nonzero(useful.any(axis=1))) + int(
            np.count_nonzero(useful.any(axis=0))
        )
        plan.binding.update(binding_slots(frame, wanted))
    return plan


def _top(amount: np.ndarray, value: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best candidates with ``amount > 0``: by value, then amount, then
    index (a stable, deterministic order)."""
    idx = np.flatnonzero(amount > 0)
    if idx.size == 0:
        return idx
    order = np.lexsort((idx, -amount[idx], -(value[idx] * amount[idx])))
    picked: np.ndarray = np.sort(idx[order[:k]])
    return picked
