"""The retraining loop, with its safety: triggers → train → gate → challenger → shadow → canary →
promote, or roll back automatically.

:func:`run_cycle` advances the loop as far as the clock allows and returns a :class:`CycleReport`.
Its state is resumable: ``<data-dir>/monitoring/loop.json`` holds the phase, the challenger,
the next analysis window and every window analysed so far, so a cycle run by cron, by
``dockline monitor run --follow`` or after a crash picks up where the last one stopped (windows
missed while nothing ran are analysed on the next run, in order).

* **idle**: the triggers (:mod:`dockline.monitor.triggers`) are evaluated; when one fires, the
  trainer builds a training set over the freshest labelled data and runs ``dockline train``
  (which gates and registers it: a passing version becomes ``challenger``). A ``challenger``
  registered outside the loop is adopted too.
* **shadow** then **canary**: each analysis window of the prediction log is judged by
  :func:`dockline.monitor.canary.analyze_window` (challenger against the champion of the same
  window) and :func:`~dockline.monitor.canary.decide` says what follows. Serving's routing is
  moved through its admin API (:class:`HttpServingControl`).
* Every step — shadow, canary, pause, resume, promotion, rollback — is appended to the alias
  history (``stage``, ``promote``, ``rollback``, ``demote`` events) with its reason and, as
  ``evidence``, the analyses and triggers it was decided on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from dockline.core.contracts import DatasetMetadata
from dockline.core.errors import StorageError
from dockline.core.time import ensure_utc
from dockline.monitor.canary import Phase, WindowAnalysis, analyze_window, decide
from dockline.monitor.triggers import TriggerDecision, evaluate_triggers
from dockline.pipeline.lineage import record_alias_move
from dockline.pipeline.loop_evidence import champion_on, signals, window_sides
from dockline.pipeline.platform import Platform

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CycleReport",
    "HttpServingControl",
    "LoopState",
    "ServingControl",
    "TrainResult",
    "Trainer",
    "control_for",
    "fresh_data_trainer",
    "fresh_dataset",
    "load_state",
    "retrain_triggers",
    "run_cycle",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
ACTOR = "dockline monitor"
STATE_FILE = "loop.json"


class ServingControl(Protocol):
    """What the loop asks of serving: route, and re-resolve the aliases now."""

    def set_routing(self, mode: str, canary_share: float | None = None) -> None: ...

    def reload(self) -> None: ...


class HttpServingControl:
    """:class:`ServingControl` over the serving app's admin API (bearer token)."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        import httpx

        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.post(self.url + path, json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise StorageError(f"serving unreachable: {exc}", where=self.url + path) from exc
        if r.status_code != 200:
            try:
                reason = str(r.json().get("reason"))
            except ValueError:
                reason = r.text[:80]
            raise StorageError(
                f"serving answered {r.status_code} ({reason})",
                reason="serving_refused",
                where=self.url + path,
            )

    def set_routing(self, mode: str, canary_share: float | None = None) -> None:
        """POST /v1/admin/routing."""
        body: dict[str, Any] = {"mode": mode}
        if canary_share is not None:
            body["canary_share"] = canary_share
        self._post("/v1/admin/routing", body)

    def reload(self) -> None:
        """POST /v1/admin/reload."""
        self._post("/v1/admin/reload")


def control_for(platform: Platform, url: str | None = None) -> HttpServingControl:
    """The admin API of the serving app at ``url`` (default ``monitor.loop.serve_url``), with
    the token serving itself would use (``$DOCKLINE_ADMIN_TOKEN``, else ``serve.admin_token``)."""
    from dockline.serve.app import admin_token_from

    token = admin_token_from(None, platform.config.serve.admin_token)
    return HttpServingControl(url or platform.config.monitor.loop.serve_url, token)


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a training run gave the loop: the version, and whether it is now the challenger."""

    version: int | None
    alias: str | None
    gate_passed: bool
    reasons: list[str] = field(default_factory=list)


Trainer = Callable[[Platform, datetime], TrainResult]
"""Train on fresh data at a time: the default builds a training set and runs ``train``."""


def fresh_dataset(platform: Platform, at: datetime, *, prefix: str = "loop") -> DatasetMetadata:
    """Build the loop's training set at ``at``: every ``monitor.loop.train_every`` over
    ``[at − horizon − train_window, at − horizon)`` (every row's label known at ``at``), in
    ``datasets/<prefix>-<at>``."""
    from dockline.pipeline.features import build_dataset, load_plan

    config = platform.config
    plan = load_plan(platform)
    horizon_us = max((label.horizon_us for label in plan.labels), default=3_600_000_000)
    horizon = timedelta(microseconds=horizon_us)
    end = at - horizon
    start = end - config.monitor.loop.train_window
    return build_dataset(
        platform,
        label=config.train.label,
        start=start,
        end=end,
        every=config.monitor.loop.train_every,
        out=platform.data.datasets / f"{prefix}-{at:%Y%m%dT%H%M%S}",
    )


def fresh_data_trainer(platform: Platform, at: datetime) -> TrainResult:
    """Build :func:`fresh_dataset` at ``at`` and run ``dockline train`` on it (tune, gate,
    register)."""
    from dockline.pipeline.train import train_model

    dataset = fresh_dataset(platform, at)
    summary = train_model(platform, dataset=Path(dataset.path), actor=ACTOR)
    return TrainResult(summary.version, summary.alias, summary.gate.passed, summary.gate.reasons)


def retrain_triggers(
    platform: Platform,
    *,
    at: datetime | None = None,
    last_trained: datetime | None = None,
) -> TriggerDecision:
    """The retraining triggers (drift, live performance under the gate's bar, stale model,
    schedule) of the served model at ``at`` (default the platform's clock), as the loop's idle
    phase evaluates them; ``last_trained`` feeds the schedule trigger."""
    now = ensure_utc(at) if at is not None else platform.clock.now()
    return evaluate_triggers(
        signals(platform, _model_name(platform), now, last_trained), platform.config.monitor.loop
    )


@dataclass
class LoopState:
    """The loop's resumable state (``monitoring/loop.json``)."""

    phase: str = "idle"  # idle | shadow | canary
    model_name: str = ""
    challenger: int | None = None
    champion: int | None = None
    next_window: datetime | None = None
    canary_started: datetime | None = None
    paused: bool = False
    analyses: list[dict[str, Any]] = field(default_factory=list)
    last_trained: datetime | None = None
    last_outcome: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "phase": self.phase,
            "model_name": self.model_name,
            "challenger": self.challenger,
            "champion": self.champion,
            "next_window": None if self.next_window is None else self.next_window.isoformat(),
            "canary_started": None
            if self.canary_started is None
            else self.canary_started.isoformat(),
            "paused": self.paused,
            "analyses": self.analyses,
            "last_trained": None if self.last_trained is None else self.last_trained.isoformat(),
            "last_outcome": self.last_outcome,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoopState:
        """From :meth:`to_dict`'s output."""

        def when(value: Any) -> datetime | None:
            return None if value is None else ensure_utc(datetime.fromisoformat(value))

        return cls(
            phase=str(raw.get("phase", "idle")),
            model_name=str(raw.get("model_name", "")),
            challenger=raw.get("challenger"),
            champion=raw.get("champion"),
            next_window=when(raw.get("next_window")),
            canary_started=when(raw.get("canary_started")),
            paused=bool(raw.get("paused", False)),
            analyses=list(raw.get("analyses", [])),
            last_trained=when(raw.get("last_trained")),
            last_outcome=raw.get("last_outcome"),
        )


def _state_path(platform: Platform) -> Path:
    return platform.data.monitoring / STATE_FILE


def load_state(platform: Platform) -> LoopState:
    """The saved state, or a fresh idle one."""
    path = _state_path(platform)
    if not path.exists():
        return LoopState()
    try:
        return LoopState.from_dict(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise StorageError(f"unreadable loop state: {exc}", where=str(path)) from exc


def _save_state(platform: Platform, state: LoopState) -> None:
    path = _state_path(platform)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(state.to_dict(), option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)  # a crash leaves the old state or the new, never half of one


@dataclass
class CycleReport:
    """What one cycle saw and did."""

    at: datetime
    phase_before: str
    phase: str
    model_name: str
    triggers: TriggerDecision | None = None
    analyses: list[WindowAnalysis] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    state: LoopState | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "at": self.at.isoformat(),
            "model_name": self.model_name,
            "phase_before": self.phase_before,
            "phase": self.phase,
            "triggers": None if self.triggers is None else self.triggers.to_dict(),
            "analyses": [a.to_dict() for a in self.analyses],
            "actions": self.actions,
            "challenger": None if self.state is None else self.state.challenger,
            "paused": False if self.state is None else self.state.paused,
        }


# ---------------------------------------------------------------------------------- analysis


def _analyze(platform: Platform, state: LoopState, start: datetime, at: datetime) -> WindowAnalysis:
    config = platform.config.monitor.canary
    end = start + config.analysis_window
    phase: Phase = "shadow" if state.phase == "shadow" else "canary"
    assert state.challenger is not None
    champion, challenger, entities = window_sides(
        platform, start, end, state.champion, state.challenger, phase, at
    )
    reference = None
    if phase == "canary" and state.canary_started is not None:
        # the champion's own predictions for the canary's entities, from just before the split
        began = state.canary_started
        reference = champion_on(
            platform, entities, began - 2 * config.analysis_window, began, state.champion
        )
    return analyze_window(
        champion,
        challenger,
        config,
        start=start,
        end=end,
        phase=phase,
        shift_reference=reference,
    )


# ------------------------------------------------------------------------------------- steps


def _model_name(platform: Platform) -> str:
    from dockline.pipeline.serve import model_name

    return model_name(platform)


def _settle(platform: Platform) -> timedelta:
    # the prediction log reaches disk one flush interval late: a window is judged after that
    return 2 * platform.config.serve.prediction_flush_interval


def run_cycle(
    platform: Platform,
    control: ServingControl,
    *,
    trainer: Trainer | None = None,
    at: datetime | None = None,
    force_train: bool = False,
    train: bool = True,
) -> CycleReport:
    """Advance the loop at ``at`` (default the platform's clock) and save its state.

    With ``train=False`` the idle phase evaluates and reports the triggers but never trains:
    training is someone else's (an orchestrator's training job), and the challenger it
    registers is adopted on the next cycle."""
    from dockline.pipeline.train import open_registry

    now = ensure_utc(at) if at is not None else platform.clock.now()
    name = _model_name(platform)
    registry = open_registry(platform)
    state = load_state(platform)
    if state.model_name and state.model_name != name:
        state = LoopState()  # another model is served now: its loop starts afresh
    state.model_name = name
    report = CycleReport(at=now, phase_before=state.phase, phase=state.phase, model_name=name)
    config = platform.config.monitor.canary

    def record(action: str, reason: str, **extra: Any) -> None:
        report.actions.append({"action": action, "reason": reason, **extra})

    def stage(what: str, reason: str, evidence: dict[str, Any]) -> None:
        moved = registry.set_alias(
            name,
            CHALLENGER,
            state.challenger,
            actor=ACTOR,
            reason=f"{what}: {reason}",
            action="stage",
            evidence=evidence,
        )
        record_alias_move(platform, moved)
        record(what, reason, version=state.challenger)

    if state.phase == "idle":
        champion = registry.peek(name, CHAMPION)
        challenger = registry.peek(name, CHALLENGER)
        evidence: dict[str, Any] = {}
        started = None
        if challenger is not None and (champion is None or challenger.version != champion.version):
            started = f"challenger v{challenger.version} registered outside the loop"
        else:
            report.triggers = retrain_triggers(platform, at=now, last_trained=state.last_trained)
            evidence["triggers"] = report.triggers.to_dict()
            cooldown = platform.config.monitor.loop.retrain_cooldown
            cooling = state.last_trained is not None and now - state.last_trained < cooldown
            if report.triggers.retrain and cooling and not force_train:
                record(
                    "cooldown",
                    f"{'; '.join(report.triggers.reasons)}; not retraining: the loop trained at"
                    f" {state.last_trained:%F %T}Z, within retrain_cooldown {cooldown}",
                )
            elif champion is not None and train and (report.triggers.retrain or force_train):
                reasons = report.triggers.reasons or ["forced (--train)"]
                record("train", "; ".join(reasons))
                result = (trainer or fresh_data_trainer)(platform, now)
                state.last_trained = now
                evidence["training"] = {
                    "version": result.version,
                    "gate_passed": result.gate_passed,
                    "gate_reasons": result.reasons,
                }
                if result.alias == CHALLENGER and result.version is not None:
                    challenger = registry.peek(name, CHALLENGER)
                    started = f"trained on fresh data ({'; '.join(reasons)})"
                else:
                    record(
                        "gate_failed" if not result.gate_passed else "not_challenger",
                        "; ".join(result.reasons) or f"version {result.version} is {result.alias}",
                        version=result.version,
                    )
        if started is not None and challenger is not None and champion is not None:
            state.challenger, state.champion = challenger.version, champion.version
            state.analyses, state.paused = [], False
            state.next_window = now
            control.reload()
            if config.shadow_windows > 0:
                state.phase = "shadow"
                control.set_routing("shadow")
                stage("shadow", started, evidence)
            else:
                state.phase, state.canary_started = "canary", now
                control.set_routing("canary", config.canary_share)
                stage("canary", started, evidence)

    settle = _settle(platform)
    while (
        state.phase in ("shadow", "canary")
        and state.next_window is not None
        and state.next_window + config.analysis_window + settle <= now
    ):
        analysis = _analyze(platform, state, state.next_window, now)
        report.analyses.append(analysis)
        state.analyses.append(analysis.to_dict())
        state.next_window += config.analysis_window
        decision = decide(_restore(state.analyses), config, phase=analysis.phase)
        evidence = {"decision": decision.to_dict(), "analyses": state.analyses}
        if decision.action == "rollback":
            control.set_routing("champion")
            moved = registry.set_alias(
                name,
                CHALLENGER,
                None,
                actor=ACTOR,
                reason=f"automatic rollback of v{state.challenger}: {decision.reason}",
                action="rollback",
                evidence=evidence,
            )
            record_alias_move(platform, moved)
            control.reload()
            record("rollback", decision.reason, version=state.challenger)
            _finish(state, "rolled_back", decision.reason, now)
        elif decision.action == "promote":
            version = state.challenger
            assert version is not None
            promoted = registry.promote(
                name,
                version,
                actor=ACTOR,
                reason=f"canary passed: {decision.reason}",
                evidence=evidence,
            )
            record_alias_move(platform, promoted)
            demoted = registry.set_alias(
                name,
                CHALLENGER,
                None,
                actor=ACTOR,
                reason=f"v{version} promoted to champion",
                action="demote",
            )
            record_alias_move(platform, demoted)
            control.set_routing("champion")
            control.reload()
            record("promote", decision.reason, version=version)
            _finish(state, "promoted", decision.reason, now)
        elif decision.action == "advance":
            state.phase, state.canary_started = "canary", state.next_window
            control.set_routing("canary", config.canary_share)
            stage("canary", decision.reason, evidence)
        elif decision.action == "pause":
            if not state.paused:
                state.paused = True
                stage("pause", decision.reason, evidence)
        elif state.paused and analysis.verdict != "inconclusive":
            state.paused = False
            stage("resume", f"traffic back: {analysis.reason}", evidence)
    report.phase = state.phase
    report.state = state
    _save_state(platform, state)
    return report


def _finish(state: LoopState, outcome: str, reason: str, at: datetime) -> None:
    state.last_outcome = {
        "outcome": outcome,
        "version": state.challenger,
        "reason": reason,
        "at": at.isoformat(),
        "windows": len(state.analyses),
    }
    state.phase, state.challenger, state.next_window, state.paused = "idle", None, None, False
    state.canary_started = None


def _restore(raw: list[dict[str, Any]]) -> list[WindowAnalysis]:
    """Saved analyses back as objects, enough for :func:`decide` (verdicts, phases, reasons)."""
    return [
        WindowAnalysis(
            start=datetime.fromisoformat(a["start"]),
            end=datetime.fromisoformat(a["end"]),
            phase=a["phase"],
            verdict=a["verdict"],
            champion_requests=int(a["champion_requests"]),
            challenger_requests=int(a["challenger_requests"]),
            metrics=[],
            reason=str(a["reason"]),
        )
        for a in raw
    ]
