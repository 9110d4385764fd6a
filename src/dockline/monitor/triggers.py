"""Retraining triggers: should the loop train a new challenger now, and why.

Pure: the caller gathers the signals (the dataset-level drift verdict, live performance with its
label count, the champion's training-data age, the last training time) and :func:`evaluate_triggers`
returns a :class:`TriggerDecision` naming every trigger that fired with its evidence. A signal
nobody could measure (no predictions yet, no labels) is listed as ``not measured``, never
counted as fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dockline.core.config import MonitorLoopConfig

__all__ = ["Signals", "Trigger", "TriggerDecision", "evaluate_triggers"]


@dataclass(frozen=True, slots=True)
class Signals:
    """What the triggers are judged on; None where it could not be measured."""

    at: datetime
    drift: bool | None = None
    drifted_features: tuple[str, ...] = ()
    live_pr_auc: float | None = None
    labelled: int = 0
    reference_pr_auc: float | None = None
    """The champion's test-split PR-AUC (the gate's bar)."""
    training_data_end: datetime | None = None
    last_trained: datetime | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """One trigger: fired or not, or not measured, and why."""

    name: str
    fired: bool
    measured: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "name": self.name,
            "fired": self.fired,
            "measured": self.measured,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class TriggerDecision:
    """Whether to retrain, and every trigger's state."""

    retrain: bool
    triggers: list[Trigger] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """The reasons of the triggers that fired."""
        return [t.reason for t in self.triggers if t.fired]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"retrain": self.retrain, "triggers": [t.to_dict() for t in self.triggers]}


def _drift(s: Signals) -> Trigger:
    if s.drift is None:
        return Trigger(
            "drift", False, False, "drift not measured (no champion predictions in the window)"
        )
    if s.drift:
        names = ", ".join(s.drifted_features[:5]) or "the dataset"
        return Trigger("drift", True, True, f"dataset-level drift ({names})")
    return Trigger("drift", False, True, "no dataset-level drift")


def _performance(s: Signals, config: MonitorLoopConfig) -> Trigger:
    if s.live_pr_auc is None or s.reference_pr_auc is None or s.labelled < config.min_labels:
        return Trigger(
            "performance",
            False,
            False,
            f"live performance not measured ({s.labelled} labelled < min {config.min_labels})",
        )
    bar = s.reference_pr_auc - config.performance_margin
    if s.live_pr_auc < bar:
        return Trigger(
            "performance",
            True,
            True,
            f"live pr_auc {s.live_pr_auc:.4f} < the gate's bar {bar:.4f}"
            f" on {s.labelled} labelled predictions",
        )
    return Trigger("performance", False, True, f"live pr_auc {s.live_pr_auc:.4f} >= bar {bar:.4f}")


def _stale(s: Signals, config: MonitorLoopConfig) -> Trigger:
    if s.training_data_end is None:
        return Trigger("stale_model", False, False, "no champion (nothing to age)")
    age = s.at - s.training_data_end
    if age > config.stale_model:
        return Trigger(
            "stale_model",
            True,
            True,
            f"champion's training data is {_human(age)} old > {_human(config.stale_model)}",
        )
    return Trigger("stale_model", False, True, f"champion's training data is {_human(age)} old")


def _schedule(s: Signals, config: MonitorLoopConfig) -> Trigger:
    if config.schedule is None:
        return Trigger("schedule", False, False, "no schedule set")
    if s.last_trained is None:
        return Trigger("schedule", True, True, "scheduled: never trained by the loop")
    since = s.at - s.last_trained
    if since >= config.schedule:
        return Trigger(
            "schedule",
            True,
            True,
            f"scheduled: last trained {_human(since)} ago >= every {_human(config.schedule)}",
        )
    return Trigger("schedule", False, True, f"last trained {_human(since)} ago")


def evaluate_triggers(signals: Signals, config: MonitorLoopConfig) -> TriggerDecision:
    """Every trigger (drift, performance, stale model, schedule) over ``signals``."""
    triggers = [
        _drift(signals),
        _performance(signals, config),
        _stale(signals, config),
        _schedule(signals, config),
    ]
    return TriggerDecision(any(t.fired for t in triggers), triggers)


def _human(span: timedelta) -> str:
    seconds = span.total_seconds()
    if abs(seconds) >= 86400:
        return f"{seconds / 86400:.1f} d"
    if abs(seconds) >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
