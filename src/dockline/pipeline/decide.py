"""Decisions, wired: the simulated city as the policies' environment, and scoring.

:func:`evaluate` replays simulated days for each policy on the same cities (common random
numbers: the city's random stream does not depend on the trucks), trucks executing the actions
with travel time, and reports the KPIs per policy (mean and 95 % interval over seeds).

The predictive policy's forecasts come from one of :data:`FORECASTERS`: by default
:func:`sim_predictions`, the simulator's own expected demand over the next hour turned into
``p_empty`` / ``p_full`` by a Poisson (Skellam) model (labelled ``poisson-rates``); with
``model``, the data dir's registered champions scoring features computed from the simulated
city by the deployed code (:mod:`dockline.pipeline.decide_model`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from dockline.core.config import DataDir, DecideConfig, resolve_data_dir
from dockline.core.decisions import (
    Constraints,
    Decision,
    DecisionInput,
    FutureOutlook,
    HealthInput,
    PolicyName,
    PolicyParams,
    StationPrediction,
    StationState,
)
from dockline.core.errors import ConfigError
from dockline.decide import POISSON_MODEL_VERSION, POLICIES, decide, poisson_risk
from dockline.decide.audit import DecisionLog
from dockline.decide.report import render_report, save_report, write_plots
from dockline.decide.scoring import COST_PER_MINUTE, OUTAGE_HOURS, OutageCounter, summarize
from dockline.sim.calibrate import CalibratedCity
from dockline.sim.city import City, CityConfig
from dockline.sim.fleet import ActionRequest, Fleet, future_outlook

if TYPE_CHECKING:
    from dockline.pipeline.decide_model import ModelForecaster, ModelSource

__all__ = [
    "FORECASTERS",
    "EvalConfig",
    "EvalResult",
    "city_inputs",
    "constraints_from",
    "decision_log",
    "eval_config_from",
    "evaluate",
    "params_from",
    "run_policy",
    "sim_predictions",
    "write_report",
]

METRICS = (
    "empty_minutes",
    "full_minutes",
    "empty_full_minutes",
    "outage_minutes",
    "outage_cost_usd",
    "failed_rentals",
    "diverted_returns",
    "truck_km",
    "moves",
    "bikes_moved",
)


FORECASTERS = ("sim-rates", "zone-rates", "model")
"""``sim-rates``: each station's true rates and the current weather; ``zone-rates``: only its
zone's mean rates by hour of week in fair weather (what an hour-of-week baseline knows);
``model``: the data dir's registered champions on features computed from the simulated city."""
RATE_FORECASTERS = ("sim-rates", "zone-rates")


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """One evaluation: the cities (stations, days, seeds), the fleet and budget, the cycle."""

    stations: int = 300
    days: float = 7.0
    seed: int = 0
    seeds: int = 5
    trucks: int = 8
    truck_capacity: int = 20
    moves_per_day: int = 192
    cycle_minutes: int = 15
    horizon_minutes: int = 60
    forecaster: str = "sim-rates"
    expected_net: bool = True
    """Rate forecasters: give the planner the expected net flow (off: risks only, as the
    trained classifiers give it)."""
    start: datetime = CityConfig().start
    params: PolicyParams = field(default_factory=PolicyParams)

    def __post_init__(self) -> None:
        if self.days <= 0 or self.seeds < 1 or self.trucks < 0 or self.cycle_minutes < 1:
            raise ConfigError(
                "days must be > 0, seeds >= 1, trucks >= 0 and cycle_minutes >= 1; got "
                f"{self.days}, {self.seeds}, {self.trucks}, {self.cycle_minutes}"
            )
        if self.forecaster not in FORECASTERS:
            raise ConfigError(
                f"forecaster must be one of {', '.join(FORECASTERS)}; got {self.forecaster!r}"
            )
        if (self.forecaster == "model") != (self.models is not None):
            raise ConfigError(
                "the model forecaster needs the champions to score with (models), and only it"
            )

    calibrated: CalibratedCity | None = field(default=None, compare=False)
    """A city fitted to real data (``decide evaluate --city``); its station count replaces
    ``stations``, its per-station rates the zone model."""

    models: ModelSource | None = field(default=None, compare=False)
    """The champions and plan of the ``model`` forecaster (:meth:`ModelSource.from_platform`)."""

    base: Constraints = field(default_factory=Constraints)
    """Speed, handling time and service hours (the ``[decide]`` section's); the fields above
    override its budget."""

    @property
    def constraints(self) -> Constraints:
        return msgspec.structs.replace(
            self.base,
            moves_per_cycle=self.trucks,
            moves_per_day=self.moves_per_day,
            truck_capacity=self.truck_capacity,
            max_eta_min=float(self.horizon_minutes),
        )


