"""The promotion gate: may a candidate become champion?

It must beat every baseline and the current champion on the test window's primary metric by at
least ``TrainConfig.gate_margin``, and its expected calibration error must be within
``TrainConfig.max_ece``. The verdict lists each failed condition in words and is stored with the
registered version, so a refused promotion explains itself.

Given the slice table (:mod:`dockline.train.slices`), the verdict also lists the test slices
where the candidate trails persistence (``slice_flags``). Under ``[train.slices] on_flag =
"warn"`` (the default) each is a warning: a model better overall may still be the right one to
ship, but nobody should promote it without seeing where it is worse. ``on_flag = "fail"``
makes each a failed condition.

>>> from dockline.core.config import TrainConfig
>>> v = evaluate_gate("pr_auc", True, 0.42, {"persistence": 0.30}, None, 0.02, TrainConfig())
>>> v.passed, v.reasons
(True, [])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dockline.core.config import TrainConfig
from dockline.core.contracts import GateVerdict
from dockline.core.errors import ValidationError
from dockline.train.slices import flagged_slices, slice_counts

__all__ = ["HIGHER_IS_BETTER", "MAX_SLICE_FLAGS", "MAX_SLICE_LINES", "evaluate_gate"]

HIGHER_IS_BETTER: dict[str, bool] = {
    "pr_auc": True,
    "roc_auc": True,
    "brier": False,
    "log_loss": False,
}
"""Direction of each primary metric ``TrainConfig`` allows."""

MAX_SLICE_FLAGS = 20
"""At most this many flagged slices are kept in the verdict (the worst); the count is exact."""
MAX_SLICE_LINES = 5
"""At most this many flagged slices are spelled out in the verdict's warnings or reasons."""

_SLACK = 1e-12
"""Float slack on the margin: 0.3 − 0.2 is 0.0999…, and must count as beating by 0.1."""


def _finite(label: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValidationError(
            f"{label} must be a finite number; got {value}", reason="bad_value", where="gate"
        )


def _improvement(candidate: float, other: float, higher_is_better: bool) -> float:
    return candidate - other if higher_is_better else other - candidate


def _beats(improvement: float, margin: float) -> bool:
    # A tie never beats, even with a zero margin: the candidate must be strictly better.
    return improvement > 0 and improvement >= margin - _SLACK


def evaluate_gate(
    primary_metric: str,
    higher_is_better: bool,
    candidate_value: float,
    baselines: Mapping[str, float],
    champion: tuple[int, float] | None,
    ece: float,
    config: TrainConfig,
    *,
    slices: Mapping[str, Any] | None = None,
) -> GateVerdict:
    """The gate's verdict on a candidate (pure: no I/O).

    Passes only if, on ``primary_metric``, the candidate is strictly better than every baseline
    and the champion (``(version, value)``, None when there is none) by at least
    ``config.gate_margin``, and ``ece <= config.max_ece``. No baselines at all fails: a gate
    that compared nothing proves nothing. Non-finite inputs are refused
    (:class:`~dockline.core.errors.ValidationError`): a metric that could not be computed must
    be fixed, not silently passed or failed. ``slices`` (a :func:`~dockline.train.slices.
    compare_slices` table) adds the flagged slices as warnings or, with ``on_flag = "fail"``,
    reasons.
    """
    margin = config.gate_margin
    _finite(f"candidate {primary_metric}", candidate_value)
    _finite("ECE", ece)
    for name, value in baselines.items():
        _finite(f"baseline {name} {primary_metric}", value)
    if champion is not None:
        _finite(f"champion v{champion[0]} {primary_metric}", champion[1])

    direction = "higher" if higher_is_better else "lower"
    need = (
        f"by at least {margin:.4g} ({direction} is better)"
        if margin
        else f"({direction} is better)"
    )
    reasons: list[str] = []
    if not baselines:
        reasons.append("no baseline was evaluated; the gate needs at least one to compare")
    for name, value in sorted(baselines.items()):
        if not _beats(_improvement(candidate_value, value, higher_is_better), margin):
            reasons.append(
                f"{primary_metric} {candidate_value:.4g} does not beat baseline {name}"
                f" {value:.4g} {need}"
            )
    if champion is not None:
        version, value = champion
        if not _beats(_improvement(candidate_value, value, higher_is_better), margin):
            reasons.append(
                f"{primary_metric} {candidate_value:.4g} does not beat champion v{version}"
                f" {value:.4g} {need}"
            )
    if ece > config.max_ece:
        reasons.append(f"calibration error (ECE) {ece:.4g} exceeds the bound {config.max_ece:.4g}")
    policy = config.slices.on_flag
    flags = flagged_slices(slices) if slices is not None else []
    judged, inconclusive = slice_counts(slices) if slices is not None else (0, 0)
    # Worst first, and bounded: the verdict is stored as an MLflow tag (at most 8,000
    # characters); the report holds every slice.
    flags.sort(key=lambda f: _improvement(f.candidate, f.persistence, HIGHER_IS_BETTER[f.metric]))
    kept = flags[:MAX_SLICE_FLAGS]
    rule = f" (tolerance {config.slices.tolerance:g}; [train.slices] on_flag = {policy})"
    lines = [f.describe() + rule for f in kept[:MAX_SLICE_LINES]]
    if len(flags) > len(lines):
        lines.append(
            f"and {len(flags) - len(lines)} more slices worse than persistence (see report.html)"
        )
    warnings: list[str] = []
    (reasons if policy == "fail" else warnings).extend(lines)
    return GateVerdict(
        passed=not reasons,
        primary_metric=primary_metric,
        higher_is_better=higher_is_better,
        value=candidate_value,
        margin=margin,
        baselines=dict(baselines),
        champion_version=None if champion is None else champion[0],
        champion_value=None if champion is None else champion[1],
        ece=ece,
        max_ece=config.max_ece,
        reasons=reasons,
        warnings=warnings,
        slice_flags=kept,
        slices_flagged=len(flags),
        slice_policy=policy,
        slices_judged=judged,
        slices_inconclusive=inconclusive,
    )
