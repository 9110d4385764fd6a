"""Decision cycles over HTTP, as a user deploys them: ``dockline decide run``.

Each cycle reads the city from its GBFS feed and truck API (``dockline sim serve``), predictions
from the serving API's batch endpoint (``dockline serve``: ``p_empty`` from the deployment at
``serve_url``, ``p_full`` from ``full_serve_url``, else from the serving app's companion at
``<serve_url>/models/<[decide] full_label>`` when it runs one), decides, appends the decision to
the audit log, and posts the actions to the truck API.

The health verdict: ``--health``, else the serving app's ``/ready`` (ready ⇒ ``healthy``, not
ready ⇒ ``unhealthy``). ``/ready`` answers for this instant; the monitor's windowed verdict
(``/v1/monitoring/health``) calls a deployment nobody has asked yet unhealthy (seed 003's
no-requests rule), which would hold the first cycle of every new deployment.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import msgspec

from dockline.core import tracing
from dockline.core.config import COMPANION_PREFIX, DecideConfig
from dockline.core.decisions import (
    Decision,
    DecisionInput,
    HealthInput,
    HealthVerdict,
    PolicyName,
    StationPrediction,
    StationState,
    Truck,
)
from dockline.core.errors import SourceError, ValidationError
from dockline.core.time import ensure_utc
from dockline.decide import decide
from dockline.decide.audit import DecisionLog
from dockline.pipeline.decide import constraints_from, decision_log, params_from

__all__ = ["CycleResult", "run_follow", "run_once"]

_CLOCK = "x-dockline-clock"
_BATCH = 256  # the serving app's default max_batch


@dataclass(slots=True)
class CycleResult:
    """One cycle: the decision, what the truck API did, and what was read."""

    decision: Decision
    applied: dict[str, Any] | None
    logged: int
    stations: int
    stations_rejected: int
    predictions: int

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": msgspec.to_builtins(self.decision),
            "applied": self.applied,
            "logged": self.logged,
            "stations": self.stations,
            "stations_rejected": self.stations_rejected,
            "predictions": self.predictions,
        }


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise SourceError(f"cannot reach {url}: {exc}", reason="unreachable") from exc
    if response.status_code != 200:
        raise SourceError(f"{url} answered {response.status_code}", reason="bad_status")
    return response


def read_city(client: httpx.Client, sim_url: str) -> tuple[datetime, list[StationState], int]:
    """(sim time, station states, records rejected) from the sim's GBFS v2.3 feed."""
    info = _get(client, f"{sim_url}/v2/station_information.json").json()["data"]["stations"]
    status_response = _get(client, f"{sim_url}/v2/station_status.json")
    now = ensure_utc(datetime.fromisoformat(status_response.headers[_CLOCK]))
    where = {str(s["station_id"]): s for s in info}
    states: dict[str, StationState] = {}
    rejected = 0
    for s in status_response.json()["data"]["stations"]:
        try:
            sid = str(s["station_id"])
            place = where[sid]
            bikes, docks = int(s["num_bikes_available"]), int(s["num_docks_available"])
            reported = float(s["last_reported"])
            if reported > 1e11:  # milliseconds
                reported /= 1000.0
            if bikes < 0 or docks < 0 or sid in states:
                raise ValueError("negative count or duplicate")
            as_of = datetime.fromtimestamp(reported, tz=now.tzinfo)
            states[sid] = StationState(
                sid,
                bikes=bikes,
                docks=docks,
                capacity=int(place.get("capacity") or bikes + docks),
                lat=float(place["lat"]),
                lon=float(place["lon"]),
                as_of=as_of,
                age_s=max(0.0, (now - as_of).total_seconds()),
                renting=bool(s.get("is_renting", True)),
            )
        except (KeyError, TypeError, ValueError):
            rejected += 1  # a faulty record (the feed injects them): counted, never acted on
    return now, [states[k] for k in sorted(states)], rejected


def read_fleet(client: httpx.Client, sim_url: str) -> list[Truck]:
    """The trucks from the sim's truck API."""
    body = _get(client, f"{sim_url}/v1/trucks").content
    return msgspec.json.decode(body, type=dict[str, list[Truck]])["trucks"]


def read_predictions(
    client: httpx.Client, url: str, stations: list[str], *, optional: bool = False
) -> tuple[dict[str, tuple[float, str, str]], list[float]]:
    """``{station: (probability, model version, bundle id)}`` and the feature ages seen.

    ``optional``: a deployment that is not there (404) or has no model (503) gives nothing.
    """
    out: dict[str, tuple[float, str, str]] = {}
    ages: list[float] = []
    for lo in range(0, len(stations), _BATCH):
        chunk = stations[lo : lo + _BATCH]
        try:
            response = client.post(
                f"{url}/v1/predict/batch", json={"entities": chunk}, headers=tracing.inject({})
            )
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach {url}: {exc}", reason="unreachable") from exc
        if optional and response.status_code in (404, 503):
            return {}, []
        if response.status_code != 200:
            raise SourceError(
                f"{url}/v1/predict/batch answered {response.status_code}: {response.text[:200]}",
                reason="bad_status",
            )
        for item in response.json()["predictions"]:
            if item.get("status") == "error" or item.get("probability") is None:
                continue  # unknown or unscorable station: the coverage gate counts it
            model = item.get("model") or {}
            out[item["entity"]] = (
                float(item["probability"]),
                str(model.get("version", "?")),
                str(model.get("bundle_id", "?")),
            )
            if item.get("age_s") is not None:
                ages.append(float(item["age_s"]))
    return out, ages


