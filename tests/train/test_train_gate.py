"""The promotion gate: strict improvement by the margin over baselines and champion, ECE bound."""

from __future__ import annotations

import pytest

from dockline.core.config import TrainConfig
from dockline.core.contracts import GateVerdict
from dockline.core.errors import ValidationError
from dockline.train.gate import HIGHER_IS_BETTER, evaluate_gate

BASELINES = {"persistence": 0.30, "hour_of_week": 0.35}


def _gate(
    value: float,
    *,
    baselines: dict[str, float] | None = None,
    champion: tuple[int, float] | None = None,
    ece: float = 0.01,
    metric: str = "pr_auc",
    margin: float = 0.0,
    max_ece: float = 0.05,
) -> GateVerdict:
    return evaluate_gate(
        metric,
        HIGHER_IS_BETTER[metric],
        value,
        BASELINES if baselines is None else baselines,
        champion,
        ece,
        TrainConfig(gate_margin=margin, max_ece=max_ece),
    )


def test_passes_when_every_condition_holds() -> None:
    verdict = _gate(0.40, champion=(3, 0.38))
    assert verdict.passed
    assert verdict.reasons == []
    assert (verdict.champion_version, verdict.champion_value) == (3, 0.38)
    assert verdict.baselines == BASELINES
    assert (verdict.value, verdict.ece, verdict.max_ece, verdict.margin) == (0.40, 0.01, 0.05, 0.0)


def test_fails_against_each_baseline_with_a_reason_each() -> None:
    verdict = _gate(0.20)
    assert not verdict.passed
    assert len(verdict.reasons) == 2
    assert "baseline hour_of_week 0.35" in verdict.reasons[0]
    assert "baseline persistence 0.3" in verdict.reasons[1]
    assert "higher is better" in verdict.reasons[0]


def test_beating_one_baseline_is_not_enough() -> None:
    verdict = _gate(0.32)
    assert not verdict.passed
    assert [r for r in verdict.reasons if "hour_of_week" in r]
    assert not [r for r in verdict.reasons if "persistence" in r]


def test_a_tie_never_beats_even_with_zero_margin() -> None:
    assert not _gate(0.35).passed
    assert not _gate(0.40, champion=(1, 0.40)).passed
    assert "champion v1 0.4" in _gate(0.40, champion=(1, 0.40)).reasons[0]


def test_margin_is_inclusive_and_tolerates_float_rounding() -> None:
    # 0.45 − 0.35 is 0.09999999999999998 in floats; it must count as beating by 0.1.
    assert _gate(0.45, margin=0.1).passed
    assert not _gate(0.4499, margin=0.1).passed
    verdict = _gate(0.44, champion=(2, 0.36), margin=0.1)
    assert not verdict.passed
    assert all("by at least 0.1" in r for r in verdict.reasons)
    assert len(verdict.reasons) == 2  # hour_of_week and the champion; persistence is beaten


def test_lower_is_better_metrics() -> None:
    baselines = {"persistence": 0.20, "hour_of_week": 0.18}
    assert _gate(0.15, baselines=baselines, metric="brier", champion=(1, 0.16)).passed
    worse = _gate(0.19, baselines=baselines, metric="brier")
    assert not worse.passed
    assert worse.reasons == [
        "brier 0.19 does not beat baseline hour_of_week 0.18 (lower is better)"
    ]
    assert not worse.higher_is_better
    assert not _gate(0.15, baselines=baselines, metric="log_loss", champion=(4, 0.15)).passed
    assert _gate(0.12, baselines=baselines, metric="brier", margin=0.05).passed
    assert not _gate(0.14, baselines=baselines, metric="brier", margin=0.05).passed


def test_calibration_bound() -> None:
    assert _gate(0.5, ece=0.05).passed  # at the bound is within it
    verdict = _gate(0.5, ece=0.08)
    assert not verdict.passed
    assert verdict.reasons == ["calibration error (ECE) 0.08 exceeds the bound 0.05"]
    assert _gate(0.5, ece=0.08, max_ece=0.1).passed


def test_every_failure_is_listed_together() -> None:
    verdict = _gate(0.1, champion=(7, 0.9), ece=0.5)
    assert len(verdict.reasons) == 4


def test_no_baselines_fails() -> None:
    verdict = _gate(0.9, baselines={})
    assert not verdict.passed
    assert "no baseline" in verdict.reasons[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"value": float("nan")},
        {"value": 0.5, "ece": float("nan")},
        {"value": 0.5, "baselines": {"persistence": float("nan")}},
        {"value": 0.5, "champion": (1, float("inf"))},
    ],
)
def test_non_finite_inputs_are_refused(kwargs: dict[str, object]) -> None:
    value = kwargs.pop("value")
    with pytest.raises(ValidationError, match="finite"):
        _gate(value, **kwargs)  # type: ignore[arg-type]


def test_verdict_round_trips_as_json() -> None:
    verdict = _gate(0.1, champion=(7, 0.9), ece=0.5)
    assert GateVerdict.model_validate_json(verdict.model_dump_json()) == verdict
