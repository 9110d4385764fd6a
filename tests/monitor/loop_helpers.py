"""Bundles for the loop tests: a seeded logistic regression, or one that answers a constant."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bundles import gate_verdict, logistic_bundle
from dockline.core.bundle import Bundle
from dockline.core.contracts import GateVerdict

TOKEN = "loop-test-token"


def verdict() -> GateVerdict:
    return gate_verdict()


def bundle(
    root: Path,
    features: list[str],
    plan_hash: str,
    *,
    constant: float | None,
    shuffle: bool = False,
    scale: float = 1.0,
) -> Bundle:
    """A logistic regression over ``features`` (seeded, so the same every time) as a real
    bundle; ``constant`` zeroes its weights so it answers that probability for everything;
    ``shuffle`` fits it on shuffled labels (no signal left); ``scale`` multiplies its weights
    (a retrain that moved a little: 1.02; negative: a model that learned the opposite)."""
    tag = f"constant{constant}" if constant is not None else f"model-{shuffle}-{scale}"
    return logistic_bundle(
        root,
        features,
        seed=0,
        rows=400,
        plan_hash=plan_hash,
        project="loop-tests",
        dataset_name=f"loop-{tag}",
        dataset_hash="0" * 64,
        train_start=datetime(2024, 4, 1, tzinfo=UTC),
        test_end=datetime(2024, 4, 30, tzinfo=UTC),
        coef_divisor=20.0,  # raw feature scales: keep the probabilities spread
        scale=scale,
        constant=constant,
        shuffle=shuffle,
    )
