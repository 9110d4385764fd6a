"""The decision contract shared by ``decide`` (policies), ``sim`` (trucks) and ``serve``.

A policy is a pure function ``DecisionInput -> Decision``. Both sides are msgspec structs with a
``schema_version``; :func:`encode` gives deterministic JSON bytes (sorted keys, RFC 3339 times),
so the same inputs and policy give the same :class:`Decision`, byte for byte, and the decision id
is a hash of exactly those bytes.

Travel time lives here too (:func:`travel_km`, :func:`travel_minutes`): the planner that
promises an ETA and the simulated truck that keeps it must use the same formula.

>>> from datetime import UTC, datetime
>>> t = datetime(2024, 5, 6, 14, tzinfo=UTC)
>>> s = StationState("a", bikes=0, docks=10, capacity=10, lat=41.88, lon=-87.63, as_of=t)
>>> inputs = DecisionInput(cycle_time=t, stations=(s,), health=HealthInput("healthy"))
>>> decode_input(encode(inputs)) == inputs
True
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, overload

import msgspec
import numpy as np

from dockline.core.errors import ContractError

__all__ = [
    "DECISION_SCHEMA_VERSION",
    "HEALTH_VERDICTS",
    "Action",
    "Constraints",
    "Decision",
    "DecisionInput",
    "FutureOutlook",
    "GateState",
    "HealthInput",
    "HealthVerdict",
    "PolicyName",
    "PolicyParams",
    "StationPrediction",
    "StationState",
    "Truck",
    "decision_id",
    "decode_decision",
    "decode_input",
    "encode",
    "input_hash",
    "travel_km",
    "travel_minutes",
]

DECISION_SCHEMA_VERSION = 1

HealthVerdict = Literal["healthy", "degraded", "unhealthy"]
HEALTH_VERDICTS: tuple[HealthVerdict, ...] = ("healthy", "degraded", "unhealthy")
PolicyName = Literal["none", "reactive", "predictive", "oracle"]
GateState = Literal["open", "fallback", "hold", "not_applicable"]
"""``open``: the model was acted on; ``fallback``: a gate failed, the reactive rule acted;
``hold``: unhealthy and stale, nothing moved; ``not_applicable``: the policy uses no model."""

_KM_PER_DEG_LAT = 110.57
DETOUR = 1.25  # street distance / straight-line distance (the simulator's figure)


Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class StationPrediction(_Struct, frozen=True, kw_only=True):
    """Calibrated risks for one station over the next hour, and where they came from.

    ``expected_net`` (optional) is the expected change in bikes over the horizon (arrivals minus
    departures), from a regression model or a rate forecaster; the planner sizes moves with it.
    """

    station_id: str
    p_empty: Probability
    p_full: Probability
    model_version: str
    bundle_id: str
    expected_net: float | None = None


class StationState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a station reported last: counts, position, and when (``age_s`` at the cycle time)."""

    station_id: str
    bikes: NonNegative
    docks: NonNegative
    capacity: NonNegative
    lat: float
    lon: float
    as_of: datetime
    age_s: float = 0.0
    renting: bool = True


class HealthInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The deployment's health verdict (P6) and the age of the features it served with."""

    verdict: HealthVerdict
    feature_age_s: float = 0.0
    deployment_id: str = "local"


class FutureOutlook(_Struct, frozen=True, kw_only=True):
    """Perfect foresight for one station over the horizon (the oracle's input, from the sim).

    ``need``: bikes to add now so it never empties; ``removable``: bikes that can leave now
    without emptying it; ``spill``: bikes to remove so it never fills; ``room``: bikes that can
    arrive now without filling it; ``empty_minutes`` / ``full_minutes``: what it suffers if
    nothing moves.
    """

    station_id: str
    need: int
    removable: int
    spill: int
    room: int
    empty_minutes: int
    full_minutes: int


class Truck(_Struct, frozen=True, kw_only=True):
    """A truck: where it is, what it carries, and when it is free (``None``: free now)."""

    truck_id: str
    lat: float
    lon: float
    load: NonNegative = 0
    capacity: NonNegative = 20
    busy_until: datetime | None = None


class Constraints(_Struct, frozen=True, kw_only=True):
    """The operator's limits for one cycle. ``moves_used_today`` carries the day budget's state."""

    moves_per_cycle: int = 3
    moves_per_day: int = 60
    moves_used_today: int = 0
    truck_capacity: int = 20
    speed_kmh: float = 20.0
    handling_min: float = 5.0
    service_start_hour: int = 6
    service_end_hour: int = 22
    tz: str = "America/Chicago"
    max_eta_min: float = 60.0
    """Moves whose delivery is further away than this (the prediction horizon) are not planned."""


