"""The policies: pure functions ``DecisionInput -> Decision``.

* ``none`` moves nothing (the baseline);
* ``reactive`` is the dispatcher's rule on what is empty or full *now*;
* ``predictive`` ranks stations by predicted risk and plans moves surplus → deficit with a
  min-cost flow (HiGHS) — but only through its gates: the deployment healthy, the features fresh,
  the predictions covering the stations and confident. A failed gate falls back to ``reactive``
  and the record names the gate; unhealthy *and* stale holds (nothing moves: even "empty now" is
  then not to be trusted);
* ``oracle`` plans with the simulator's future (:class:`~dockline.core.decisions.FutureOutlook`):
  the upper bound.

>>> from datetime import UTC, datetime
>>> from dockline.core.decisions import HealthInput, StationState
>>> t = datetime(2024, 5, 6, 14, tzinfo=UTC)
>>> s = StationState("a", bikes=0, docks=10, capacity=10, lat=41.88, lon=-87.63, as_of=t)
>>> d = decide("predictive", DecisionInput(cycle_time=t, stations=(s,), health=HealthInput(
...     "degraded")))
>>> d.health_gate, d.reasons[:2]
('fallback', ('health_degraded', 'predictions_missing'))
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dockline.core.decisions import (
    Decision,
    DecisionInput,
    GateState,
    PolicyName,
    PolicyParams,
    decision_id,
    input_hash,
)
from dockline.core.errors import ValidationError
from dockline.decide._frame import Frame, build_frame
from dockline.decide.planner import Plan, plan_flow, plan_reactive

__all__ = ["POLICIES", "Gates", "decide", "evaluate_gates"]

POLICIES: tuple[PolicyName, ...] = ("none", "reactive", "predictive", "oracle")


class Gates:
    """The predictive policy's gate results for one cycle."""

    __slots__ = ("failed", "feature_age_s", "station_age_s")

    def __init__(self, failed: list[str], feature_age_s: float, station_age_s: float) -> None:
        self.failed = failed
        self.feature_age_s = feature_age_s
        self.station_age_s = station_age_s

    @property
    def state(self) -> GateState:
        if "health_unhealthy" in self.failed and "features_stale" in self.failed:
            return "hold"
        return "fallback" if self.failed else "open"


def evaluate_gates(inputs: DecisionInput, params: PolicyParams) -> Gates:
    """Health, freshness, coverage and confidence, in that order; each failure is a reason."""
    failed: list[str] = []
    verdict = inputs.health.verdict
    if verdict not in params.healthy_verdicts:
        failed.append(f"health_{verdict}")
    ages = np.array([s.age_s for s in inputs.stations], dtype=np.float64)
    station_age = float(np.median(ages)) if ages.size else 0.0
    if max(inputs.health.feature_age_s, station_age) > params.max_feature_age_s:
        failed.append("features_stale")
    ids = {s.station_id for s in inputs.stations}
    covered = len(ids.intersection(p.station_id for p in inputs.predictions))
    if not ids or covered < params.min_coverage * len(ids):
        failed.append("predictions_missing")
    risk = np.array([max(p.p_empty, p.p_full) for p in inputs.predictions if p.station_id in ids])
    at_risk = risk[risk >= 0.2]
    if at_risk.size:
        low, high = params.ambiguous_band
        ambiguous = float(np.mean((at_risk > low) & (at_risk < high)))
        if ambiguous > params.max_ambiguous_share:
            failed.append("low_confidence")
    return Gates(failed, inputs.health.feature_age_s, station_age)


def decide(
    policy: PolicyName, inputs: DecisionInput, params: PolicyParams | None = None
) -> Decision:
    """Run ``policy`` on one cycle's inputs; same inputs and params ⇒ the same bytes."""
    params = params if params is not None else PolicyParams()
    try:
        run = _RUNNERS[policy]
    except KeyError:
        raise ValidationError(
            f"policy must be one of {', '.join(POLICIES)}; got {policy!r}", reason="bad_value"
        ) from None
    frame = build_frame(inputs)
    gates = evaluate_gates(inputs, params)
    reasons: list[str] = []
    plan = Plan()
    gate: GateState = "not_applicable"
    if policy == "none":
        reasons.append("policy_none")
    elif not frame.in_service():
        reasons.append("outside_service_hours")
        plan.binding.add("service_hours")
        gate = "not_applicable" if policy != "predictive" else gates.state
    else:
        plan, gate = run(frame, gates, params, reasons)
        if frame.slots == 0 and gate != "hold":
            reasons.append("no_move_slots")
            plan.binding.update(name for name, limit in frame.limits.items() if limit == 0)
        elif not plan.moves and gate != "hold":
            reasons.append("nothing_to_move")
    sha = input_hash(inputs)
    actions = sorted(
        (frame.action(t, s, d, b) for t, s, d, b in plan.moves), key=lambda a: a.truck_id
    )
    preds = inputs.predictions
    return Decision(
        decision_id=decision_id(sha, policy, params),
        policy=policy,
        cycle_time=inputs.cycle_time,
        actions=tuple(actions),
        expected_benefit=round(plan.benefit, 6),
        reasons=tuple(reasons),
        binding_constraints=tuple(sorted(plan.binding)),
        health_gate=gate,
        health_verdict=inputs.health.verdict,
        model_versions=tuple(sorted({p.model_version for p in preds})),
        bundle_ids=tuple(sorted({p.bundle_id for p in preds})),
        feature_age_s=inputs.health.feature_age_s,
        max_station_age_s=max((s.age_s for s in inputs.stations), default=0.0),
        input_hash=sha,
        params=params,
    )


