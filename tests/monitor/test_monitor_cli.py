"""``dockline monitor`` through typer's CliRunner, on windows written by serving's telemetry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from dockline.cli._monitor import monitor_app
from dockline.core.errors import ConfigError
from dockline.core.time import FixedClock, to_micros
from dockline.serve._telemetry import ModelStamp, ServiceIdentity, Telemetry

T0 = datetime(2026, 4, 7, 10, 0, tzinfo=UTC)

root = typer.Typer()


@root.callback()
def _root(data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None) -> None:
    """The root app's --data-dir, as dockline's root callback declares it."""


root.add_typer(monitor_app, name="monitor")
runner = CliRunner()


def run(*args: str) -> Any:
    result = runner.invoke(root, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def serve_minutes(
    metrics: Path, minutes: int, *, fail_from: int | None = None, per_minute: int = 30
) -> datetime:
    """Drive serving's telemetry for ``minutes`` (one idle minute in the middle)."""
    clock = FixedClock(T0)
    telemetry = Telemetry(
        clock=clock,
        window_s=60,
        identity=ServiceIdentity("dockline", "0.1.0", "test", "dep-a"),
        model_stamp=lambda: ModelStamp("m", "3", "b123", "ds", "v1"),
        metrics_dir=metrics,
    )
    for minute in range(minutes):
        if minute != minutes // 2:  # an idle minute: serving writes a heartbeat window
            for i in range(per_minute):
                now = T0 + timedelta(minutes=minute, seconds=i)
                failed = fail_from is not None and minute >= fail_from and i % 2 == 0
                telemetry.record(
                    "/v1/predict",
                    to_micros(now),
                    0.002,
                    outcome="internal_error" if failed else "ok",
                    ok=not failed,
                )
        clock.set(T0 + timedelta(minutes=minute + 1))
        telemetry.tick()
    return clock.now()


def test_health_json_from_real_serving_windows(tmp_path: Path) -> None:
    metrics = tmp_path / "data" / "serving" / "metrics"
    end = serve_minutes(metrics, 10)
    # A bad line among the real ones is reported, not fatal.
    some = next(metrics.rglob("*.jsonl"))
    with some.open("a") as fh:
        fh.write("{broken\n")
    out = run(
        "--data-dir",
        str(tmp_path / "data"),
        "monitor",
        "health",
        "--at",
        end.isoformat(),
        "--json",
    )
    payload = json.loads(out.stdout)
    (state,) = payload["deployments"]
    assert state["deployment_id"] == "dep-a" and state["status"] == "healthy"
    assert state["detail"] == "all checks passed"
    assert state["missing_window_count"] == 0  # the idle minute is a heartbeat
    assert state["evaluated_windows"] == 20  # two endpoints × 10 minutes
    assert state["request_count"] == 9 * 30
    (bad,) = payload["bad_lines"]
    assert bad["file"] == str(some) and bad["reason"].startswith("invalid JSON")


def test_health_degraded_by_failures_table_output(tmp_path: Path) -> None:
    metrics = tmp_path / "m"
    end = serve_minutes(metrics, 6, fail_from=0)
    out = run("monitor", "health", "--windows", str(metrics), "--at", end.isoformat())
    assert "degraded" in out.stdout and "failure_rate" in out.stdout
    # --deployment filters; an unknown one prints that nothing was found.
    out = run("monitor", "health", "--windows", str(metrics), "--deployment", "nope", "--json")
    assert json.loads(out.stdout)["deployments"] == []


def test_health_later_is_stale(tmp_path: Path) -> None:
    metrics = tmp_path / "m"
    end = serve_minutes(metrics, 3)
    later = (end + timedelta(minutes=11)).isoformat()
    out = run("monitor", "health", "--windows", str(metrics), "--at", later, "--json")
    (state,) = json.loads(out.stdout)["deployments"]
    assert state["status"] == "unhealthy" and state["failing_check"] == "staleness"


def test_bad_at_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--at must be an ISO-8601 time"):
        run("monitor", "health", "--windows", str(tmp_path), "--at", "yesterday")
