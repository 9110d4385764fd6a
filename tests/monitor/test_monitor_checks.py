"""Seed 003's five checks and dataset freshness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockline.core.contracts import DatasetMetadata
from dockline.core.monitoring import SEED_CHECKS
from dockline.monitor import dataset_freshness, run_checks, vector_freshness


def test_all_checks_pass_on_the_seed_fixture(shared_dir: Path) -> None:
    path = shared_dir / "peers/monitoring-feedback-layer/fixtures/dataset_metadata.json"
    report = run_checks(path)
    assert report.all_passed
    assert [r.check for r in report.results] == list(SEED_CHECKS)
    assert all(r.detail == "" for r in report.results)


def test_missing_file_stops_after_the_first_check(tmp_path: Path) -> None:
    report = run_checks(tmp_path / "nope.json")
    assert [(r.check, r.passed) for r in report.results] == [("file_exists", False)]
    assert "File not found" in report.results[0].detail


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_bad_json_stops_after_the_second_check(tmp_path: Path, content: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    report = run_checks(path)
    assert [(r.check, r.passed) for r in report.results] == [
        ("file_exists", True),
        ("valid_json", False),
    ]
    assert not report.all_passed


def test_each_missing_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"dataset_name": " ", "built_at": "2026-04-07T08:02:10"}))
    report = run_checks(path)
    assert [r.passed for r in report.results] == [True, True, False, False, False]
    assert "dataset_name" in report.results[2].detail
    assert "dataset_version" in report.results[3].detail
    assert "time zone" in report.results[4].detail


def _meta(built_at: datetime) -> DatasetMetadata:
    return DatasetMetadata(
        dataset_name="d", dataset_version="v", path="p", built_at=built_at, row_count=1
    )


@pytest.mark.parametrize(
    ("age", "status"),
    [
        (timedelta(seconds=1799, microseconds=999_999), "FRESH"),
        (timedelta(seconds=1800), "STALE"),
        (timedelta(seconds=1800, microseconds=1), "STALE"),
    ],
)
def test_dataset_freshness_boundary(age: timedelta, status: str) -> None:
    built = datetime(2026, 4, 7, 8, 2, 10, tzinfo=UTC)
    result = dataset_freshness(_meta(built), built + age)
    assert result.status == status
    assert result.freshness_seconds == round(age.total_seconds(), 1)
    assert result.reference_time == built and result.threshold_seconds == 1800.0


def test_seed_example_freshness() -> None:
    built = datetime(2026, 4, 7, 8, 0, tzinfo=UTC)
    result = dataset_freshness(_meta(built), built + timedelta(seconds=1200))
    assert (result.freshness_seconds, result.status) == (1200.0, "FRESH")


def test_vector_freshness_distribution() -> None:
    at = datetime(2026, 4, 7, 10, tzinfo=UTC)
    ages = [10.0] * 90 + [4000.0] * 10 + [float("nan")]
    result = vector_freshness(ages, at, 1800.0)
    assert result is not None
    assert result.count == 100 and result.share_stale == 0.1
    assert result.status == "STALE"  # p95 is in the stale tail
    assert result.age_p50_seconds == 10.0 and result.age_max_seconds == 4000.0
    fresh = vector_freshness([10.0] * 96 + [4000.0] * 4, at, 1800.0)
    assert fresh is not None and fresh.status == "FRESH" and fresh.share_stale == 0.04
    assert vector_freshness([], at, 1800.0) is None


def test_built_datasets_are_judged_in_a_data_dir(tmp_path: Path) -> None:
    from dockline.pipeline.monitor import freshness
    from dockline.pipeline.platform import Platform

    platform = Platform.open(tmp_path / "data")
    built = datetime(2026, 4, 7, 8, 0, tzinfo=UTC)
    _meta(built).write(platform.data.datasets / "d" / "_metadata.json")  # what dataset build writes
    run = freshness(platform, at=built + timedelta(minutes=10))
    judged = [(r.dataset_name, r.dataset_version, r.status) for r in run.results]
    assert ("d", "v", "FRESH") in judged
