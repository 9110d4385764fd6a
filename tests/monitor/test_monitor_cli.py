"""``dockline monitor`` through typer's CliRunner, on windows written by serving's telemetry."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from monitor_helpers import T0, make_bundle, root, runner

from dockline.core.errors import ConfigError
from dockline.core.time import FixedClock, to_micros
from dockline.serve._telemetry import ModelStamp, ServiceIdentity, Telemetry


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
                None,
                None,
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


# -- drift ------------------------------------------------------------------------------------


def _parquet(path: Path, columns: dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_drift_of_two_tables(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    n = 20_000
    ref = _parquet(
        tmp_path / "ref.parquet",
        {"a": rng.normal(0, 1, n), "b": rng.exponential(2, n), "station_id": ["s"] * n},
    )
    cur = _parquet(
        tmp_path / "cur.parquet",
        {"a": rng.normal(0, 1, n), "b": rng.exponential(2, n) + 0.5, "c": rng.normal(0, 1, n)},
    )
    out = run(
        "--data-dir",
        str(tmp_path / "d"),
        "monitor",
        "drift",
        "--reference",
        str(ref),
        "--current",
        str(cur),
        "--json",
    )
    payload = json.loads(out.stdout)
    assert set(payload["features"]) == {"a", "b"}  # shared numeric columns only
    assert payload["features"]["b"]["drift"] is True
    assert payload["features"]["b"]["method"] == "wasserstein"
    assert payload["features"]["a"]["drift"] is False
    assert payload["drift"] is True  # one of two features: share 0.5
    table = run("monitor", "drift", "--reference", str(ref), "--current", str(cur))
    assert "DRIFT" in table.stdout


def test_drift_options_must_pair(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        run("monitor", "drift", "--reference", str(tmp_path / "x.parquet"))


def test_drift_live_from_the_prediction_log(tmp_path: Path) -> None:
    import numpy as np

    from dockline.serve._predlog import PredictionLog

    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    names = ["bikes", "docks", "age"]
    train = np.column_stack(
        [rng.normal(10, 3, 50_000), rng.normal(5, 2, 50_000), rng.exponential(60, 50_000)]
    )
    bundle_id = make_bundle(data / "bundles", names, train, rng.beta(2, 5, 50_000))
    log = PredictionLog(
        data / "serving" / "predictions",
        flush_rows=100_000,
        flush_interval_s=60,
        max_queue=100_000,
    )
    n = 5000
    live = np.column_stack(
        [rng.normal(10, 3, n) + 0.25 * 3, rng.normal(5, 2, n), rng.exponential(60, n)]
    )
    probs = rng.beta(2, 5, n)
    base = to_micros(T0)
    for i in range(n):
        log.append(
            (
                f"r{i}",
                base + i * 600_000,
                "/v1/predict",
                f"s{i % 300}",
                "champion",
                True,
                "bikeshare-empty_next_hour",
                3,
                bundle_id,
                float(probs[i]),
                False,
                "ok",
                None,
                "model",
                None,
                20.0,
                1.0,
                [float(v) for v in live[i]],
                None,
                None,
            )
        )
    log.flush()
    at = (T0 + timedelta(hours=1)).isoformat()
    out = run("--data-dir", str(data), "monitor", "drift", "--at", at, "--json")
    payload = json.loads(out.stdout)
    assert payload["bundle_id"] == bundle_id and payload["rows"] == n
    assert payload["model_version"] == 3
    flagged = [name for name, f in payload["features"].items() if f["drift"]]
    assert flagged == ["bikes"]
    assert payload["prediction"]["drift"] is False
    assert [b["bundle_id"] for b in payload["bundles"]] == [bundle_id]
    assert payload["dataset_window"]["rows"] == n and payload["window_drift"] is False
    assert payload["dataset_window"]["drifted"] == ["bikes"]
    # Earlier the same day the other two features ran far off: the dataset-level verdict over
    # the trailing 24 h sees them (merged sketches), the last hour's feature verdicts do not.
    older = rng.normal(0, 1, (n, 3)) * [3, 2, 60] + [10, 5 + 4, 60 * 3]
    for i in range(n):
        log.append(
            (
                f"o{i}",
                base - 3 * 3_600_000_000 + i * 600_000,
                "/v1/predict",
                "s",
                "champion",
                True,
                "bikeshare-empty_next_hour",
                3,
                bundle_id,
                0.2,
                False,
                "ok",
                None,
                "model",
                None,
                20.0,
                1.0,
                [float(v) for v in older[i]],
                None,
                None,
            )
        )
    log.flush()
    payload = json.loads(
        run("--data-dir", str(data), "monitor", "drift", "--at", at, "--json").stdout
    )
    assert payload["drift"] is True and payload["window_drift"] is False
    assert payload["dataset_window"]["drifted"] == ["age", "bikes", "docks"]
    assert [n for n, f in payload["features"].items() if f["drift"]] == ["bikes"]
    assert payload["rows"] == n and payload["dataset_window"]["rows"] == 2 * n
    # A window before any prediction: nothing to compare.
    early = run("--data-dir", str(data), "monitor", "drift", "--at", T0.isoformat(), "--json")
    assert json.loads(early.stdout) == {"drift": False, "features": {}, "bundles": []}


def test_drift_exclude_setting(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(2)
    ref = _parquet(
        tmp_path / "r.parquet", {"a": rng.normal(0, 1, 5000), "b": rng.normal(0, 1, 5000)}
    )
    cur = _parquet(
        tmp_path / "c.parquet", {"a": rng.normal(2, 1, 5000), "b": rng.normal(0, 1, 5000)}
    )
    data = tmp_path / "d"
    data.mkdir()
    (data / "dockline.toml").write_text('[monitor.drift]\nexclude = ["a"]\n')
    out = run(
        "--data-dir",
        str(data),
        "monitor",
        "drift",
        "--reference",
        str(ref),
        "--current",
        str(cur),
        "--json",
    )
    payload = json.loads(out.stdout)
    assert list(payload["features"]) == ["b"] and payload["drift"] is False


def test_monitoring_never_creates_the_data_dir(tmp_path: Path) -> None:
    metrics = tmp_path / "m"
    serve_minutes(metrics, 2)
    data = tmp_path / "absent"
    run("--data-dir", str(data), "monitor", "health", "--windows", str(metrics), "--json")
    assert not data.exists()