@dataclass(slots=True)
class EvalResult:
    """Per policy: each seed's KPIs, their summary, and the mean per-minute outage curve."""

    config: EvalConfig
    per_seed: dict[str, list[dict[str, float]]]
    curves: dict[str, np.ndarray]  # policy -> mean (empty + full stations) per minute
    hours: np.ndarray  # hours since the start, for the curves
    seconds: float

    def summary(self) -> dict[str, dict[str, float]]:
        """``{policy: {metric: mean, metric_low: …, metric_high: …}}`` plus the goal ratios."""
        out: dict[str, dict[str, float]] = {}
        for policy, rows in self.per_seed.items():
            entry: dict[str, float] = {}
            for name in METRICS:
                s = summarize([r[name] for r in rows])
                entry[name] = s["mean"]
                entry[f"{name}_low"] = s["low"]
                entry[f"{name}_high"] = s["high"]
            out[policy] = entry
        base = {p: [r["empty_full_minutes"] for r in rows] for p, rows in self.per_seed.items()}
        for policy in out:
            for ref in ("none", "reactive"):
                if ref in base and policy != ref:
                    cut = [
                        1 - a / b if b else 0.0
                        for a, b in zip(base[policy], base[ref], strict=True)
                    ]
                    s = summarize(cut)
                    out[policy][f"reduction_vs_{ref}"] = s["mean"]
                    out[policy][f"reduction_vs_{ref}_low"] = s["low"]
                    out[policy][f"reduction_vs_{ref}_high"] = s["high"]
            if {"none", "oracle"} <= base.keys() and policy != "none":
                share = [
                    (n - p) / (n - o) if n != o else 0.0
                    for p, n, o in zip(base[policy], base["none"], base["oracle"], strict=True)
                ]
                s = summarize(share)
                out[policy]["share_of_oracle_gain"] = s["mean"]
                out[policy]["share_of_oracle_gain_low"] = s["low"]
                out[policy]["share_of_oracle_gain_high"] = s["high"]
        return out

    @property
    def forecaster_label(self) -> str:
        """What the predictive policy's forecasts came from, as its decisions record it."""
        c = self.config
        if c.models is not None:
            return f"model:{c.models.version}:{c.models.bundle_id}"
        return f"{POISSON_MODEL_VERSION}:{c.forecaster}{'' if c.expected_net else ':no-net'}"

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "policies": self.summary(),
            "config": {
                "stations": c.stations if c.calibrated is None else c.calibrated.n,
                "city": "generated"
                if c.calibrated is None
                else f"calibrated: {c.calibrated.source}",
                "days": c.days,
                "seeds": list(range(c.seed, c.seed + c.seeds)),
                "trucks": c.trucks,
                "truck_capacity": c.truck_capacity,
                "moves_per_day": c.moves_per_day,
                "cycle_minutes": c.cycle_minutes,
                "horizon_minutes": c.horizon_minutes,
                "forecaster": self.forecaster_label,
            },
            "per_seed": self.per_seed,
            "seconds": round(self.seconds, 1),
        }


def sim_predictions(
    city: City, horizon_minutes: int, forecaster: str = "sim-rates", *, expected_net: bool = True
) -> tuple[StationPrediction, ...]:
    """The ``poisson-rates`` forecaster: expected departures and arrivals over the horizon →
    ``p_empty`` / ``p_full`` (Skellam) and, with ``expected_net``, the expected net flow."""
    if forecaster not in RATE_FORECASTERS:
        raise ConfigError(
            f"forecaster must be one of {', '.join(RATE_FORECASTERS)}; got {forecaster!r}"
        )
    if forecaster == "sim-rates":
        dep, arr = city.expected_flows(horizon_minutes)
    else:
        dep, arr = city.expected_flows(horizon_minutes, weather=False)
        counts = np.maximum(np.bincount(city.zone, minlength=3), 1)
        dep = (np.bincount(city.zone, weights=dep, minlength=3) / counts)[city.zone]
        arr = (np.bincount(city.zone, weights=arr, minlength=3) / counts)[city.zone]
    pe, pf = poisson_risk(city.bikes, city.docks_available, dep, arr)
    net = arr - dep
    version = f"{POISSON_MODEL_VERSION}:{forecaster}{'' if expected_net else ':no-net'}"
    return tuple(
        StationPrediction(
            station_id=sid,
            p_empty=round(float(pe[i]), 6),
            p_full=round(float(pf[i]), 6),
            model_version=version,
            bundle_id="none",
            expected_net=round(float(net[i]), 4) if expected_net else None,
        )
        for i, sid in enumerate(city.station_ids)
    )