class PolicyParams(_Struct, frozen=True, kw_only=True):
    """The gates and planner settings; part of the decision id (same inputs, other params ⇒
    another decision)."""

    healthy_verdicts: tuple[HealthVerdict, ...] = ("healthy",)
    max_feature_age_s: float = 600.0
    act_threshold: float = 0.5
    """A station is a model-driven receiver (donor) when ``p_empty`` (``p_full``) reaches this."""
    ambiguous_band: tuple[float, float] = (0.35, 0.65)
    max_ambiguous_share: float = 0.5
    """Confidence gate: among stations at risk (max p >= 0.2), the share of predictions inside
    ``ambiguous_band`` must not exceed this."""
    min_coverage: float = 0.9
    """Predictions must cover this share of the stations."""
    donor_max_p_empty: float = 0.2
    target_fill: float = 0.5
    km_cost: float = 0.05
    """Planner cost per truck-km, in the benefit's unit (expected outage-events avoided)."""
    max_candidates: int = 30


class DecisionInput(_Struct, frozen=True, kw_only=True):
    """Everything a policy may read for one cycle."""

    schema_version: int = DECISION_SCHEMA_VERSION
    cycle_time: datetime
    stations: tuple[StationState, ...]
    predictions: tuple[StationPrediction, ...] = ()
    health: HealthInput
    fleet: tuple[Truck, ...] = ()
    constraints: Constraints = Constraints()
    future: tuple[FutureOutlook, ...] | None = None
    """Oracle only: what the simulator's future holds for each station if nothing moves."""


class Action(_Struct, frozen=True, kw_only=True):
    """One truck move: pick ``bikes`` at ``from_station``, deliver at ``to_station`` by ``eta``."""

    truck_id: str
    from_station: str
    to_station: str
    bikes: int
    pickup_at: datetime
    eta: datetime
    km: float


class Decision(_Struct, frozen=True, kw_only=True):
    """One cycle's decision: the audit record."""

    schema_version: int = DECISION_SCHEMA_VERSION
    decision_id: str
    policy: PolicyName
    cycle_time: datetime
    actions: tuple[Action, ...]
    expected_benefit: float
    reasons: tuple[str, ...]
    binding_constraints: tuple[str, ...]
    health_gate: GateState
    health_verdict: HealthVerdict
    model_versions: tuple[str, ...]
    bundle_ids: tuple[str, ...]
    feature_age_s: float
    max_station_age_s: float
    input_hash: str
    params: PolicyParams


_ENCODER = msgspec.json.Encoder(order="sorted")
T = TypeVar("T")


def encode(value: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys) of a contract value."""
    return _ENCODER.encode(value)


def _decode(data: bytes | str, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise ContractError(f"{kind.__name__}: {exc}", reason="contract_violation") from exc
    except msgspec.DecodeError as exc:
        raise ContractError(f"{kind.__name__}: not JSON: {exc}", reason="bad_json") from exc


def decode_input(data: bytes | str) -> DecisionInput:
    """Validate and decode a :class:`DecisionInput` (``ContractError`` when it breaks)."""
    value = _decode(data, DecisionInput)
    if value.schema_version != DECISION_SCHEMA_VERSION:
        raise ContractError(
            f"schema_version must be {DECISION_SCHEMA_VERSION}; got {value.schema_version}",
            reason="schema_version",
        )
    return value


def decode_decision(data: bytes | str) -> Decision:
    """Validate and decode a :class:`Decision`."""
    return _decode(data, Decision)


def input_hash(inputs: DecisionInput) -> str:
    """SHA-256 of the input's deterministic JSON."""
    return hashlib.sha256(encode(inputs)).hexdigest()


def decision_id(inputs_sha: str, policy: str, params: PolicyParams) -> str:
    """Deterministic id: a hash of the inputs, the policy and its parameters (32 hex)."""
    h = hashlib.sha256()
    h.update(inputs_sha.encode())
    h.update(b"\0" + policy.encode() + b"\0")
    h.update(encode(params))
    return h.hexdigest()[:32]


def travel_km(
    lat1: Any, lon1: Any, lat2: Any, lon2: Any, detour: float = DETOUR
) -> Any:  # float or ndarray, like NumPy
    """Street km between points (equirectangular × ``detour``); vectorized over arrays."""
    mid = np.radians((np.asarray(lat1) + np.asarray(lat2)) / 2.0)
    dy = (np.asarray(lat2) - np.asarray(lat1)) * _KM_PER_DEG_LAT
    dx = (np.asarray(lon2) - np.asarray(lon1)) * 111.32 * np.cos(mid)
    out = np.hypot(dx, dy) * detour
    return float(out) if np.ndim(out) == 0 else out


@overload
def travel_minutes(km: float, speed_kmh: float, handling_min: float) -> float: ...
@overload
def travel_minutes(km: np.ndarray, speed_kmh: float, handling_min: float) -> np.ndarray: ...
def travel_minutes(km: Any, speed_kmh: float, handling_min: float) -> Any:
    """Minutes to drive ``km`` (a float or an array) and handle the bikes at the stop."""
    return km / speed_kmh * 60.0 + handling_min
