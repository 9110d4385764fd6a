"""The monitoring job on a data dir where nothing has been served or trained yet: every
asset materializes and writes its result with what it could not judge, rather than failing."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import DagsterInstance, materialize

from dockline.orchestration import DocklineResource
from dockline.orchestration.assets import ALL_ASSETS, MONITORING, results_path
from dockline.pipeline.platform import Platform


def test_monitoring_on_a_data_dir_with_nothing_served_writes_empty_verdicts(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dockline.toml").write_text("", encoding="utf-8")
    result = materialize(
        [a for a in ALL_ASSETS if a.group_names_by_key[a.key] == MONITORING],
        resources={
            "dockline": DocklineResource(data_dir=str(data), at="2024-05-10T05:00:00+00:00")
        },
        instance=DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")),
    )
    assert result.success
    platform = Platform.open(data, existing=True)
    health = json.loads(results_path(platform, "deployment_health").read_text())
    assert health["deployments"] == []
    assert health["note"].startswith("nothing served yet: no ")
    drift = json.loads(results_path(platform, "drift").read_text())
    assert drift == {"drift": False, "features": {}, "bundles": []}
    performance = json.loads(results_path(platform, "live_performance").read_text())
    assert (performance["rows"], performance["windows"]) == (0, [])
    freshness = json.loads(results_path(platform, "freshness").read_text())
    assert freshness["results"] == []
    assert "no model registry yet (run `dockline train`)" in freshness["notes"]
    [event] = result.asset_materializations_for_node("deployment_health")
    assert event.metadata["deployments"].value == 0
    # the monitoring run created no registry and wrote nothing outside its results and lineage
    assert sorted(p.name for p in data.iterdir()) == ["dockline.toml", "lineage", "monitoring"]
