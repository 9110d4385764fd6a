"""Lineage, piece by piece: the OpenLineage events, the trace's checks, emitting to files and
to a real HTTP endpoint (Marquez's path), and alias moves through the real registry."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from monitor_helpers import T0, make_bundle

from dockline.core.contracts import DatasetMetadata, GateVerdict
from dockline.core.time import FixedClock
from dockline.monitor.lineage import (
    DatasetInfo,
    PartitionInfo,
    build_trace,
    log_offsets,
    run_events,
    run_id,
    source_hash,
    to_ndjson,
)
from dockline.pipeline import lineage
from dockline.pipeline.features import _source_hashes
from dockline.pipeline.platform import Platform
from dockline.pipeline.train import open_registry, promote, rollback

OUT = DatasetInfo(
    "datasets/week",
    fields=[("station_id", "string"), ("x", "double")],
    rows=10,
    bytes=100,
    files=1,
    sha256={"data.parquet": "a" * 64},
    content_hash="c" * 64,
    plan_hash="p" * 64,
    version="cccc",
    null_counts={"x": 2},
    log_offsets={1: (5, 9), 0: (0, 4)},
)


def _events(**kw: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = dict(
        job="dataset_build",
        key="k",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=3),
        inputs=[OUT],
        outputs=[OUT],
    )
    args.update(kw)
    return [json.loads(line) for line in to_ndjson(run_events(**args)).splitlines()]


def test_a_run_is_a_start_and_a_complete_with_facets_on_the_complete() -> None:
    start, end = _events(details={"rows": 10})
    assert (start["eventType"], end["eventType"]) == ("START", "COMPLETE")
    assert start["run"]["runId"] == end["run"]["runId"] == run_id("dataset_build", "k")
    assert start["eventTime"] == "2026-04-07T10:00:00.000000+00:00"
    assert end["run"]["facets"]["dockline"]["durationSeconds"] == 3.0
    assert end["run"]["facets"]["dockline"]["details"] == {"rows": 10}
    out = end["outputs"][0]
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == ["station_id", "x"]
    assert out["outputFacets"]["outputStatistics"] == {
        **out["outputFacets"]["outputStatistics"],
        "rowCount": 10,
        "size": 100,
        "fileCount": 1,
    }
    dock = out["facets"]["dockline"]
    assert dock["planHash"] == "p" * 64 and dock["sha256"] == {"data.parquet": "a" * 64}
    assert dock["logOffsets"] == {"0": [0, 4], "1": [5, 9]}
    quality = end["inputs"][0]["inputFacets"]["dataQualityMetrics"]
    assert quality["rowCount"] == 10 and quality["columnMetrics"] == {
        "x": {**quality["columnMetrics"]["x"], "nullCount": 2}
    }
    assert end["job"]["facets"]["jobType"]["jobType"] == "DATASET_BUILD"


def test_the_same_run_gives_the_same_bytes_and_a_failed_run_says_fail() -> None:
    assert _events() == _events()
    a = to_ndjson(run_events(job="training", key="b1", started_at=T0, ended_at=T0))
    b = to_ndjson(run_events(job="training", key="b1", started_at=T0, ended_at=T0))
    assert a == b
    assert _events(failed=True)[1]["eventType"] == "FAIL"
    assert run_id("training", "b1") != run_id("training", "b2")


def test_an_unknown_job_is_refused() -> None:
    with pytest.raises(ValueError, match="job must be one of"):
        run_events(job="nope", key="k", started_at=T0, ended_at=T0)


def test_log_offsets_merge_the_offline_files_per_partition() -> None:
    names = [
        "p000-000000000000-000000000099.parquet",
        "date=2026-04-07/p000-000000000100-000000000150.parquet",
        "p002-000000000007-000000000009.parquet",
        "part-0.parquet",  # an aggregate: no offsets
    ]
    assert log_offsets(names) == {0: (0, 150), 2: (7, 9)}
    assert log_offsets([]) == {}


def test_source_hash_is_the_hash_datasets_record(tmp_path: Path) -> None:
    """The trace recomputes what ``pipeline.features`` recorded: the same formula."""
    platform = Platform.open(tmp_path)
    parts = []
    for day, content in (("2026-04-07", "x" * 64), ("2026-04-06", "y" * 64)):
        meta = DatasetMetadata(
            dataset_name="station_status",
            dataset_version="1",
            path=".",
            built_at=T0,
            row_count=1,
            partition=day,
            content_hash=content,
        )
        meta.write(platform.data.offline("station_status") / f"date={day}" / "_manifest.json")
        parts.append((day, content))
    from dockline.pipeline.features import load_plan

    recorded = _source_hashes(platform, load_plan(platform))
    assert recorded["station_status"] == source_hash(parts)


def _trace(**kw: Any) -> dict[str, Any]:
    parts = [PartitionInfo("2026-04-07", "x" * 64, 5, ["p000-000000000000-000000000004.parquet"])]
    args: dict[str, Any] = dict(
        bundle={"bundle_id": "b1", "lineage": {"dataset_hash": "d", "plan_hash": "p"}},
        training={"run_id": "r1", "bundle_id": "b1"},
        dataset={
            "dataset_name": "week",
            "dataset_version": "v",
            "content_hash": "d",
            "extra": {
                "plan_hash": "p",
                "source_hash.station_status": source_hash([("2026-04-07", "x" * 64)]),
            },
        },
        partitions={"station_status": parts},
    )
    args.update(kw)
    return build_trace("b1", **args).to_dict()


def test_the_trace_verifies_each_link_and_names_what_does_not_hold() -> None:
    good = _trace()
    assert good["problems"] == []
    assert [s["kind"] for s in good["steps"]] == [
        "bundle",
        "training_run",
        "dataset",
        "plan",
        "offline_partitions",
        "log_offsets",
    ]
    assert good["steps"][-1]["partitions"] == {"0": {"first": 0, "last": 4}}
    changed = _trace(partitions={"station_status": [PartitionInfo("2026-04-07", "z" * 64, 5, [])]})
    assert changed["problems"] == [
        "offline source station_status changed since the dataset was built"
        " (its partitions' hash differs)"
    ]
    orphan = _trace(training=None, dataset=None)
    assert orphan["problems"][0] == "no training run recorded for bundle b1"
    assert "not found" in orphan["problems"][1]
    other = _trace(bundle={"bundle_id": "b1", "lineage": {"dataset_hash": "e", "plan_hash": "q"}})
    assert len(other["problems"]) == 2  # another dataset's hash, another plan


# -------------------------------------------------------------------------------- emitting


class _Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        _Recorder.bodies.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.bodies = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _platform(root: Path, toml: str = "") -> Platform:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dockline.toml").write_text(toml, encoding="utf-8")
    return Platform.open(root, clock=FixedClock(T0))


def test_events_go_to_a_day_file_and_to_the_configured_http_endpoint(
    tmp_path: Path, http_server: str
) -> None:
    platform = _platform(tmp_path, f'[lineage]\nurl = "{http_server}"\n')
    lineage.record_monitor(platform, "health", at=T0, details={"dep-a": "healthy"})
    (day,) = lineage.lineage_files(platform)
    assert day.name == "openlineage-2026-04-07.ndjson"
    written = [json.loads(line) for line in day.read_text().splitlines()]
    assert [e["eventType"] for e in written] == ["START", "COMPLETE"]
    assert [path for path, _ in _Recorder.bodies] == ["/api/v1/lineage"] * 2
    assert [body for _, body in _Recorder.bodies] == written


def test_a_lineage_server_that_is_down_fails_nothing_and_the_file_keeps_the_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform = _platform(tmp_path, '[lineage]\nurl = "http://127.0.0.1:9"\ntimeout = "1s"\n')
    before = lineage.FAILURES["http"]
    lineage.record_monitor(platform, "drift", at=T0, details={})
    assert lineage.FAILURES["http"] == before + 1
    assert "sending lineage" in caplog.text
    assert len(list(lineage.read_events(platform))) == 2


def test_an_unwritable_lineage_dir_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform = _platform(tmp_path)
    platform.data.lineage.write_text("not a directory")
    before = lineage.FAILURES["file"]
    lineage.record_monitor(platform, "health", at=T0, details={})
    assert lineage.FAILURES["file"] == before + 1 and "writing lineage events failed" in caplog.text


def test_suppressed_emits_nothing(tmp_path: Path) -> None:
    platform = _platform(tmp_path)
    with lineage.suppressed():
        lineage.record_monitor(platform, "health", at=T0, details={})
    assert lineage.lineage_files(platform) == []


def _passed() -> GateVerdict:
    return GateVerdict(
        passed=True,
        primary_metric="pr_auc",
        higher_is_better=True,
        value=0.5,
        margin=0.0,
        ece=0.01,
        max_ece=0.05,
    )


@pytest.mark.slow  # a fresh MLflow database: ~5 s
def test_promote_and_rollback_record_alias_moves(tmp_path: Path) -> None:
    platform = _platform(tmp_path / "data")
    rng = np.random.default_rng(0)
    registry = open_registry(platform)
    name = "bikeshare-empty_next_hour"
    for i in range(2):
        train = rng.normal(size=(200, 2)) + i
        bundle_id = make_bundle(platform.data.bundles, ["a", "b"], train, rng.random(200))
        registry.register(name, platform.data.bundles / bundle_id, run_id=None, gate=_passed())
    promote(platform, name, 1, actor="t", reason="first")
    promote(platform, name, 2, actor="t", reason="better")
    rollback(platform, name, actor="t", reason="worse live")
    moves = [
        e
        for e in lineage.read_events(platform)
        if e["job"]["name"] == "alias_move" and e["eventType"] == "COMPLETE"
    ]
    details = [m["run"]["facets"]["dockline"]["details"] for m in moves]
    # None is left out of OpenLineage JSON: no from_version on the first promotion
    assert [(d["action"], d.get("from_version"), d["to_version"]) for d in details] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("rollback", 2, 1),
    ]
    assert details[-1]["reason"] == "worse live"
    assert len({m["run"]["runId"] for m in moves}) == 3  # same instant, three runs
    assert [i["name"] for i in moves[1]["inputs"]] == [f"registry/{name}/v2", f"registry/{name}/v1"]
    assert moves[0]["outputs"][0]["name"] == f"registry/{name}@champion"
