"""`dockline decide run` over real HTTP against the simulated city's feed and truck API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from dockline.cli._decide import decide_app
from dockline.core.time import FixedClock
from dockline.decide.audit import DecisionLog
from dockline.sim import City, CityConfig, FaultConfig, SimServer
from dockline.sim.fleet import Fleet

START = datetime(2024, 5, 6, 13, tzinfo=UTC)  # Monday 08:00 in Chicago: the morning peak


@pytest.fixture
def sim() -> Iterator[tuple[SimServer, FixedClock]]:
    city = City(
        CityConfig(stations=80, seed=5, start=START, faults=FaultConfig(negative_count=0.05))
    )
    city.run(60)  # let the peak empty a few stations
    clock = FixedClock(city.time)
    with SimServer(city, clock=clock, fleet=Fleet(city, trucks=3)) as server:
        yield server, clock


def run(tmp_path: Path, server: SimServer, *extra: str) -> dict[str, object]:
    args = ["run", "--once", "--sim-url", server.url, "--data-dir", str(tmp_path), "--json"]
    result = CliRunner().invoke(decide_app, [*args, *extra])
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = orjson.loads(result.stdout)
    return payload


def test_one_cycle_decides_logs_and_moves_trucks(
    tmp_path: Path, sim: tuple[SimServer, FixedClock]
) -> None:
    server, clock = sim
    before = server.city.total_bikes()
    out = run(tmp_path, server, "--policy", "reactive")
    decision = out["decision"]
    assert isinstance(decision, dict) and decision["policy"] == "reactive"
    actions = decision["actions"]
    assert actions, "a morning-peak city has empty stations and idle trucks"
    applied = out["applied"]
    assert isinstance(applied, dict) and applied["accepted"] == len(actions)
    assert server.fleet.accepted == len(actions)
    injected = server.counts.to_dict()["faults"]
    assert isinstance(injected, dict) and injected.get("negative_count", 0) > 0
    assert out["stations_rejected"] == injected["negative_count"], "faulty records are counted"
    assert out["logged"] == 1
    (logged,) = DecisionLog(tmp_path / "decisions").read()
    assert logged.decision_id == decision["decision_id"]
    # The next cycle: the trucks are busy, and the day budget counts the logged moves.
    clock.advance(timedelta(minutes=15))
    second = run(tmp_path, server, "--policy", "reactive")["decision"]
    assert isinstance(second, dict)
    busy = [a for a in second["actions"] if a["truck_id"] in {x["truck_id"] for x in actions}]
    assert busy == [], "a truck still on its move gets no new one"
    clock.advance(timedelta(hours=3))
    server.stats()  # the city catches up
    assert server.city.total_bikes() == before


def test_predictive_without_a_serving_api_falls_back_and_says_so(
    tmp_path: Path, sim: tuple[SimServer, FixedClock]
) -> None:
    server, _ = sim
    decision = run(tmp_path, server, "--policy", "predictive", "--dry-run")["decision"]
    assert isinstance(decision, dict)
    assert decision["health_gate"] == "fallback"
    assert "predictions_missing" in decision["reasons"]
    assert server.fleet.accepted == 0, "--dry-run sends nothing"


def test_bad_options_and_an_unreachable_sim_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(decide_app, ["run", "--once", "--follow", "--data-dir", str(tmp_path)])
    assert both.exit_code != 0 and "exactly one" in str(both.exception)
    gone = runner.invoke(
        decide_app,
        ["run", "--once", "--sim-url", "http://127.0.0.1:9", "--data-dir", str(tmp_path)],
    )
    assert gone.exit_code != 0 and getattr(gone.exception, "reason", None) == "unreachable"


def test_follow_runs_a_cycle_every_simulated_cycle(tmp_path: Path) -> None:
    city = City(CityConfig(stations=60, seed=2, start=START))
    with SimServer(city, speed=3600.0, fleet=Fleet(city, trucks=2)) as server:  # 1 s = 1 sim hour
        args = ["run", "--follow", "--cycles", "2", "--policy", "reactive", "--sim-url"]
        args += [server.url, "--data-dir", str(tmp_path), "--json"]
        result = CliRunner().invoke(decide_app, args)
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2
    first, second = (datetime.fromisoformat(x["decision"]["cycle_time"]) for x in lines)
    assert second - first >= timedelta(minutes=15)
    assert len(DecisionLog(tmp_path / "decisions").read()) == 2
