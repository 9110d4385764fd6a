"""The loop on the real serving app and the real MLflow registry: a bad challenger is rolled back
automatically within two analysis windows; a healthy one (the champion's own model) is promoted,
never rolled back; every step is in the alias history with its evidence."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from loop_helpers import TOKEN, bundle, verdict

from dockline.core.bundle import (
    Bundle,
)
from dockline.core.contracts import IngestSummary
from dockline.core.time import FixedClock
from dockline.pipeline.demo_loop import wait_for_log
from dockline.pipeline.features import load_plan, materialize
from dockline.pipeline.ingest import ingest_feed, sink_offline
from dockline.pipeline.loop import HttpServingControl, TrainResult, load_state, run_cycle
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.sim import City, CityConfig, SimServer
from dockline.train.registry import MlflowRegistry

WINDOW = timedelta(minutes=2)


@dataclasses.dataclass
class City_:
    platform: Platform
    stations: list[str]
    end: datetime
    features: list[str]
    plan_hash: str
    root: Path


@pytest.fixture(scope="module")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City_]:
    root = tmp_path_factory.mktemp("loop-city")
    city = City(CityConfig(stations=40, seed=5))
    clock = FixedClock(city.time)
    platform = Platform.open(root / "data", clock=clock)
    end = city.time + timedelta(minutes=20)
    with SimServer(city, speed=6000.0, clock=clock) as server:

        def advance(summary: IngestSummary) -> None:
            clock.advance(timedelta(minutes=1))

        ingest_feed(
            platform,
            server.url + "/gbfs.json",
            stop=lambda: clock.now() >= end,
            clock_source="feed",
            on_progress=advance,
        )
    sink_offline(platform)
    materialize(platform)
    plan = load_plan(platform)
    features = [n for n in plan.feature_names if n.endswith("__last") and "is_" not in n]
    yield City_(platform, list(city.station_ids), end, features, plan.hash, root)


def _fresh(city: City_, name: str, extra: str = "") -> tuple[Platform, FixedClock, MlflowRegistry]:
    """A data directory of its own (copied), with a champion registered under ``name``."""
    import shutil

    data = city.root / name
    shutil.copytree(city.platform.data.root, data)
    clock = FixedClock(city.end + timedelta(seconds=5))
    (data / "dockline.toml").write_text(
        f'[serve]\nmodel_name = "{name}"\nreload_poll = "1h"\nadmin_token = "{TOKEN}"\n'
        'prediction_flush_interval = "100ms"\n[clock]\nkind = "data"\n'
        '[monitor.canary]\nanalysis_window = "2m"\nmin_requests = 30\nsuccess_windows = 2\n' + extra
    )
    platform = Platform.open(data, clock=clock)
    registry = MlflowRegistry.for_data_dir(platform.data, clock)
    champion = bundle(city.root / f"{name}-staging-a", city.features, city.plan_hash, constant=None)
    version = registry.register(name, champion.path, run_id=None, gate=verdict()).version
    registry.set_alias(name, "champion", version, actor="test", reason="seed", action="promote")
    return platform, clock, registry


def _trainer(registry: MlflowRegistry, name: str, bundle: Bundle):  # type: ignore[no-untyped-def]
    def train(platform: Platform, at: datetime) -> TrainResult:
        version = registry.register(name, bundle.path, run_id=None, gate=verdict()).version
        registry.set_alias(
            name, "challenger", version, actor="train", reason="gate passed", action="register"
        )
        return TrainResult(version, "challenger", True)

    return train


def _drive(
    platform: Platform,
    clock: FixedClock,
    stations: list[str],
    trainer,  # type: ignore[no-untyped-def]
    max_windows: int,
    rounds: list[int] | None = None,
) -> list[object]:
    """Serve, start the loop, then per window: traffic over the window, a cycle after it."""
    reports = []
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        control = HttpServingControl(server.url, TOKEN)
        first = run_cycle(platform, control, trainer=trainer, force_train=True)
        assert first.phase in ("shadow", "canary"), first.to_dict()
        reports.append(first)
        for window in range(max_windows):
            # four rounds over every station per two-minute window (0: a quiet window)
            n = 4 if rounds is None else rounds[window]
            began = clock.now()
            for _ in range(n):
                for station in stations:
                    r = client.post("/v1/predict", json={"entity": station})
                    assert r.status_code == 200, r.text
                clock.advance(WINDOW / n)
            clock.advance(WINDOW if n == 0 else timedelta(0))
            clock.advance(timedelta(seconds=1))
            # the prediction log reaches disk on its writer's thread
            assert wait_for_log(platform, began, n * len(stations)) >= n * len(stations)
            report = run_cycle(platform, control, trainer=trainer)
            reports.append(report)
            if report.phase == "idle":
                break
        routing = client.get("/v1/admin/routing", headers={"authorization": f"Bearer {TOKEN}"})
        reports.append(routing.json())
    return reports


@pytest.mark.slow
def test_a_constant_challenger_is_rolled_back_within_two_windows(small_city: City_) -> None:
    platform, clock, registry = _fresh(small_city, "bad")
    bad = bundle(small_city.root / "bad-staging-b", small_city.features, small_city.plan_hash,
                  constant=0.03)  # fmt: skip
    reports = _drive(platform, clock, small_city.stations, _trainer(registry, "bad", bad), 4)
    routing = reports.pop()
    cycles = reports[1:]
    analyses = [a for c in cycles for a in c.analyses]  # type: ignore[attr-defined]
    assert cycles[-1].phase == "idle", [(a.verdict, a.reason) for a in analyses]
    assert len(analyses) <= 2
    assert [a.verdict for a in analyses] == ["fail"] * len(analyses)
    shift = next(m for m in analyses[0].metrics if m.name == "prediction_shift")
    assert shift.verdict == "fail"
    assert routing["mode"] == "champion"
    assert registry.peek("bad", "challenger") is None
    assert registry.peek("bad", "champion").version == 1  # type: ignore[union-attr]
    history = registry.history("bad")
    rollback = history[-1]
    assert rollback.action == "rollback" and rollback.alias == "challenger"
    assert "automatic rollback of v2" in rollback.reason and "prediction_shift" in rollback.reason
    assert rollback.evidence["decision"]["action"] == "rollback"
    assert len(rollback.evidence["analyses"]) == len(analyses)
    stages = [e.reason.split(":")[0] for e in history if e.action == "stage"]
    assert stages[0] == "shadow"
    state = load_state(platform)
    assert state.phase == "idle" and state.last_outcome["outcome"] == "rolled_back"  # type: ignore[index]
    # the automatic moves are in the lineage too, not only in the alias history
    lineage = "".join(p.read_text() for p in sorted(platform.data.lineage.glob("*.ndjson")))
    assert "automatic rollback of v2" in lineage


@pytest.mark.slow
def test_the_champions_own_model_as_challenger_is_promoted_not_rolled_back(
    small_city: City_,
) -> None:
    platform, clock, registry = _fresh(small_city, "good")
    same = bundle(small_city.root / "good-staging-b", small_city.features, small_city.plan_hash,
                   constant=None)  # fmt: skip
    reports = _drive(platform, clock, small_city.stations, _trainer(registry, "good", same), 5)
    routing = reports.pop()
    cycles = reports[1:]
    analyses = [a for c in cycles for a in c.analyses]  # type: ignore[attr-defined]
    assert all(a.verdict == "pass" for a in analyses), [a.to_dict() for a in analyses]
    assert cycles[-1].phase == "idle"  # type: ignore[attr-defined]
    assert registry.peek("good", "champion").version == 2  # type: ignore[union-attr]
    assert routing["mode"] == "champion"
    actions = [(e.alias, e.action) for e in registry.history("good")]
    assert ("challenger", "rollback") not in actions
    assert ("champion", "promote") in actions
    promote = next(
        e for e in registry.history("good") if e.alias == "champion" and e.to_version == 2
    )
    assert promote.evidence["decision"]["passed"] == 2


@pytest.mark.slow
def test_low_traffic_pauses_the_canary_and_traffic_resumes_it(small_city: City_) -> None:
    platform, clock, registry = _fresh(small_city, "quiet")
    same = bundle(small_city.root / "quiet-staging-b", small_city.features, small_city.plan_hash,
                  constant=None)  # fmt: skip
    # shadow passes, then three silent windows (inconclusive_limit 2), then traffic again
    traffic = [4, 0, 0, 0, 4, 4, 4]
    reports = _drive(platform, clock, small_city.stations, _trainer(registry, "quiet", same),
                     len(traffic), traffic)  # fmt: skip
    reports.pop()
    cycles = reports[1:]
    verdicts = [a.verdict for c in cycles for a in c.analyses]  # type: ignore[attr-defined]
    assert verdicts[:4] == ["pass", "inconclusive", "inconclusive", "inconclusive"]
    stages = [e.reason.split(":")[0] for e in registry.history("quiet") if e.action == "stage"]
    assert stages == ["shadow", "canary", "pause", "resume"]
    # never rolled back for lack of traffic, never promoted on it: promoted once it passed
    assert registry.peek("quiet", "champion").version == 2  # type: ignore[union-attr]
    assert not any(e.action == "rollback" for e in registry.history("quiet"))


@pytest.mark.slow
def test_a_challenger_whose_answers_serving_refuses_is_rolled_back_in_canary(
    small_city: City_,
) -> None:
    """Straight to canary: its predictions (NaN) are refused with a 500, so they never reach
    the prediction log; the metrics windows' counts are charged to the challenger."""
    from dockline.core.bundle import load_bundle
    from dockline.pipeline.demo_loop import constant_bundle

    platform, clock, registry = _fresh(small_city, "refused", "shadow_windows = 0\n")
    champion = load_bundle(Path(registry.resolve("refused", "champion").bundle_path))  # type: ignore[union-attr]
    refused = constant_bundle(champion, small_city.root / "refused-staging-b", float("nan"))
    trainer = _trainer(registry, "refused", refused)
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        control = HttpServingControl(server.url, TOKEN)
        assert run_cycle(platform, control, trainer=trainer, force_train=True).phase == "canary"
        statuses: dict[int, int] = {}
        cycles = 0
        for _ in range(2):
            for _ in range(4):
                for station in small_city.stations:
                    r = client.post("/v1/predict", json={"entity": station})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                clock.advance(WINDOW / 4)
            clock.advance(timedelta(seconds=1))
            time.sleep(2.5)  # the metrics windows reach disk on the writer's next tick (≤ 1 s)
            report = run_cycle(platform, control, trainer=trainer)
            cycles += 1
            if report.phase == "idle":
                break
    assert statuses.get(500, 0) > 0  # the canary's entities were refused
    assert report.phase == "idle" and cycles == 2  # failure_limit 1: the second failure
    error = next(m for m in report.analyses[-1].metrics if m.name == "error_rate")
    assert error.verdict == "fail" and error.challenger == 1.0
    assert registry.history("refused")[-1].action == "rollback"