def city_inputs(
    city: City,
    fleet: Fleet,
    constraints: Constraints,
    *,
    predictions: tuple[StationPrediction, ...] = (),
    health: HealthInput | None = None,
    future: dict[str, np.ndarray] | None = None,
) -> DecisionInput:
    """The decision contract for the city's current state."""
    now = city.time
    states = tuple(
        StationState(
            sid,
            bikes=int(city.bikes[i]),
            docks=int(city.docks_available[i]),
            capacity=int(city.capacity[i]),
            lat=float(city.lat[i]),
            lon=float(city.lon[i]),
            as_of=now,
            renting=bool(city.is_renting[i]),
        )
        for i, sid in enumerate(city.station_ids)
    )
    outlook = None
    if future is not None:
        outlook = tuple(
            FutureOutlook(
                station_id=sid,
                need=int(future["need"][i]),
                removable=int(future["removable"][i]),
                spill=int(future["spill"][i]),
                room=int(future["room"][i]),
                empty_minutes=int(future["empty_minutes"][i]),
                full_minutes=int(future["full_minutes"][i]),
            )
            for i, sid in enumerate(city.station_ids)
        )
    return DecisionInput(
        cycle_time=now,
        stations=states,
        predictions=predictions,
        health=health or HealthInput("healthy"),
        fleet=tuple(fleet.snapshot()),
        constraints=constraints,
        future=outlook,
    )


