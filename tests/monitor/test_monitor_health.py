"""Deployment health: each rule at its boundary (just under, at, just over), order, lookback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockline.core.config import MonitorHealthConfig
from dockline.core.contracts import ServingMetricsWindow
from dockline.core.errors import NotFoundError
from dockline.monitor import count_missing_windows, deployment_health, read_windows

T0 = datetime(2026, 4, 7, 10, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
BASE: dict[str, object] = {}


@pytest.fixture(autouse=True, scope="module")
def _base(shared_dir: Path) -> None:
    path = shared_dir / "peers/monitoring-feedback-layer/fixtures/extracted"
    BASE.update(json.loads((path / "serving_metrics_window_base.json").read_text()))


def window(minute: float, **overrides: object) -> ServingMetricsWindow:
    start = T0 + timedelta(minutes=minute)
    fields = {
        **BASE,
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(minutes=1)).isoformat(),
        "heartbeat_emitted_at": (start + timedelta(minutes=1)).isoformat(),
        **overrides,
    }
    return ServingMetricsWindow.model_validate(fields)


def idle(minute: float) -> ServingMetricsWindow:
    return window(
        minute,
        request_count=0,
        success_count=0,
        failure_count=0,
        rejected_count=0,
        prediction_count=0,
        latency_p50_ms=None,
        latency_p95_ms=None,
        latency_p99_ms=None,
    )


def minutes(n: int, **overrides: object) -> list[ServingMetricsWindow]:
    """``n`` consecutive healthy windows starting at T0."""
    return [window(i, **overrides) for i in range(n)]


def judge(
    windows: list[ServingMetricsWindow], at: datetime | None = None, **config: object
) -> tuple[str, str | None, str]:
    at = at or max(w.window_end for w in windows)
    (state,) = deployment_health(windows, MonitorHealthConfig.model_validate(config), at)
    return state.status, state.failing_check, state.detail


def test_healthy_matches_the_seed_example() -> None:
    (state,) = deployment_health(minutes(5), MonitorHealthConfig(), T0 + timedelta(minutes=5))
    assert state.status == "healthy" and state.detail == "all checks passed"
    assert state.evaluated_windows == 5 and state.missing_window_count == 0
    assert state.latest_window_end == T0 + timedelta(minutes=5)
    assert (state.deployment_id, state.bundle_id) == ("dep-001", "bundle-abc")
    assert state.failing_check is None and state.request_count == 500


@pytest.mark.parametrize(
    ("late", "status"),
    [
        (timedelta(minutes=10) - US, "healthy"),
        (timedelta(minutes=10), "healthy"),
        (timedelta(minutes=10) + US, "unhealthy"),
    ],
)
def test_staleness_boundary(late: timedelta, status: str) -> None:
    ws = minutes(15)
    got, check, detail = judge(ws, ws[-1].window_end + late, lookback="1h")
    assert got == status
    if status == "unhealthy":
        assert check == "staleness" and detail.startswith("staleness 10.0min > 10.0min")


def test_no_traffic_is_unhealthy_and_one_request_is_not() -> None:
    status, check, detail = judge([idle(i) for i in range(5)])
    assert (status, check) == ("unhealthy", "no_traffic")
    assert "request_count == 0" in detail
    ws = [idle(i) for i in range(4)] + [
        window(4, request_count=1, failure_count=0, rejected_count=0)
    ]
    assert judge(ws)[0] == "healthy"


@pytest.mark.parametrize(
    ("gap_minutes", "status"), [(3, "healthy"), (4, "healthy"), (5, "degraded")]
)
def test_missing_windows_boundary(gap_minutes: int, status: str) -> None:
    # One gap of `gap_minutes` between starts misses gap - 1 windows: 2, 3 (= max), 4.
    ws = [window(0), window(gap_minutes), window(gap_minutes + 1)]
    got, check, detail = judge(ws, max_gap_minutes=60)
    assert got == status
    if status == "degraded":
        assert check == "missing_windows" and detail == "missing_windows=4 > 3"


def test_missing_windows_counts_like_the_seed() -> None:
    starts = [T0, T0 + timedelta(minutes=3)]
    assert count_missing_windows(starts, 60, 2) == 2
    assert count_missing_windows([T0, T0 + timedelta(minutes=2)], 60, 2) == 0  # = factor
    assert count_missing_windows([T0, T0 + timedelta(seconds=121)], 60, 2) == 1  # at least one


@pytest.mark.parametrize(
    ("gap", "status"),
    [
        (timedelta(minutes=5) - US, "healthy"),
        (timedelta(minutes=5), "healthy"),
        (timedelta(minutes=5) + US, "degraded"),
    ],
)
def test_max_gap_boundary(gap: timedelta, status: str) -> None:
    first = window(0)
    later = window(gap.total_seconds() / 60)
    got, check, detail = judge([first, later], max_missing_windows=100)
    assert got == status
    if status == "degraded":
        assert check == "max_gap" and detail.startswith("max_gap=5.0min > 5.0min")


def test_heartbeats_are_idle_not_missing() -> None:
    ws = [window(0)] + [idle(i) for i in range(1, 9)] + [window(9)]
    status, _, _ = judge(ws)
    assert status == "healthy"
    # The same quiet period with no heartbeat at all is missing windows.
    assert judge([window(0), window(9)])[1] == "missing_windows"


@pytest.mark.parametrize(
    ("field", "limit"), [("latency_p95_ms", 500.0), ("latency_p99_ms", 1000.0)]
)
@pytest.mark.parametrize(
    ("delta", "status"), [(-0.001, "healthy"), (0.0, "healthy"), (0.001, "degraded")]
)
def test_latency_boundary(field: str, limit: float, delta: float, status: str) -> None:
    ws = [*minutes(4), window(4, **{field: limit + delta})]
    got, check, detail = judge(ws)
    assert got == status
    if status == "degraded":
        name = field.removesuffix("_ms")
        assert check == name and detail.startswith(name)


def test_latency_is_judged_on_the_latest_window_with_traffic() -> None:
    ws = [window(0, latency_p95_ms=900.0), window(1)] + [idle(i) for i in range(2, 5)]
    assert judge(ws)[0] == "healthy"  # an old slow minute is not the latest
    ws = [window(0), window(1, latency_p95_ms=900.0)] + [idle(i) for i in range(2, 5)]
    assert judge(ws)[1] == "latency_p95"  # heartbeats after it carry no latency


@pytest.mark.parametrize(
    ("field", "check"), [("failure_count", "failure_rate"), ("rejected_count", "rejection_rate")]
)
@pytest.mark.parametrize(("bad", "status"), [(4, "healthy"), (5, "healthy"), (6, "degraded")])
def test_rate_boundary(field: str, check: str, bad: int, status: str) -> None:
    # 100 requests in the lookback: 4, 5 (= 5 %) and 6 bad ones.
    quiet = {"failure_count": 0, "rejected_count": 0}
    ws = [window(0, request_count=100, **{**quiet, field: bad})]
    got, failing, detail = judge(ws)
    assert got == status
    if status == "degraded":
        assert failing == check and detail.startswith(f"{check}=6.0% > 5.0%")


@pytest.mark.parametrize(("requests", "inconclusive"), [(19, True), (20, False), (21, False)])
def test_min_sample_boundary(requests: int, inconclusive: bool) -> None:
    # Half the requests failed: a clear failure, unless there are too few to judge.
    ws = [window(0, request_count=requests, failure_count=requests // 2, rejected_count=0)]
    (state,) = deployment_health(ws, MonitorHealthConfig(), ws[0].window_end)
    if inconclusive:
        assert state.status == "healthy"
        assert state.inconclusive == ["failure_rate", "rejection_rate"]
        assert "inconclusive" in state.detail and "19 requests < min 20" in state.detail
    else:
        assert state.status == "degraded" and state.failing_check == "failure_rate"
        assert state.inconclusive == []


def test_lookback_ignores_old_history() -> None:
    old_failures = [window(i, failure_count=50) for i in range(10)]
    recent = [window(i) for i in range(10, 30)]
    status, _, _ = judge(old_failures + recent)  # default lookback 15 min: old ones out
    assert status == "healthy"
    assert judge(old_failures + recent, lookback="1h")[1] == "failure_rate"


def test_windows_after_at_are_not_seen() -> None:
    ws = [*minutes(5), window(5, latency_p95_ms=900.0)]
    (state,) = deployment_health(ws, MonitorHealthConfig(), T0 + timedelta(minutes=5))
    assert state.status == "healthy" and state.evaluated_windows == 5


def test_unhealthy_beats_degraded_and_order_is_the_seeds() -> None:
    slow_failing = {"latency_p95_ms": 900.0, "failure_count": 50}
    ws = [window(0, **slow_failing), window(7, **slow_failing)]
    # stale, gappy, slow and failing: staleness decides.
    assert judge(ws, ws[-1].window_end + timedelta(minutes=11))[1] == "staleness"
    assert judge(ws)[1] == "missing_windows"
    assert judge(ws, max_missing_windows=10)[1] == "max_gap"
    assert judge(ws, max_missing_windows=10, max_gap_minutes=10)[1] == "latency_p95"
    assert judge(ws, max_missing_windows=10, max_gap_minutes=10, latency_p95_ms=1000)[1] == (
        "failure_rate"
    )


def test_deployments_are_judged_separately_and_filtered() -> None:
    ws = minutes(3) + [window(i, deployment_id="dep-002", failure_count=40) for i in range(3)]
    at = T0 + timedelta(minutes=3)
    states = deployment_health(ws, MonitorHealthConfig(), at)
    assert [(s.deployment_id, s.status) for s in states] == [
        ("dep-001", "healthy"),
        ("dep-002", "degraded"),
    ]
    only = deployment_health(ws, MonitorHealthConfig(), at, deployment="dep-002")
    assert [s.deployment_id for s in only] == ["dep-002"]


# -- reading windows --------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_read_windows_reports_bad_lines_and_dedupes(tmp_path: Path) -> None:
    good = [w.model_dump_json() for w in minutes(3)]
    reversed_window = json.loads(good[0])
    reversed_window["window_end"] = reversed_window["window_start"]
    naive = json.loads(good[1])
    naive["window_start"] = "2026-04-07T10:01:00"
    missing = json.loads(good[2])
    del missing["deployment_id"]
    _write(tmp_path / "2026-04-07" / "10" / "a.jsonl", [good[0], "{not json", good[1], ""])
    _write(
        tmp_path / "2026-04-07" / "10" / "b.jsonl",
        [good[0], good[2], json.dumps(reversed_window), json.dumps(naive), json.dumps(missing)],
    )
    scan = read_windows(tmp_path)
    assert len(scan.windows) == 3 and scan.duplicates == 1 and scan.files == 2
    where = [(Path(b.file).name, b.line) for b in scan.bad_lines]
    assert where == [("a.jsonl", 2), ("b.jsonl", 3), ("b.jsonl", 4), ("b.jsonl", 5)]
    reasons = [b.reason for b in scan.bad_lines]
    assert reasons[0].startswith("invalid JSON")
    assert "window_end must be after window_start" in reasons[1]
    assert "window_start" in reasons[2]
    assert reasons[3].startswith("deployment_id")


def test_same_window_other_endpoint_is_kept(tmp_path: Path) -> None:
    a = window(0)
    b = window(0, endpoint_name="/predict-batch")
    _write(tmp_path / "x.jsonl", [a.model_dump_json(), b.model_dump_json()])
    assert len(read_windows(tmp_path).windows) == 2


def test_missing_directory_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no serving metrics"):
        read_windows(tmp_path / "nope")


@pytest.mark.parametrize(("offset", "judged"), [(-US, 1), (timedelta(0), 0), (US, 0)])
def test_lookback_boundary(offset: timedelta, judged: int) -> None:
    # A window ending 1 µs less than `lookback` before `at` is judged; exactly `lookback`
    # before, or earlier, it is out.
    old = window(0, failure_count=60)
    at = old.window_end + timedelta(minutes=15) + offset
    recent = window((at - T0).total_seconds() / 60 - 1)  # ends at `at`
    (state,) = deployment_health(
        [old, recent], MonitorHealthConfig(max_gap_minutes=60, max_missing_windows=99), at
    )
    assert state.evaluated_windows == 1 + judged
