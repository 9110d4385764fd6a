"""Policies: the gates and their fallbacks, budgets and capacities, conservation, determinism."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from decide_helpers import NOON, city, with_future

from dockline.core.decisions import (
    Constraints,
    Decision,
    DecisionInput,
    HealthInput,
    PolicyParams,
    decode_decision,
    decode_input,
    encode,
)
from dockline.core.errors import ContractError, ValidationError
from dockline.decide import decide, evaluate_gates


def test_healthy_fresh_confident_acts_on_the_model() -> None:
    d = decide("predictive", city())
    assert d.health_gate == "open"
    assert "model_acted" in d.reasons
    assert d.actions, "a city with empty and full stations and idle trucks gets moves"
    assert d.model_versions == ("7",) and d.bundle_ids == ("b-abc",)
    assert d.expected_benefit > 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"health": HealthInput("degraded", feature_age_s=30)}, "health_degraded"),
        ({"health": HealthInput("unhealthy", feature_age_s=30)}, "health_unhealthy"),
        ({"health": HealthInput("healthy", feature_age_s=3600)}, "features_stale"),
        ({"age_s": 3600.0}, "features_stale"),
        ({"confident": False}, "low_confidence"),
    ],
)
def test_each_failing_gate_falls_back_to_reactive_and_says_which(
    change: dict[str, object], reason: str
) -> None:
    inputs = city(**change)  # type: ignore[arg-type]
    d = decide("predictive", inputs)
    assert d.health_gate == "fallback"
    assert reason in d.reasons and "fallback_reactive" in d.reasons
    assert "model_acted" not in d.reasons
    # The fallback's moves are exactly the reactive policy's moves.
    assert d.actions == decide("reactive", inputs).actions


def test_missing_predictions_fall_back() -> None:
    inputs = city()
    thin = msgspec.structs.replace(inputs, predictions=inputs.predictions[:10])
    d = decide("predictive", thin)
    assert d.health_gate == "fallback" and "predictions_missing" in d.reasons


def test_unhealthy_and_stale_holds() -> None:
    d = decide("predictive", city(health=HealthInput("unhealthy", feature_age_s=7200)))
    assert d.health_gate == "hold"
    assert d.actions == ()
    assert "hold_unhealthy_and_stale" in d.reasons


def test_gate_thresholds_are_configurable() -> None:
    inputs = city(health=HealthInput("degraded", feature_age_s=30))
    lenient = PolicyParams(healthy_verdicts=("healthy", "degraded"))
    assert evaluate_gates(inputs, lenient).failed == []
    assert decide("predictive", inputs, lenient).health_gate == "open"


def test_outside_service_hours_nothing_moves() -> None:
    night = datetime(2024, 5, 6, 8, tzinfo=UTC)  # 03:00 in Chicago
    for policy in ("reactive", "predictive"):
        d = decide(policy, city(when=night))
        assert d.actions == () and "outside_service_hours" in d.reasons
        assert "service_hours" in d.binding_constraints


def _check_feasible(inputs: DecisionInput, d: Decision) -> None:
    c = inputs.constraints
    states = {s.station_id: s for s in inputs.stations}
    caps = {t.truck_id: min(t.capacity, c.truck_capacity) for t in inputs.fleet}
    assert len(d.actions) <= c.moves_per_cycle
    assert len(d.actions) <= max(0, c.moves_per_day - c.moves_used_today)
    assert len({a.truck_id for a in d.actions}) == len(d.actions), "one move per truck"
    out: Counter[str] = Counter()
    into: Counter[str] = Counter()
    for a in d.actions:
        assert 1 <= a.bikes <= caps[a.truck_id]
        assert a.from_station != a.to_station
        assert a.eta > a.pickup_at > inputs.cycle_time
        assert (a.eta - inputs.cycle_time).total_seconds() <= c.max_eta_min * 60
        out[a.from_station] += a.bikes
        into[a.to_station] += a.bikes
    bikes = {sid: s.bikes - out[sid] + into[sid] for sid, s in states.items()}
    assert sum(bikes.values()) == sum(s.bikes for s in states.values()), "bikes conserved"
    for sid, s in states.items():
        assert 0 <= bikes[sid] <= s.capacity, sid


@pytest.mark.parametrize("policy", ["reactive", "predictive", "oracle"])
@pytest.mark.parametrize("seed", range(12))
def test_budget_capacity_and_conservation_hold(policy: str, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    constraints = Constraints(
        moves_per_cycle=int(rng.integers(0, 5)),
        moves_per_day=20,
        moves_used_today=int(rng.integers(15, 21)),
        truck_capacity=int(rng.integers(3, 25)),
        max_eta_min=float(rng.integers(20, 90)),
    )
    inputs = with_future(city(seed, trucks=int(rng.integers(0, 5)), constraints=constraints))
    d = decide(policy, inputs)  # type: ignore[arg-type]
    _check_feasible(inputs, d)


def test_busy_trucks_are_not_used() -> None:
    inputs = city()
    busy = tuple(
        msgspec.structs.replace(t, busy_until=NOON + timedelta(minutes=10)) for t in inputs.fleet
    )
    d = decide("predictive", msgspec.structs.replace(inputs, fleet=busy))
    assert d.actions == () and "trucks" in d.binding_constraints


def test_move_budget_binds_and_is_named() -> None:
    inputs = city(trucks=5, constraints=Constraints(moves_per_cycle=1, truck_capacity=12))
    d = decide("reactive", inputs)
    assert len(d.actions) == 1 and "moves_per_cycle" in d.binding_constraints
    spent = Constraints(moves_per_cycle=3, moves_per_day=10, moves_used_today=10)
    d = decide("predictive", city(constraints=spent))
    assert d.actions == () and "no_move_slots" in d.reasons


def test_same_inputs_same_bytes_and_ids_follow_inputs_and_params() -> None:
    inputs = city(3)
    first = encode(decide("predictive", inputs))
    again = encode(decide("predictive", decode_input(encode(inputs))))
    assert first == again
    d = decode_decision(first)
    assert encode(d) == first
    other = decide("predictive", inputs, PolicyParams(act_threshold=0.6))
    assert other.decision_id != d.decision_id and other.input_hash == d.input_hash
    assert decide("predictive", city(4)).input_hash != d.input_hash
    assert decide("reactive", inputs).decision_id != d.decision_id


def test_oracle_needs_the_future() -> None:
    with pytest.raises(ValidationError, match="future"):
        decide("oracle", city())
    d = decide("oracle", with_future(city()))
    assert d.actions and "oracle_foresight" in d.reasons


def test_none_never_moves() -> None:
    d = decide("none", city())
    assert d.actions == () and d.reasons == ("policy_none",)


def test_bad_inputs_are_contract_errors() -> None:
    raw = msgspec.json.decode(encode(city()))
    raw["predictions"][0]["p_empty"] = 1.5
    with pytest.raises(ContractError, match="p_empty"):
        decode_input(msgspec.json.encode(raw))
    raw = msgspec.json.decode(encode(city()))
    raw["schema_version"] = 99
    with pytest.raises(ContractError, match="schema_version"):
        decode_input(msgspec.json.encode(raw))
    with pytest.raises(ValidationError, match="policy must be"):
        decide("greedy", city())  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(8))
def test_the_flow_planner_finds_the_best_set_of_moves(seed: int) -> None:
    """Against brute force over every set of moves (each station once, at most `slots`)."""
    from itertools import combinations

    from dockline.decide._frame import build_frame
    from dockline.decide.planner import plan_flow

    rng = np.random.default_rng(seed)
    frame = build_frame(city(seed, n=8, trucks=3, constraints=Constraints(moves_per_cycle=2)))
    supply = rng.integers(1, 6, frame.n) * (rng.random(frame.n) < 0.5)
    demand = rng.integers(1, 6, frame.n) * (supply == 0)
    value_out = rng.random(frame.n) * (supply > 0) * 0.3
    value_in = rng.random(frame.n) * (demand > 0)
    plan = plan_flow(frame, supply, value_out, demand, value_in, km_cost=0.05, max_candidates=8)

    def worth(j: int, i: int) -> float:
        bikes = min(supply[j], demand[i], 12)
        km = float(frame.pair_km(np.array([j]), np.array([i]))[0, 0])
        return float(bikes * (value_in[i] + value_out[j]) - 0.05 * km)

    def reachable(j: int, i: int) -> bool:
        return min(frame.eta_minutes(t, j, i) for t in frame.trucks) <= 60.0

    pairs = [(j, i) for j in range(frame.n) for i in range(frame.n)
             if supply[j] > 0 and demand[i] > 0 and j != i and worth(j, i) > 0
             and reachable(j, i)]  # fmt: skip
    best = 0.0
    for k in range(1, 3):
        for combo in combinations(pairs, k):
            if len({j for j, _ in combo}) == k and len({i for _, i in combo}) == k:
                best = max(best, sum(worth(j, i) for j, i in combo))
    got = sum(worth(s, d) for _, s, d, _ in plan.moves)
    assert got == pytest.approx(best, abs=1e-9)
    assert best > 0 and len(plan.moves) <= 2
