"""The retraining sensor over real data dirs: a RunRequest when a trigger fires, else a
SkipReason that says why (no trigger, cooldown, a canary under way, no data dir)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster
import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from dockline.orchestration import DocklineResource
from dockline.orchestration.automation import retraining_sensor
from dockline.pipeline.loop import LoopState

AT = "2024-05-10T05:00:00+00:00"


def _data_dir(root: Path, toml: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "dockline.toml").write_text(toml, encoding="utf-8")
    return root


def _evaluate(
    data_dir: Path, cursor: str | None = None, at: str = AT
) -> tuple[RunRequest | SkipReason, str | None]:
    context = build_sensor_context(
        instance=DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"dockline": DocklineResource(data_dir=str(data_dir), at=at)},
    )
    result = retraining_sensor(context)
    assert isinstance(result, RunRequest | SkipReason)
    return result, context.cursor


def test_no_trigger_fired_is_a_skip_that_names_every_trigger(tmp_path: Path) -> None:
    data = _data_dir(tmp_path / "data")
    result, cursor = _evaluate(data)
    assert isinstance(result, SkipReason)
    assert result.skip_message is not None
    assert result.skip_message.startswith("no trigger fired: ")
    assert "no schedule set" in result.skip_message
    assert "no champion" in result.skip_message
    assert cursor is None
    # evaluating created nothing: no MLflow database in a data dir that had no registry
    assert sorted(p.name for p in data.iterdir()) == ["dockline.toml"]


def test_a_due_schedule_requests_the_training_job_then_cools_down(tmp_path: Path) -> None:
    data = _data_dir(
        tmp_path / "data", '[monitor.loop]\nschedule = "1h"\nretrain_cooldown = "6h"\n'
    )
    first, cursor = _evaluate(data)
    assert isinstance(first, RunRequest)
    assert first.run_key == "retrain-20240510T050000"
    assert first.tags["dockline/triggers"] == "schedule"
    assert cursor == AT
    # the request counts as the last training for the schedule (the run may not be done yet)
    soon, _ = _evaluate(data, cursor, at="2024-05-10T05:30:00+00:00")
    assert isinstance(soon, SkipReason)
    assert soon.skip_message is not None
    assert soon.skip_message.endswith("last trained 30 min ago")
    # two hours on the schedule is due again, but within the cooldown: no second run
    again, kept = _evaluate(data, cursor, at="2024-05-10T07:00:00+00:00")
    assert isinstance(again, SkipReason)
    assert again.skip_message == (
        "scheduled: last trained 2.0 h ago >= every 1.0 h; not retraining: trained or"
        " requested at 2024-05-10 05:00:00Z, within retrain_cooldown 6:00:00"
    )
    assert kept == AT
    # past the cooldown it fires again, and the cursor moves
    later, moved = _evaluate(data, cursor, at="2024-05-10T11:00:00+00:00")
    assert isinstance(later, RunRequest)
    assert later.run_key == "retrain-20240510T110000"
    assert moved == "2024-05-10T11:00:00+00:00"


def test_a_canary_under_way_holds_retraining(tmp_path: Path) -> None:
    data = _data_dir(tmp_path / "data", '[monitor.loop]\nschedule = "1h"\n')
    state = LoopState(phase="canary", model_name="bikeshare-empty_next_hour", challenger=2)
    (data / "monitoring").mkdir()
    (data / "monitoring" / "loop.json").write_text(json.dumps(state.to_dict()), encoding="utf-8")
    result, _ = _evaluate(data)
    assert isinstance(result, SkipReason)
    assert result.skip_message == (
        "the loop is in canary with challenger v2; retraining waits for its outcome"
    )


def test_a_missing_data_dir_is_a_skip_not_a_crash(tmp_path: Path) -> None:
    result, _ = _evaluate(tmp_path / "nowhere")
    assert isinstance(result, SkipReason)
    assert result.skip_message is not None
    assert result.skip_message.startswith("cannot evaluate the triggers: ")
    assert "nowhere: no such data dir" in result.skip_message


def test_the_sensor_targets_the_training_job() -> None:
    assert retraining_sensor.job_name == "training_job"
    assert isinstance(retraining_sensor, dagster.SensorDefinition)


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01"])
def test_a_bad_at_is_a_skip_with_the_reason(tmp_path: Path, bad: str) -> None:
    result, _ = _evaluate(_data_dir(tmp_path / "data"), at=bad)
    assert isinstance(result, SkipReason)
    assert result.skip_message is not None
    assert "DocklineResource.at must be an ISO-8601 time" in result.skip_message