_Runner = Callable[[Frame, Gates, PolicyParams, list[str]], tuple[Plan, GateState]]


def _none(
    frame: Frame, gates: Gates, params: PolicyParams, reasons: list[str]
) -> tuple[Plan, GateState]:
    return Plan(), "not_applicable"


def _reactive(
    frame: Frame, gates: Gates, params: PolicyParams, reasons: list[str]
) -> tuple[Plan, GateState]:
    reasons.append("reactive_rule")
    return plan_reactive(frame, params.target_fill), "not_applicable"


def _predictive(
    frame: Frame, gates: Gates, params: PolicyParams, reasons: list[str]
) -> tuple[Plan, GateState]:
    reasons.extend(gates.failed)
    state = gates.state
    if state == "hold":
        reasons.append("hold_unhealthy_and_stale")
        return Plan(), state
    if state == "fallback":
        reasons.append("fallback_reactive")
        return plan_reactive(frame, params.target_fill), state
    reasons.append("model_acted")
    pe = np.full(frame.n, np.nan)
    pf = np.full(frame.n, np.nan)
    net = np.zeros(frame.n)
    index = {sid: i for i, sid in enumerate(frame.ids)}
    for p in frame.inputs.predictions:
        i = index.get(p.station_id)
        if i is not None:
            pe[i], pf[i] = p.p_empty, p.p_full
            net[i] = p.expected_net if p.expected_net is not None else 0.0
    known = frame.renting & ~np.isnan(pe) & ~np.isnan(pf) & (frame.cap > 0)
    pe, pf = np.nan_to_num(pe), np.nan_to_num(pf)
    # The fill to aim for: half full an hour from now (after the expected net flow).
    target = np.clip(np.rint(params.target_fill * frame.cap - net), 1, np.maximum(frame.cap - 1, 1))
    act = params.act_threshold
    calm = params.donor_max_p_empty
    want = np.maximum(target - frame.bikes, 0) * known
    spare = np.maximum(frame.bikes - target, 0) * known
    receiver = (pe >= act) & (want > 0)
    donor_risk = (pf >= act) & (spare > 0)
    demand = np.where(receiver | ((pf <= calm) & (want > 0)), want, 0)
    supply = np.where(donor_risk | ((pe <= calm) & (spare > 0)), spare, 0)
    # Value per bike: the risk removed when the station gets (loses) all it wants (can spare).
    value_in = np.where(receiver, pe / np.maximum(want, 1), 0.0)
    value_out = np.where(donor_risk, pf / np.maximum(spare, 1), 0.0)
    plan = plan_flow(
        frame,
        supply,
        value_out,
        demand,
        value_in,
        km_cost=params.km_cost,
        max_candidates=params.max_candidates,
    )
    return plan, state


def _oracle(
    frame: Frame, gates: Gates, params: PolicyParams, reasons: list[str]
) -> tuple[Plan, GateState]:
    future = frame.inputs.future
    if future is None:
        raise ValidationError(
            "the oracle needs the simulator's future (inputs.future); got none",
            reason="missing_field",
        )
    reasons.append("oracle_foresight")
    index = {sid: i for i, sid in enumerate(frame.ids)}
    n = frame.n
    need, removable, spill, room = (np.zeros(n, dtype=np.int64) for _ in range(4))
    empty_min, full_min = np.zeros(n), np.zeros(n)
    for f in future:
        i = index.get(f.station_id)
        if i is not None:
            need[i], removable[i], spill[i], room[i] = f.need, f.removable, f.spill, f.room
            empty_min[i], full_min[i] = f.empty_minutes, f.full_minutes
    ok = frame.renting
    # The bikes-now interval that neither empties nor fills it within the horizon, and its middle
    # as the target (when the interval is empty, the middle of the two bounds).
    low = frame.bikes + need - removable
    high = frame.bikes + room - spill
    target = np.clip(np.rint((low + high) / 2.0), 0, frame.cap).astype(np.int64)
    demand = np.where(ok, np.minimum(np.maximum(target - frame.bikes, 0), frame.room), 0)
    supply = np.where(ok, np.maximum(frame.bikes - target, 0), 0)
    # Value in the predictive policy's unit (outage-hours avoided, ~ a probability) per bike.
    value_in = np.where((need > 0) & ok, empty_min / 60.0 / np.maximum(demand, 1), 0.0)
    value_out = np.where((spill > 0) & ok, full_min / 60.0 / np.maximum(supply, 1), 0.0)
    plan = plan_flow(
        frame,
        supply,
        value_out,
        demand,
        value_in,
        km_cost=params.km_cost,
        max_candidates=params.max_candidates,
    )
    return plan, "not_applicable"


_RUNNERS: dict[str, _Runner] = {
    "none": _none,
    "reactive": _reactive,
    "predictive": _predictive,
    "oracle": _oracle,
}
