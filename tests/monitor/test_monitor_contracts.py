"""Seed 003's six contracts: every peer fixture loads, and the outputs write the seed's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockline.core.contracts import DatasetMetadata, ServingMetricsWindow, TrainingMetadata
from dockline.core.errors import ContractError
from dockline.core.monitoring import (
    SEED_CHECKS,
    CheckReport,
    DeploymentHealthState,
    FreshnessResult,
)
from dockline.monitor import adapt_p4_bundle, run_checks


@pytest.fixture(scope="module")
def fixtures(shared_dir: Path) -> Path:
    return shared_dir / "peers" / "monitoring-feedback-layer" / "fixtures"


def _load(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def test_every_fixture_file_is_covered(fixtures: Path) -> None:
    covered = {
        "dataset_metadata.json",
        "dataset_metadata_missing_built_at.json",
        "training_metadata.json",
        "p4_bundle/metadata.json",
        "p4_bundle/metrics.json",
        "p4_bundle/model_uri.txt",
        "extracted/PROVENANCE.md",
        "extracted/check_report_example.json",
        "extracted/deployment_health_state_example.json",
        "extracted/freshness_result_example.json",
        "extracted/serving_metrics_window_base.json",
    }
    present = {str(p.relative_to(fixtures)) for p in fixtures.rglob("*") if p.is_file()}
    assert present == covered, "a new fixture appeared: load it in this module"


def test_dataset_metadata_round_trips(fixtures: Path, tmp_path: Path) -> None:
    meta = DatasetMetadata.read(fixtures / "dataset_metadata.json")
    assert meta.dataset_name == "bike_demand_pti"
    assert meta.feature_count == 38 and meta.target == "target_empty_next_hour"
    meta.write(tmp_path / "m.json")
    again = _load(tmp_path / "m.json")
    for key, value in _load(fixtures / "dataset_metadata.json").items():
        if key == "built_at":
            assert again[key] == "2026-04-07T08:02:10Z"
        else:
            assert again[key] == value, key


def test_dataset_metadata_without_built_at_is_refused_and_checked(fixtures: Path) -> None:
    path = fixtures / "dataset_metadata_missing_built_at.json"
    with pytest.raises(ContractError, match="built_at"):
        DatasetMetadata.read(path)
    report = run_checks(path)
    assert [r.check for r in report.results] == list(SEED_CHECKS)
    assert not report.all_passed
    assert [r.passed for r in report.results] == [True, True, True, True, False]
    assert "built_at" in report.results[-1].detail


def test_training_metadata_and_p4_bundle(fixtures: Path) -> None:
    meta = TrainingMetadata.read(fixtures / "training_metadata.json")
    assert meta.metrics == {"rmse": 0.182, "mae": 0.11}
    assert (meta.completed_at - meta.started_at).total_seconds() == 150
    adapted = adapt_p4_bundle(fixtures / "p4_bundle")
    assert adapted.run_id == "a1b2c3d4e5f6"
    assert adapted.model_name == "lightgbm_default"
    assert adapted.model_version == "unknown" and adapted.input_dataset_name == "unknown"
    assert adapted.metrics == {"rmse": 0.182, "mae": 0.11}
    assert adapted.artifact_path == "runs:/a1b2c3d4e5f6/model"
    assert adapted.started_at == adapted.completed_at


def test_p4_bundle_missing_file_is_one_clear_error(fixtures: Path, tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_bytes((fixtures / "p4_bundle/metadata.json").read_bytes())
    with pytest.raises(ContractError, match=r"metrics\.json"):
        adapt_p4_bundle(tmp_path)


def test_serving_metrics_window_example(fixtures: Path) -> None:
    raw = _load(fixtures / "extracted" / "serving_metrics_window_base.json")
    window = ServingMetricsWindow.model_validate(raw)
    dumped = json.loads(window.model_dump_json())
    assert dumped == raw  # every field, name and value exactly as the seed writes it


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("deployment_health_state_example.json", DeploymentHealthState),
        ("freshness_result_example.json", FreshnessResult),
        ("check_report_example.json", CheckReport),
    ],
)
def test_outputs_read_and_write_the_seed_shape(
    fixtures: Path, tmp_path: Path, name: str, model: type[DeploymentHealthState]
) -> None:
    path = fixtures / "extracted" / name
    raw = _load(path)
    loaded = model.read(path)
    loaded.write(tmp_path / name)
    written = _load(tmp_path / name)
    # The seed's fields first, in the seed's order and with its values; extensions after.
    assert list(written)[: len(raw)] == list(raw)
    assert {k: written[k] for k in raw} == raw
    assert model.read(tmp_path / name) == loaded


def test_outputs_refuse_unknown_fields_and_bad_status(fixtures: Path, tmp_path: Path) -> None:
    raw = _load(fixtures / "extracted" / "deployment_health_state_example.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**raw, "status": "stale"}))
    with pytest.raises(ContractError, match="status"):
        DeploymentHealthState.read(bad)
    bad.write_text(json.dumps({**raw, "colour": "green"}))
    with pytest.raises(ContractError, match="colour"):
        DeploymentHealthState.read(bad)
