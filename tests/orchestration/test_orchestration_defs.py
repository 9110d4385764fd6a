"""The Dagster code location loads, validates and holds what the docs say it holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster
import pytest

from dockline.orchestration.defs import defs

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load_and_validate() -> None:
    dagster.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {
        "ingest_job",
        "training_job",
        "monitoring_job",
        "loop_job",
    }
    assert {s.name for s in repo.sensor_defs} == {"retraining_sensor"}
    assert {s.name for s in repo.schedule_defs} == {
        "ingest_every_15_minutes",
        "monitoring_hourly",
        "training_daily",
        "loop_every_5_minutes",
    }
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {
        "offline_store",
        "online_features",
        "training_set",
        "model",
        "deployment_health",
        "freshness",
        "drift",
        "live_performance",
        "loop_state",
    }
    training = repo.get_job("training_job")
    assert {n.name for n in training.nodes} == {"training_set", "model"}
    assert repo.get_sensor_def("retraining_sensor").job_name == "training_job"


@pytest.mark.slow
def test_the_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    """What `dagster dev -m dockline.orchestration.defs` loads, checked by Dagster itself."""
    dagster_bin = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(dagster_bin), "definitions", "validate", "-m", "dockline.orchestration.defs"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dockline.orchestration.defs" in done.stdout + done.stderr