def run_once(
    data_dir: str | Path | None,
    cfg: DecideConfig,
    *,
    policy: PolicyName | None = None,
    serve_url: str | None = None,
    full_serve_url: str | None = None,
    sim_url: str | None = None,
    health: HealthVerdict | None = None,
    dry_run: bool = False,
    client: httpx.Client | None = None,
) -> CycleResult:
    """One decision cycle over HTTP; returns the decision and the truck API's answer."""
    chosen: PolicyName = policy or cfg.policy
    if chosen == "oracle":
        raise ValidationError(
            "the oracle needs the simulator's future; it runs only in `decide evaluate`",
            reason="bad_value",
        )
    with tracing.span("decide.cycle", {"policy": policy or cfg.policy}):
        return _run_once(
            data_dir, cfg, chosen, serve_url, full_serve_url, sim_url, health, dry_run, client
        )


def _run_once(
    data_dir: str | Path | None,
    cfg: DecideConfig,
    chosen: PolicyName,
    serve_url: str | None,
    full_serve_url: str | None,
    sim_url: str | None,
    health: HealthVerdict | None,
    dry_run: bool,
    client: httpx.Client | None,
) -> CycleResult:
    sim = (sim_url or cfg.sim_url).rstrip("/")
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    try:
        now, states, rejected = read_city(http, sim)
        fleet = read_fleet(http, sim)
        ids = [s.station_id for s in states]
        empty: dict[str, tuple[float, str, str]] = {}
        full: dict[str, tuple[float, str, str]] = {}
        ages: list[float] = []
        if serve_url:
            empty, ages = read_predictions(http, serve_url.rstrip("/"), ids)
        if full_serve_url:
            full, more = read_predictions(http, full_serve_url.rstrip("/"), ids)
            ages += more
        elif serve_url:  # the serving app's companion deployment, if it runs one
            companion = f"{serve_url.rstrip('/')}{COMPANION_PREFIX}{cfg.full_label}"
            full, more = read_predictions(http, companion, ids, optional=True)
            ages += more
        verdict: HealthVerdict = health or _ready(http, serve_url)
        log = decision_log(data_dir)
        inputs = DecisionInput(
            cycle_time=now,
            stations=tuple(states),
            predictions=_join(empty, full),
            # the deployment's feature age is the median station's, as the policy judges station
            # ages: one station the feed stopped confirming must not gate the model for all
            health=HealthInput(verdict, feature_age_s=statistics.median(ages) if ages else 0.0),
            fleet=tuple(fleet),
            constraints=constraints_from(cfg, _moves_today(log, now, cfg.tz)),
        )
        decision = decide(chosen, inputs, params_from(cfg))
        logged = log.append([decision])
        applied = None
        if decision.actions and not dry_run:
            body = {"actions": msgspec.to_builtins(decision.actions)}
            try:
                response = http.post(f"{sim}/v1/actions", json=body, headers=tracing.inject({}))
            except httpx.HTTPError as exc:
                raise SourceError(f"cannot reach {sim}: {exc}", reason="unreachable") from exc
            if response.status_code != 200:
                raise SourceError(
                    f"{sim}/v1/actions answered {response.status_code}: {response.text[:200]}",
                    reason="bad_status",
                )
            applied = response.json()
    finally:
        if own:
            http.close()
    return CycleResult(decision, applied, logged, len(states), rejected, len(inputs.predictions))


def run_follow(
    data_dir: str | Path | None,
    cfg: DecideConfig,
    *,
    cycles: int | None = None,
    on_cycle: Any = None,
    **kw: Any,
) -> int:
    """Run a cycle every ``cfg.cycle`` of *simulated* time (polling the sim's clock)."""
    sim = (kw.get("sim_url") or cfg.sim_url).rstrip("/")
    done = 0
    with httpx.Client(timeout=10.0) as http:
        while cycles is None or done < cycles:
            result = run_once(data_dir, cfg, client=http, **kw)
            done += 1
            if on_cycle is not None:
                on_cycle(result)
            due = result.decision.cycle_time + cfg.cycle
            while cycles is None or done < cycles:
                clock = _get(http, f"{sim}/v1/trucks").headers[_CLOCK]
                if ensure_utc(datetime.fromisoformat(clock)) >= due:
                    break
                time.sleep(0.2)
    return done


def _ready(client: httpx.Client, serve_url: str | None) -> HealthVerdict:
    if not serve_url:
        return "healthy"  # nothing served: the coverage gate, not health, stops the model
    try:
        ok = client.get(f"{serve_url.rstrip('/')}/ready").status_code == 200
    except httpx.HTTPError:
        ok = False
    return "healthy" if ok else "unhealthy"


def _join(
    empty: dict[str, tuple[float, str, str]], full: dict[str, tuple[float, str, str]]
) -> tuple[StationPrediction, ...]:
    """Predictions for stations with a ``p_empty``; ``p_full`` is 0 where no full model runs,
    and the model version says so (``full:none``)."""
    out = []
    for sid in sorted(empty):
        pe, ve, be = empty[sid]
        pf, vf, bf = full.get(sid, (0.0, "none", "none"))
        out.append(
            StationPrediction(
                station_id=sid,
                p_empty=min(1.0, max(0.0, pe)),
                p_full=min(1.0, max(0.0, pf)),
                model_version=f"empty:{ve}/full:{vf}",
                bundle_id=be if bf == "none" else f"{be}+{bf}",
            )
        )
    return tuple(out)


def _moves_today(log: DecisionLog, now: datetime, tz: str) -> int:
    """Moves already decided today (local day) and logged: the day budget's state."""
    zone = ZoneInfo(tz)
    start = datetime.combine(now.astimezone(zone).date(), datetime.min.time(), zone)
    return sum(len(d.actions) for d in log.read(since=start, until=now))
