"""Jobs, schedules and the retraining sensor.

The sensor evaluates the loop's own retraining triggers (:func:`dockline.pipeline.loop.
retrain_triggers`: drift, live performance under the gate's bar, stale model, schedule) and
requests ``training_job`` when one fires — not while the loop is judging a challenger, and not
within ``monitor.loop.retrain_cooldown`` of its last request (its cursor) or of the loop's last
training, so a trigger that stays fired (a stale model whose retrain was rolled back) does not
retrain every tick.
"""

# No `from __future__ import annotations`: Dagster resolves the config and resource
# parameters' annotations as objects when the definitions load.
from datetime import datetime

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    sensor,
)

from dockline.core.errors import DocklineError
from dockline.core.time import ensure_utc
from dockline.orchestration.assets import DATA, LOOP, MONITORING, TRAINING
from dockline.orchestration.resources import DocklineResource

__all__ = [
    "ingest_job",
    "ingest_schedule",
    "loop_job",
    "loop_schedule",
    "monitoring_job",
    "monitoring_schedule",
    "retraining_sensor",
    "training_job",
    "training_schedule",
]

ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.groups(DATA),
    description="Sink the event log into the offline store and refresh the online vectors.",
)
training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.groups(TRAINING),
    description="Build a training set over the freshest labelled data; train, gate, register.",
)
monitoring_job = define_asset_job(
    "monitoring_job",
    selection=AssetSelection.groups(MONITORING),
    description="Deployment health, freshness, drift and live performance.",
)
loop_job = define_asset_job(
    "loop_job",
    selection=AssetSelection.groups(LOOP),
    description="One cycle of the retraining loop: shadow, canary, promote or roll back.",
)

# Schedules start stopped (turn them on in the UI or with `dagster schedule start`): a data
# dir that is only being explored should not be retrained behind its owner's back.
ingest_schedule = ScheduleDefinition(
    name="ingest_every_15_minutes",
    job=ingest_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
)
monitoring_schedule = ScheduleDefinition(
    name="monitoring_hourly",
    job=monitoring_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
)
training_schedule = ScheduleDefinition(
    name="training_daily",
    job=training_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
)
# the canary's analysis window is 5 min by default: a cycle per window judges each in time
loop_schedule = ScheduleDefinition(
    name="loop_every_5_minutes",
    job=loop_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
)


def _parse_cursor(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    try:
        return ensure_utc(datetime.fromisoformat(cursor))
    except ValueError:
        return None  # a cursor from another version: start afresh rather than never retrain


@sensor(
    job=training_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description="Requests training_job when a retraining trigger fires (drift, live"
    " performance under the gate's bar, stale model, schedule).",
)
def retraining_sensor(
    context: SensorEvaluationContext, dockline: DocklineResource
) -> RunRequest | SkipReason:
    """A run of ``training_job`` when a trigger fires, else why not."""
    from dockline.pipeline.loop import load_state, retrain_triggers

    try:
        platform = dockline.platform()
        state = load_state(platform)
    except DocklineError as exc:
        return SkipReason(f"cannot evaluate the triggers: {exc}")
    if state.phase != "idle":
        return SkipReason(
            f"the loop is in {state.phase} with challenger v{state.challenger}; retraining"
            " waits for its outcome"
        )
    now = dockline.moment() or platform.clock.now()
    requested = _parse_cursor(context.cursor)
    known = [t for t in (state.last_trained, requested) if t is not None]
    last = max(known) if known else None
    try:
        decision = retrain_triggers(platform, at=now, last_trained=last)
    except DocklineError as exc:
        return SkipReason(f"cannot evaluate the triggers: {exc}")
    if not decision.retrain:
        return SkipReason("no trigger fired: " + "; ".join(t.reason for t in decision.triggers))
    cooldown = platform.config.monitor.loop.retrain_cooldown
    if last is not None and now - last < cooldown:
        return SkipReason(
            f"{'; '.join(decision.reasons)}; not retraining: trained or requested at"
            f" {last:%F %T}Z, within retrain_cooldown {cooldown}"
        )
    context.update_cursor(now.isoformat())
    fired = [t.name for t in decision.triggers if t.fired]
    return RunRequest(
        run_key=f"retrain-{now:%Y%m%dT%H%M%S}",
        tags={"dockline/triggers": ",".join(fired), "dockline/at": now.isoformat()},
    )
