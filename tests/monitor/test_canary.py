"""Canary analysis (pure): each metric at its limits, the window verdict, and the decision rules
(failure limit, inconclusive → pause, dry run, promotion, not proven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from dockline.core.config import MonitorCanaryConfig, MonitorLoopConfig
from dockline.monitor.canary import Side, WindowAnalysis, analyze_window, decide, wasserstein
from dockline.monitor.triggers import Signals, evaluate_triggers

T0 = datetime(2024, 5, 6, 12, tzinfo=UTC)
CONFIG = MonitorCanaryConfig(min_requests=50, min_labels=50)


def _side(n: int = 200, *, errors: int = 0, latency: float = 3.0, p: float = 0.3, seed: int = 0,
          labels: bool = False) -> Side:  # fmt: skip
    rng = np.random.default_rng(seed)
    probs = np.clip(rng.normal(p, 0.1, n), 0, 1)
    return Side.of(
        requests=n,
        errors=errors,
        latencies_ms=np.full(n, latency),
        probabilities=probs,
        labels=(rng.random(n) < probs).astype(float) if labels else None,
    )


def _constant(p: float, n: int = 200) -> Side:
    return Side.of(requests=n, latencies_ms=np.full(n, 3.0), probabilities=np.full(n, p))


def _analyze(champion: Side, challenger: Side, config: MonitorCanaryConfig = CONFIG,
             **kw: object) -> WindowAnalysis:  # fmt: skip
    return analyze_window(
        champion,
        challenger,
        config,
        start=T0,
        end=T0 + timedelta(minutes=5),
        **kw,  # type: ignore[arg-type]
    )


def _metric(analysis: WindowAnalysis, name: str):  # type: ignore[no-untyped-def]
    return next(m for m in analysis.metrics if m.name == name)


def test_wasserstein_is_exact() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 301), rng.normal(0.3, 2, 177)
    assert wasserstein(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert wasserstein(a, a) == 0.0


def test_the_same_model_passes_every_metric() -> None:
    analysis = _analyze(_side(seed=1), _side(seed=2))
    assert analysis.verdict == "pass", analysis.reason
    assert {m.name: m.verdict for m in analysis.metrics} == {
        "error_rate": "pass",
        "latency_p95": "pass",
        "prediction_shift": "pass",
        "prediction_spread": "pass",
        "live_brier": "inconclusive",  # no labels yet: reported, never blocks
    }


@pytest.mark.parametrize(
    ("errors", "verdict"),
    [(1, "pass"), (2, "marginal"), (4, "marginal"), (5, "fail")],  # 0.5 %, 1 %, 2 %, 2.5 % of 200
)
def test_error_rate_at_its_limits(errors: int, verdict: str) -> None:
    # warn 0.005 and fail 0.02 are strict: exactly at a limit is the lower verdict
    analysis = _analyze(_side(), _side(errors=errors))
    assert _metric(analysis, "error_rate").verdict == verdict


@pytest.mark.parametrize(
    ("latency", "verdict"),
    [(6.0, "pass"), (6.25, "pass"), (6.5, "marginal"), (10.0, "marginal"), (10.5, "fail")],
)
def test_latency_is_judged_against_the_champion_plus_slack(latency: float, verdict: str) -> None:
    # champion p95 3 ms + 2 ms slack = 5 ms: warn at 1.25 × 5 = 6.25, fail at 2 × 5 = 10
    analysis = _analyze(_side(latency=3.0), _side(latency=latency))
    assert _metric(analysis, "latency_p95").verdict == verdict


def test_latency_is_not_judged_in_shadow() -> None:
    analysis = _analyze(_side(latency=1.0), _side(latency=100.0), phase="shadow")
    assert _metric(analysis, "latency_p95").verdict == "inconclusive"
    assert analysis.verdict == "pass"


def test_a_constant_model_fails_on_prediction_shift() -> None:
    constant = Side.of(
        requests=200, latencies_ms=np.full(200, 3.0), probabilities=np.full(200, 0.9)
    )
    analysis = _analyze(_side(), constant)
    assert analysis.verdict == "fail"
    assert "prediction_shift" in analysis.reason


def test_a_constant_near_the_champions_usual_answer_fails_on_spread() -> None:
    # shift alone would call it marginal at most: the constant sits at the champion's mean
    analysis = _analyze(_side(p=0.3), _constant(0.3))
    assert _metric(analysis, "prediction_shift").verdict != "fail"
    spread = _metric(analysis, "prediction_spread")
    assert spread.verdict == "fail" and spread.score == float("inf")
    assert "prediction_spread inf > 1.099" in analysis.reason


@pytest.mark.parametrize(
    ("ratio", "verdict"), [(1.4, "pass"), (1.6, "marginal"), (2.9, "marginal"), (3.1, "fail")]
)
def test_spread_at_its_limits(ratio: float, verdict: str) -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(0, 1, 400)
    base = (base - base.mean()) / base.std()
    champion = Side.of(requests=400, probabilities=0.5 + 0.02 * base)
    challenger = Side.of(requests=400, probabilities=0.5 + 0.02 * ratio * base)
    analysis = _analyze(champion, challenger)
    assert _metric(analysis, "prediction_spread").verdict == verdict


def test_shift_reference_replaces_the_champions_own_entities() -> None:
    # canary: the champion answers other entities (lower risk); against the champion's
    # predictions for the canary's own entities the same model shows no shift
    champion_elsewhere, challenger = _side(p=0.1, seed=1), _side(p=0.5, seed=2)
    assert _analyze(champion_elsewhere, challenger).verdict == "fail"
    same_entities = _side(p=0.5, seed=3).probabilities
    assert _analyze(champion_elsewhere, challenger, shift_reference=same_entities).verdict == "pass"


def test_live_brier_decides_once_labels_land() -> None:
    good = _side(labels=True, seed=4)
    rng = np.random.default_rng(5)
    worse = Side.of(
        requests=200,
        latencies_ms=np.full(200, 3.0),
        probabilities=np.clip(good.probabilities + rng.normal(0, 0.3, 200), 0, 1),
        labels=good.labels,
    )
    analysis = _analyze(good, worse, shift_reference=good.probabilities[::-1])
    assert _metric(analysis, "live_brier").verdict == "fail"
    few = Side.of(requests=200, probabilities=worse.probabilities,
                  labels=np.where(np.arange(200) < 49, worse.labels, np.nan))  # fmt: skip
    assert _metric(_analyze(good, few), "live_brier").verdict == "inconclusive"


def test_low_traffic_is_inconclusive_not_a_pass_but_errors_still_fail() -> None:
    quiet = _analyze(_side(n=49), _side(n=200))
    assert quiet.verdict == "inconclusive" and "49 champion" in quiet.reason
    burst = _analyze(_side(n=200), _side(n=20, errors=10))
    assert burst.verdict == "fail"  # an error burst does not hide behind low traffic
    assert "significant below the minimum sample" in _metric(burst, "error_rate").detail
    one_in_three = _analyze(_side(n=200), _side(n=3, errors=1))
    assert one_in_three.verdict == "inconclusive"  # 1 of 3 is not a 33 % error rate


def test_dry_run_metrics_are_recorded_but_never_decide() -> None:
    # a constant at the champion's mean: only the spread (on probation here) would fail it
    config = CONFIG.model_copy(update={"dry_run": ("prediction_spread",)})
    analysis = _analyze(_side(p=0.3), _constant(0.3), config)
    spread = _metric(analysis, "prediction_spread")
    assert spread.verdict == "fail" and spread.dry_run
    assert analysis.verdict == "marginal"  # the shift's own verdict; the spread decided nothing
    assert "prediction_spread" not in analysis.reason
    assert _analyze(_side(p=0.3), _constant(0.3)).verdict == "fail"  # off probation, it decides


def _window(verdict: str, phase: str = "canary") -> WindowAnalysis:
    return WindowAnalysis(T0, T0, phase, verdict, 100, 100, [], verdict)  # type: ignore[arg-type]


def test_failure_limit_rolls_back_on_one_more_failure() -> None:
    config = CONFIG.model_copy(update={"failure_limit": 1})
    assert decide([_window("fail")], config, phase="canary").action == "continue"
    decision = decide([_window("fail"), _window("pass"), _window("fail")], config, phase="canary")
    assert decision.action == "rollback" and decision.failed == 2
    assert "failure_limit 1" in decision.reason


def test_inconclusive_windows_pause_and_never_promote() -> None:
    config = CONFIG.model_copy(update={"inconclusive_limit": 2, "success_windows": 2})
    windows = [_window("pass"), _window("inconclusive"), _window("inconclusive")]
    assert decide(windows, config, phase="canary").action == "continue"
    paused = decide([*windows, _window("inconclusive")], config, phase="canary")
    assert paused.action == "pause" and paused.inconclusive_run == 3
    resumed = decide([*windows, _window("inconclusive"), _window("pass")], config, phase="canary")
    assert resumed.action == "promote"  # traffic came back and the second pass arrived


def test_marginal_windows_do_not_count_towards_promotion_and_max_windows_rolls_back() -> None:
    config = CONFIG.model_copy(update={"success_windows": 2, "max_windows": 4})
    windows = [_window("marginal"), _window("pass"), _window("marginal")]
    assert decide(windows, config, phase="canary").action == "continue"
    unproven = decide([*windows, _window("marginal")], config, phase="canary")
    assert unproven.action == "rollback" and "not proven" in unproven.reason


def test_shadow_advances_after_its_windows_and_failures_carry_over() -> None:
    config = CONFIG.model_copy(update={"shadow_windows": 1, "failure_limit": 1})
    shadow = [_window("fail", "shadow")]
    assert decide(shadow, config, phase="shadow").action == "advance"
    assert decide([*shadow, _window("fail")], config, phase="canary").action == "rollback"


# ---------------------------------------------------------------------------------- triggers

LOOP = MonitorLoopConfig(min_labels=100, stale_model=timedelta(days=7))


def test_nothing_measured_triggers_nothing() -> None:
    decision = evaluate_triggers(Signals(at=T0), LOOP)
    assert not decision.retrain
    assert all(not t.measured for t in decision.triggers)


def test_each_trigger_fires_with_its_reason() -> None:
    drift = evaluate_triggers(Signals(at=T0, drift=True, drifted_features=("a",)), LOOP)
    assert drift.retrain and drift.reasons == ["dataset-level drift (a)"]
    perf = Signals(at=T0, live_pr_auc=0.3, labelled=100, reference_pr_auc=0.31)
    assert evaluate_triggers(perf, LOOP).reasons[0].startswith("live pr_auc 0.3000 < the gate")
    few = Signals(at=T0, live_pr_auc=0.3, labelled=99, reference_pr_auc=0.31)
    assert not evaluate_triggers(few, LOOP).retrain
    at_bar = Signals(at=T0, live_pr_auc=0.31, labelled=100, reference_pr_auc=0.31)
    assert not evaluate_triggers(at_bar, LOOP).retrain
    week = timedelta(days=7)
    assert not evaluate_triggers(Signals(at=T0, training_data_end=T0 - week), LOOP).retrain
    stale = Signals(at=T0, training_data_end=T0 - week - timedelta(seconds=1))
    assert evaluate_triggers(stale, LOOP).reasons[0].startswith("champion's training data is")
    hourly = LOOP.model_copy(update={"schedule": timedelta(hours=1)})
    due = Signals(at=T0, last_trained=T0 - timedelta(hours=1))
    assert evaluate_triggers(due, hourly).retrain
    early = Signals(at=T0, last_trained=T0 - timedelta(minutes=59))
    assert not evaluate_triggers(early, hourly).retrain
