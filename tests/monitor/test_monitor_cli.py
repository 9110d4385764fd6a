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


def test_check_json_and_exit_code(shared_dir: Path) -> None:
    fixtures = shared_dir / "peers/monitoring-feedback-layer/fixtures"
    out = run("monitor", "check", "--metadata", str(fixtures / "dataset_metadata.json"), "--json")
    report = json.loads(out.stdout)
    assert report["all_passed"] is True and len(report["results"]) == 5
    bad = runner.invoke(
        root,
        [
            "monitor",
            "check",
            "--metadata",
            str(fixtures / "dataset_metadata_missing_built_at.json"),
        ],
    )
    assert bad.exit_code == 1
    assert "FAIL  freshness_computable" in bad.stdout


def test_freshness_of_a_metadata_file(shared_dir: Path) -> None:
    path = shared_dir / "peers/monitoring-feedback-layer/fixtures/dataset_metadata.json"
    at = "2026-04-07T08:22:10Z"  # built 08:02:10: 1200 s old
    out = run("monitor", "freshness", "--metadata", str(path), "--at", at, "--json")
    (result,) = json.loads(out.stdout)["results"]
    assert (result["freshness_seconds"], result["status"]) == (1200.0, "FRESH")
    out = run("monitor", "freshness", "--metadata", str(path), "--at", "2026-04-07T08:32:10Z")
    assert "STALE" in out.stdout


def test_freshness_of_a_data_dir_with_a_prediction_log(tmp_path: Path) -> None:
    from dockline.core.contracts import DatasetMetadata
    from dockline.serve._predlog import PredictionLog

    data = tmp_path / "data"
    DatasetMetadata(
        dataset_name="station_status",
        dataset_version="2026-04-07",
        path="offline/station_status/date=2026-04-07",
        built_at=T0,
        row_count=10,
    ).write(data / "offline" / "station_status" / "date=2026-04-07" / "_manifest.json")
    log = PredictionLog(
        data / "serving" / "predictions", flush_rows=10_000, flush_interval_s=60, max_queue=10_000
    )
    for i in range(100):
        age = 5000.0 if i < 10 else 30.0
        log.append(
            (
                f"r{i}",
                to_micros(T0) + i,
                "/v1/predict",
                f"s{i}",
                "champion",
                True,
                "m",
                1,
                "b",
                0.1,
                False,
                "ok",
                None,
                "model",
                None,
                age,
                1.0,
                [1.0],
            )
        )
    log.flush()
    out = run(
        "--data-dir",
        str(data),
        "monitor",
        "freshness",
        "--at",
        (T0 + timedelta(minutes=10)).isoformat(),
        "--json",
    )
    payload = json.loads(out.stdout)
    kinds = {r["kind"]: r for r in payload["results"]}
    assert kinds["dataset"]["freshness_seconds"] == 600.0 and kinds["dataset"]["status"] == "FRESH"
    vectors = kinds["online_vectors"]
    assert vectors["count"] == 100 and vectors["share_stale"] == 0.1
    assert vectors["status"] == "STALE"
    assert any("registry" in note for note in payload["notes"])
