"""``dockline monitor run`` through typer's CliRunner, on a real MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
import typer
from loop_helpers import bundle, verdict
from typer.testing import CliRunner

from dockline.cli._loop import monitor_run
from dockline.cli._monitor import _monitor
from dockline.core.config import DataDir
from dockline.train.registry import MlflowRegistry

root = typer.Typer()


@root.callback()
def _root(data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None) -> None:
    """The root app's --data-dir."""


monitor = typer.Typer()
monitor.callback()(_monitor)
monitor.command("run")(monitor_run)  # what the integrator does on the real monitor group
root.add_typer(monitor, name="monitor")
runner = CliRunner()


def _data_dir(tmp_path: Path) -> tuple[Path, MlflowRegistry]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dockline.toml").write_text(
        '[serve]\nmodel_name = "m"\n[monitor.loop]\nserve_url = "http://127.0.0.1:9"\n'
    )
    registry = MlflowRegistry.for_data_dir(DataDir(data))
    champion = bundle(tmp_path / "a", ["f0", "f1"], "1" * 64, constant=None)
    registry.register("m", champion.path, run_id=None, gate=verdict())
    registry.set_alias("m", "champion", 1, actor="t", reason="seed", action="promote")
    return data, registry


@pytest.mark.slow
def test_a_quiet_cycle_reports_every_trigger(tmp_path: Path) -> None:
    data, _ = _data_dir(tmp_path)
    # the bundle was tested up to 2024-04-30: five days later it is not stale yet
    result = runner.invoke(
        root, ["--data-dir", str(data), "monitor", "run", "--once", "--json", "--at", "2024-05-05"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["phase"] == "idle" and report["actions"] == []
    triggers = {t["name"]: t for t in report["triggers"]["triggers"]}
    assert set(triggers) == {"drift", "performance", "stale_model", "schedule"}
    assert not report["triggers"]["retrain"]
    assert triggers["stale_model"]["measured"] and not triggers["stale_model"]["fired"]
    assert not triggers["drift"]["measured"]  # nothing logged: not measured, not fired
    assert (data / "monitoring" / "loop.json").exists()
    text = runner.invoke(root, ["--data-dir", str(data), "monitor", "run", "--at", "2024-05-05"])
    assert text.exit_code == 0 and "trigger stale_model: ok" in text.output


@pytest.mark.slow
def test_unreachable_serving_is_one_clear_error_and_nothing_moves(tmp_path: Path) -> None:
    data, registry = _data_dir(tmp_path)
    other = bundle(tmp_path / "b", ["f0", "f1"], "1" * 64, constant=0.5)
    registry.register("m", other.path, run_id=None, gate=verdict())
    registry.set_alias("m", "challenger", 2, actor="t", reason="gate", action="register")
    before = len(registry.history("m"))
    result = runner.invoke(root, ["--data-dir", str(data), "monitor", "run", "--once"])
    assert result.exit_code != 0
    assert "serving unreachable" in str(result.exception)
    assert len(registry.history("m")) == before  # no stage recorded for a step not taken
    assert not (data / "monitoring" / "loop.json").exists()


def test_once_and_follow_exclude_each_other(tmp_path: Path) -> None:
    result = runner.invoke(
        root, ["--data-dir", str(tmp_path), "monitor", "run", "--once", "--follow"]
    )
    assert result.exit_code != 0
    assert "exclude each other" in str(result.exception)


@pytest.mark.slow
def test_stage_events_carry_evidence_and_never_move_the_alias_stack(tmp_path: Path) -> None:
    _, registry = _data_dir(tmp_path)
    other = bundle(tmp_path / "b", ["f0", "f1"], "1" * 64, constant=0.5)
    registry.register("m", other.path, run_id=None, gate=verdict())
    registry.promote("m", 2, actor="t", reason="better", evidence={"windows": 3})
    registry.set_alias(
        "m", "champion", 2, actor="t", reason="canary: x", action="stage", evidence={"k": [1]}
    )
    history = registry.history("m")
    assert history[-2].evidence == {"windows": 3} and history[-1].evidence == {"k": [1]}
    assert history[-1].action == "stage" and history[-1].from_version == 2
    # without the stage rule the stack would be [None, 1, 2, 2] and the rollback a no-op
    assert registry.rollback("m", actor="t", reason="undo").to_version == 1


@pytest.mark.slow
def test_a_trigger_that_stays_fired_waits_out_the_retrain_cooldown(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from dockline.pipeline.loop import HttpServingControl, TrainResult, run_cycle
    from dockline.pipeline.platform import Platform

    data, _ = _data_dir(tmp_path)
    platform = Platform.open(data)
    calls: list[datetime] = []

    def failing_trainer(platform: Platform, at: datetime) -> TrainResult:
        calls.append(at)
        return TrainResult(3, None, False, ["pr_auc 0.1 does not beat the champion"])

    control = HttpServingControl("http://127.0.0.1:9", None)  # never reached: no challenger
    at = datetime(2024, 5, 10, tzinfo=UTC)  # the champion's data is 10 days old: stale
    first = run_cycle(platform, control, trainer=failing_trainer, at=at)
    assert [a["action"] for a in first.actions] == ["train", "gate_failed"]
    assert "does not beat the champion" in first.actions[1]["reason"]
    just_under = at + timedelta(hours=6) - timedelta(seconds=1)
    within = run_cycle(platform, control, trainer=failing_trainer, at=just_under)
    assert [a["action"] for a in within.actions] == ["cooldown"] and len(calls) == 1
    # exactly the cooldown later it has been waited out
    after = run_cycle(platform, control, trainer=failing_trainer, at=at + timedelta(hours=6))
    assert after.actions[0]["action"] == "train" and len(calls) == 2
