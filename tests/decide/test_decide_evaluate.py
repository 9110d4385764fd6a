"""Scoring in the simulator: KPIs, budgets, determinism, `dockline decide evaluate`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from dockline.cli._decide import decide_app
from dockline.core.decisions import Decision, encode
from dockline.decide.scoring import OutageCounter, summarize
from dockline.pipeline.decide import EvalConfig, run_policy

MORNING = datetime(2024, 5, 6, 10, tzinfo=UTC)  # Monday 05:00 in Chicago, an hour before service


def test_outage_minutes_count_beyond_the_grace_inside_the_window() -> None:
    counter = OutageCounter(3, grace=10)
    empty = np.array([True, True, False])
    full = np.array([False, False, True])
    for minute in range(25):
        counter.update(empty if minute < 12 else ~empty, full, in_window=minute >= 5)
    # station 0 and 1: empty 12 min → minutes 11 and 12 beyond the grace (both in the window);
    # station 2: full 25 min → minutes 11..25 = 15; after minute 12 station 2's mask flips to
    # "empty" too (~empty) so it keeps a streak of empty as well: minutes 11..13 of that = 3.
    assert counter.outage_minutes == 2 * 2 + 15 + 3
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["low"] < 2.0 < s["high"]
    assert summarize([5.0]) == {"mean": 5.0, "low": 5.0, "high": 5.0}


@pytest.mark.parametrize("policy", ["reactive", "predictive", "oracle"])
def test_a_run_respects_the_day_budget_and_is_deterministic(policy: str) -> None:
    config = EvalConfig(stations=60, days=0.2, seeds=1, trucks=3, moves_per_day=5, start=MORNING)
    seen: list[Decision] = []
    kpis, curve = run_policy(policy, 4, config, on_decision=seen.append)  # type: ignore[arg-type]
    assert 0 < kpis["moves"] <= 5
    assert sum(len(d.actions) for d in seen) <= 5
    assert curve.shape == (288,)
    again: list[Decision] = []
    assert run_policy(policy, 4, config, on_decision=again.append)[0] == kpis  # type: ignore[arg-type]
    assert [encode(d) for d in again] == [encode(d) for d in seen]
    if policy == "predictive":
        acted = [d for d in seen if d.actions]
        assert acted and all(d.model_versions == ("poisson-rates:sim-rates",) for d in acted)


def test_none_is_the_same_city_whoever_runs_it() -> None:
    config = EvalConfig(stations=60, days=0.2, seeds=1, start=MORNING)
    a, _ = run_policy("none", 9, config)
    b, _ = run_policy("none", 9, config)
    assert a == b and a["moves"] == 0 and a["empty_minutes"] > 0


def test_evaluate_cli_json_and_report(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["evaluate", "--days", "0.3", "--seeds", "2", "--stations", "40", "--trucks", "2"]
    args += ["--moves-per-day", "8", "--data-dir", str(tmp_path), "--json"]
    result = runner.invoke(decide_app, args)
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.stdout)
    policies = payload["policies"]
    assert sorted(policies) == ["none", "oracle", "predictive", "reactive"]
    for name in ("empty_minutes", "full_minutes", "outage_minutes", "failed_rentals", "truck_km"):
        assert all(name in m and f"{name}_low" in m for m in policies.values())
    assert policies["none"]["moves"] == 0 and policies["oracle"]["moves"] > 0
    assert "reduction_vs_none" in policies["predictive"]
    assert "share_of_oracle_gain" in policies["predictive"]
    assert payload["config"]["seeds"] == [0, 1] and payload["config"]["trucks"] == 2
    report = Path(payload["report"])
    text = report.read_text()
    assert "<img" in text and "poisson-rates" in text
    bad = runner.invoke(decide_app, ["evaluate", "--policies", "greedy", "--data-dir", "x"])
    assert bad.exit_code != 0


def test_the_zone_rates_forecaster_knows_less_and_says_so() -> None:
    from dockline.core.errors import ConfigError
    from dockline.pipeline.decide import sim_predictions
    from dockline.sim import City, CityConfig

    city = City(CityConfig(stations=80, seed=1, start=MORNING))
    city.run(120)
    sharp = sim_predictions(city, 60, "sim-rates")
    blunt = sim_predictions(city, 60, "zone-rates")
    assert {p.model_version for p in blunt} == {"poisson-rates:zone-rates"}
    nets = {p.expected_net for p in blunt}
    assert len(nets) <= 3 < len({p.expected_net for p in sharp}), "one rate pair per zone"
    with pytest.raises(ConfigError, match="forecaster"):
        EvalConfig(forecaster="crystal-ball")
    # risks only (what the trained classifiers give): the same risks, no net flow, and it says so
    bare = sim_predictions(city, 60, "sim-rates", expected_net=False)
    assert [(p.p_empty, p.p_full) for p in bare] == [(p.p_empty, p.p_full) for p in sharp]
    assert {p.expected_net for p in bare} == {None}
    assert {p.model_version for p in bare} == {"poisson-rates:sim-rates:no-net"}


def test_the_decide_sections_service_hours_reach_the_evaluation() -> None:
    from dockline.core.config import DecideConfig
    from dockline.pipeline.decide import eval_config_from

    late = eval_config_from(
        DecideConfig(service_start_hour=20), stations=60, days=0.2, seeds=1, start=MORNING
    )
    assert late.constraints.service_start_hour == 20 and late.constraints.moves_per_day == 192
    kpis, _ = run_policy("reactive", 4, late)
    assert kpis["moves"] == 0, "05:00-09:48 is outside 20:00-22:00"
    assert kpis["outage_minutes"] > 0, "the outage KPI keeps the contract's 06:00-22:00"