def run_policy(
    policy: PolicyName,
    seed: int,
    config: EvalConfig,
    *,
    on_decision: Callable[[Decision], None] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Simulate ``config.days`` of one city under ``policy``: (KPIs, empty+full per minute)."""
    city = City(
        CityConfig(
            stations=config.stations,
            seed=seed,
            start=config.start,
            common_random_numbers=True,
            calibrated=config.calibrated,
        )
    )
    base = config.constraints
    fleet = Fleet(
        city,
        trucks=config.trucks,
        capacity=config.truck_capacity,
        speed_kmh=base.speed_kmh,
        handling_min=base.handling_min,
    )
    total = round(config.days * 1440)
    tz = ZoneInfo(base.tz)
    window = _local_hours_in(config.start, total, tz, OUTAGE_HOURS)
    days = _local_days(config.start, total, tz)
    outages = OutageCounter(city.n)
    curve = np.zeros(total, dtype=np.int32)
    used_today, today = 0, days[0]
    with ExitStack() as stack:
        model = None
        if policy == "predictive" and config.models is not None:
            from dockline.pipeline.decide_model import ModelForecaster  # features, ONNX: on demand

            model = stack.enter_context(ModelForecaster(config.models, city))
        for minute in range(total):
            if days[minute] != today:
                used_today, today = 0, days[minute]
            if model is not None:
                model.observe()
            if policy != "none" and minute % config.cycle_minutes == 0:
                used_today += _cycle(policy, city, fleet, config, used_today, model, on_decision)
            city.step()
            empty = city.bikes == 0
            full = city.bikes + city.docks_disabled >= city.capacity
            curve[minute] = np.count_nonzero(empty) + np.count_nonzero(full)
            outages.update(empty, full, in_window=bool(window[minute]))
    m = city.metrics
    kpis = {
        "empty_minutes": float(m.empty_station_minutes),
        "full_minutes": float(m.full_station_minutes),
        "empty_full_minutes": float(m.empty_station_minutes + m.full_station_minutes),
        "outage_minutes": float(outages.outage_minutes),
        "outage_cost_usd": outages.outage_minutes * COST_PER_MINUTE,
        "failed_rentals": float(m.failed_rentals),
        "diverted_returns": float(m.diverted_returns),
        "truck_km": round(m.truck_km, 3),
        "moves": float(m.moves),
        "bikes_moved": float(m.bikes_moved),
    }
    return kpis, curve


def _cycle(
    policy: PolicyName,
    city: City,
    fleet: Fleet,
    config: EvalConfig,
    used_today: int,
    model: ModelForecaster | None,
    on_decision: Callable[[Decision], None] | None,
) -> int:
    """One decision cycle on the city: decide, send the actions to the trucks; moves accepted."""
    constraints = msgspec.structs.replace(config.constraints, moves_used_today=used_today)
    predictions: tuple[StationPrediction, ...] = ()
    if policy == "predictive":
        predictions = (
            model.predictions()
            if model is not None
            else sim_predictions(
                city, config.horizon_minutes, config.forecaster, expected_net=config.expected_net
            )
        )
    future = future_outlook(city, config.horizon_minutes) if policy == "oracle" else None
    inputs = city_inputs(city, fleet, constraints, predictions=predictions, future=future)
    decision = decide(policy, inputs, config.params)
    if on_decision is not None:
        on_decision(decision)
    results = fleet.apply(
        ActionRequest(a.truck_id, a.from_station, a.to_station, a.bikes) for a in decision.actions
    )
    return sum(r.status == "accepted" for r in results)


def evaluate(
    config: EvalConfig,
    policies: Sequence[PolicyName] = POLICIES,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Every policy on every seed (the same cities for all policies)."""
    began = time.monotonic()
    per_seed: dict[str, list[dict[str, float]]] = {p: [] for p in policies}
    curves: dict[str, list[np.ndarray]] = {p: [] for p in policies}
    runs = [(s, p) for s in range(config.seed, config.seed + config.seeds) for p in policies]
    for done, (seed, policy) in enumerate(runs, 1):
        kpis, curve = run_policy(policy, seed, config)
        per_seed[policy].append(kpis)
        curves[policy].append(curve)
        if progress is not None:
            progress(done, len(runs))
    total = len(next(iter(curves.values()))[0]) if policies else 0
    return EvalResult(
        config=config,
        per_seed=per_seed,
        curves={p: np.mean(np.stack(c), axis=0) for p, c in curves.items()},
        hours=np.arange(total) / 60.0,
        seconds=time.monotonic() - began,
    )


def _local_hours_in(
    start: datetime, total: int, tz: ZoneInfo, hours: tuple[int, int]
) -> np.ndarray:
    """Per minute from ``start``: whether its local hour is in ``[hours[0], hours[1])``."""
    local = np.array(
        [(start + timedelta(hours=h)).astimezone(tz).hour for h in range(total // 60 + 2)]
    )
    minute_hour = local[(np.arange(total) + start.minute) // 60]
    out: np.ndarray = (minute_hour >= hours[0]) & (minute_hour < hours[1])
    return out


def _local_days(start: datetime, total: int, tz: ZoneInfo) -> np.ndarray:
    days = np.array(
        [(start + timedelta(hours=h)).astimezone(tz).toordinal() for h in range(total // 60 + 2)]
    )
    out: np.ndarray = days[(np.arange(total) + start.minute) // 60]
    return out


# -- configuration and files -------------------------------------------------------------------


def params_from(cfg: DecideConfig) -> PolicyParams:
    """The policy parameters of the ``[decide]`` section."""
    return PolicyParams(
        healthy_verdicts=cfg.healthy_verdicts,
        max_feature_age_s=cfg.max_feature_age.total_seconds(),
        act_threshold=cfg.act_threshold,
        max_ambiguous_share=cfg.max_ambiguous_share,
        min_coverage=cfg.min_coverage,
        target_fill=cfg.target_fill,
        km_cost=cfg.km_cost,
    )


def constraints_from(cfg: DecideConfig, moves_used_today: int = 0) -> Constraints:
    """The operator's constraints of the ``[decide]`` section."""
    return Constraints(
        moves_per_cycle=cfg.moves_per_cycle,
        moves_per_day=cfg.moves_per_day,
        moves_used_today=moves_used_today,
        truck_capacity=cfg.truck_capacity,
        speed_kmh=cfg.truck_speed_kmh,
        handling_min=cfg.handling_minutes,
        service_start_hour=cfg.service_start_hour,
        service_end_hour=cfg.service_end_hour,
        tz=cfg.tz,
        max_eta_min=cfg.horizon.total_seconds() / 60.0,
    )


def eval_config_from(cfg: DecideConfig, **overrides: Any) -> EvalConfig:
    """An evaluation at the ``[decide]`` section's budget, with command-line ``overrides``."""
    base: dict[str, Any] = {
        "trucks": cfg.trucks,
        "truck_capacity": cfg.truck_capacity,
        "moves_per_day": cfg.moves_per_day,
        "cycle_minutes": max(1, round(cfg.cycle.total_seconds() / 60)),
        "horizon_minutes": max(1, round(cfg.horizon.total_seconds() / 60)),
        "params": params_from(cfg),
        "base": constraints_from(cfg),
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return EvalConfig(**base)


def decision_log(data_dir: str | Path | None) -> DecisionLog:
    """The audit log of the data directory (``<data-dir>/decisions``)."""
    return DecisionLog(DataDir(resolve_data_dir(data_dir)).root / "decisions")


def write_report(result: EvalResult, path: Path, command: str) -> Path:
    """The HTML report (tables, intervals, plots) of an evaluation."""
    summary = result.summary()
    plots = write_plots(summary, result.curves, result.hours)
    return save_report(path, render_report(summary, result.to_json()["config"], plots, command))
