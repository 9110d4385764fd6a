"""``POST /v1/decide`` on the serving app: one cycle's decision for the stations given.

The serving app (``dockline.serve``) may not import ``dockline.decide``, so the route is added
here, in the wiring, to an app :func:`dockline.serve.create_app` built: it scores the stations
with the app's own predictor (the batch path: one online-store read and one ONNX run per chunk)
and, for ``p_full``, the companion ``full_next_hour`` deployment's, and runs the policy on them.

>>> app = create_serving_app(platform)            # doctest: +SKIP
>>> add_decide_route(app, DecideConfig())         # doctest: +SKIP

Request body: ``{"stations": [StationState…], "fleet": [Truck…], "constraints": {…}?,
"health": {…}?, "policy": "predictive"?, "cycle_time": "…"?}``; the answer is the
:class:`~dockline.core.decisions.Decision`'s JSON. Until P6 serves a verdict, ``health`` defaults
to ``healthy`` with the served vectors' oldest age as the feature age.
"""

from __future__ import annotations

from datetime import datetime
from time import perf_counter
from typing import Any, Literal

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import ClientDisconnect

from dockline.core.config import DecideConfig
from dockline.core.decisions import (
    Constraints,
    DecisionInput,
    HealthInput,
    StationPrediction,
    StationState,
    Truck,
    encode,
)
from dockline.core.errors import DocklineError
from dockline.core.time import ensure_utc, from_micros
from dockline.decide import decide
from dockline.pipeline.decide import constraints_from, params_from
from dockline.serve import REASON_STATUS, ServeError, read_body

__all__ = ["DECIDE_PATH", "MAX_DECIDE_BODY", "DecideRequest", "add_decide_route"]

DECIDE_PATH = "/v1/decide"
MAX_DECIDE_BODY = 4 * 1024 * 1024
"""Bodies past this are refused (413) while they stream in: ~10,000 stations with a fleet."""
# The serving app's 503 reasons (serve._errors.REASON_STATUS): the service, not the request, failed.
_UNAVAILABLE = frozenset(
    {"stale_features", "no_model", "store_unavailable", "not_ready", "registry_unavailable"}
)


class DecideRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /v1/decide``."""

    stations: list[StationState]
    fleet: list[Truck] = []
    constraints: Constraints | None = None
    health: HealthInput | None = None
    policy: Literal["none", "reactive", "predictive"] | None = None
    cycle_time: datetime | None = None


def _error(status: int, reason: str, message: str, field: str | None = None) -> Response:
    body = msgspec.json.encode({"reason": reason, "message": message, "field": field})
    return Response(body, status_code=status, media_type="application/json")


def add_decide_route(app: FastAPI, cfg: DecideConfig, *, full: Any = None) -> None:
    """Add ``POST /v1/decide`` to a serving app: ``p_empty`` from its own predictor
    (``app.state.predictor``), ``p_full`` from ``full``, the companion ``full_next_hour``
    deployment's predictor (None, or no champion there: ``p_full`` is 0, ``full:none``)."""
    predictor: Any = app.state.predictor
    params = params_from(cfg)
    metrics = _DecideMetrics(app.state.telemetry.registry)
    body_timeout_s: float = app.state.body_timeout_s  # serve.request_timeout, as elsewhere

    @app.post(DECIDE_PATH, summary="One cycle's rebalancing decision for the stations given")
    async def decide_route(request: Request) -> Response:
        t0 = perf_counter()
        try:
            raw = await read_body(request, MAX_DECIDE_BODY, body_timeout_s)
        except ServeError as exc:  # too large, or too slow: before any decoding
            return metrics.error(REASON_STATUS[exc.reason], exc.reason, exc.message, "body")
        except ClientDisconnect:
            return metrics.error(400, "client_disconnected", "the client left mid-body")
        try:
            req = msgspec.json.decode(raw, type=DecideRequest)
        except msgspec.ValidationError as exc:
            return metrics.error(422, "invalid_request", str(exc))
        except msgspec.DecodeError as exc:
            return metrics.error(422, "invalid_json", str(exc))
        if not req.stations:
            return metrics.error(422, "invalid_value", "stations must not be empty", "stations")
        now_us = predictor.now_us()
        ids = [s.station_id for s in req.stations]
        preds: list[StationPrediction] = []
        ages: list[float] = []
        try:
            p_full = _full_scores(full, ids, now_us, t0)
            for item in _scored(predictor, ids, now_us, t0):
                pf, version = p_full.get(item.entity, (0.0, "none"))
                preds.append(
                    StationPrediction(
                        station_id=item.entity,
                        p_empty=min(1.0, max(0.0, float(item.probability))),
                        p_full=pf,
                        model_version=f"empty:{item.model.version}/full:{version}",
                        bundle_id=item.model.bundle_id,
                    )
                )
                if item.age_s is not None:
                    ages.append(float(item.age_s))
            cycle = ensure_utc(req.cycle_time) if req.cycle_time else from_micros(now_us)
            inputs = DecisionInput(
                cycle_time=cycle,
                stations=tuple(req.stations),
                predictions=tuple(sorted(preds, key=lambda p: p.station_id)),
                health=req.health or HealthInput("healthy", feature_age_s=max(ages, default=0.0)),
                fleet=tuple(req.fleet),
                constraints=req.constraints or constraints_from(cfg),
            )
            decision = decide(req.policy or _live(cfg.policy), inputs, params)
        except DocklineError as exc:
            status = 503 if exc.reason in _UNAVAILABLE else 422
            return metrics.error(status, exc.reason, exc.message, exc.where)
        metrics.decided(decision, perf_counter() - t0)
        return Response(encode(decision), media_type="application/json")


