"""Freshness of the champion's training data, through the real MLflow registry."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from monitor_helpers import make_bundle, root, runner

from dockline.core.bundle import load_bundle
from dockline.core.config import DataDir
from dockline.train.registry import MlflowRegistry


@pytest.mark.slow
def test_champion_training_data_age(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    data.root.mkdir()
    # Serving's model name rule: serve.model_name when set.
    data.config_file.write_text('[serve]\nmodel_name = "m"\n')
    rng = np.random.default_rng(0)
    bundle_id = make_bundle(tmp_path / "staging", ["a"], rng.normal(0, 1, (100, 1)), None)
    registry = MlflowRegistry.for_data_dir(data)
    version = registry.register("m", tmp_path / "staging" / bundle_id, run_id=None, gate=None)
    registry.set_alias(
        "m", "champion", version.version, actor="test", reason="test", action="promote"
    )
    test_end = load_bundle(tmp_path / "staging" / bundle_id).manifest.test_end
    for age, status in (
        (timedelta(days=7) - timedelta(seconds=1), "FRESH"),
        (timedelta(days=7), "STALE"),
    ):
        out = runner.invoke(
            root,
            [
                "--data-dir",
                str(data.root),
                "monitor",
                "freshness",
                "--at",
                (test_end + age).isoformat(),
                "--json",
            ],
        )
        assert out.exit_code == 0, out.output
        (result,) = [r for r in json.loads(out.stdout)["results"] if r["kind"] == "training_data"]
        assert result["dataset_version"] == bundle_id and result["status"] == status
        assert result["freshness_seconds"] == age.total_seconds()