class _DecideMetrics:
    """``POST /v1/decide`` on the serving app's ``/metrics``: decisions by policy and gate, the
    moves and bikes they plan, refusals by reason, latency (no per-station labels)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "dockline_decisions",
            "Decisions answered by POST /v1/decide, by policy and health gate.",
            ["policy", "health_gate"],
            registry=registry,
        )
        self.moves = Counter(
            "dockline_decision_moves",
            "Truck moves planned by POST /v1/decide.",
            ["policy"],
            registry=registry,
        )
        self.bikes = Counter(
            "dockline_decision_bikes",
            "Bikes planned to move by POST /v1/decide.",
            ["policy"],
            registry=registry,
        )
        self.errors = Counter(
            "dockline_decide_errors",
            "POST /v1/decide requests refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.seconds = Histogram(
            "dockline_decide_duration_seconds",
            "POST /v1/decide latency, scoring and planning included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

    def decided(self, decision: Any, seconds: float) -> None:
        self.decisions.labels(decision.policy, str(decision.health_gate)).inc()
        self.moves.labels(decision.policy).inc(len(decision.actions))
        self.bikes.labels(decision.policy).inc(sum(a.bikes for a in decision.actions))
        self.seconds.observe(seconds)

    def error(self, status: int, reason: str, message: str, field: str | None = None) -> Response:
        self.errors.labels(reason).inc()
        return _error(status, reason, message, field)


def _scored(predictor: Any, ids: list[str], now_us: int, t0: float) -> list[Any]:
    """The batch path's scored items for ``ids`` (unknown or unscorable stations are left to
    the coverage gate, which counts them)."""
    out: list[Any] = []
    for lo in range(0, len(ids), predictor.max_batch):
        chunk = ids[lo : lo + predictor.max_batch]
        batch = predictor.predict_batch(chunk, predictor.ids.next(), now_us, t0)
        out.extend(
            item
            for item in batch.predictions
            if item.status != "error" and item.probability is not None and item.model is not None
        )
    return out


def _full_scores(full: Any, ids: list[str], now_us: int, t0: float) -> dict[str, tuple[float, str]]:
    """``{station: (p_full, model version)}`` from the companion; none where it has no model
    (the decision then says ``full:none`` rather than failing the cycle)."""
    if full is None:
        return {}
    try:
        items = _scored(full, ids, now_us, t0)
    except DocklineError as exc:
        if exc.reason in _UNAVAILABLE:
            return {}
        raise
    return {
        item.entity: (min(1.0, max(0.0, float(item.probability))), str(item.model.version))
        for item in items
    }


def _live(policy: str) -> Literal["none", "reactive", "predictive"]:
    """The configured policy, the oracle excepted (it needs the simulator's future)."""
    if policy == "none":
        return "none"
    return "reactive" if policy == "reactive" else "predictive"
