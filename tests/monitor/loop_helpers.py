"""Bundles for the loop tests: a seeded logistic regression, or one that answers a constant."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from dockline.core.bundle import (
    Bundle,
    BundleManifest,
    Calibration,
    DriftBaseline,
    FeatureBaseline,
    Lineage,
    OnnxSpec,
    ParityReport,
    ThresholdChoice,
    write_bundle,
)
from dockline.core.contracts import GateVerdict

TOKEN = "loop-test-token"


def verdict() -> GateVerdict:
    return GateVerdict(
        passed=True, primary_metric="pr_auc", higher_is_better=True, value=0.5, margin=0.0,
        ece=0.01, max_ece=0.05,
    )  # fmt: skip


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
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(features))).astype(np.float32)
    y = (x @ rng.normal(size=len(features)) + rng.normal(scale=0.5, size=400)) > 0
    if shuffle:
        y = rng.permutation(y)
    model = LogisticRegression().fit(x, y)
    model.coef_ = model.coef_ / 20.0 * scale  # raw feature scales: keep the probabilities spread
    if constant is not None:
        model.coef_ = np.zeros_like(model.coef_)
        model.intercept_ = np.array([np.log(constant / (1 - constant))])
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    tag = f"constant{constant}" if constant is not None else f"model-{shuffle}-{scale}"
    manifest = BundleManifest(
        project="loop-tests",
        model_name="m",
        label="y",
        candidate="logistic",
        features=features,
        onnx=OnnxSpec(input_name="X", output_name="probabilities", opset=17),
        calibration=Calibration(method="none"),
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.6, recall=0.5
        ),
        parity=ParityReport(rows=400, max_abs_diff=1e-7, tolerance=1e-5, passed=True),
        lineage=Lineage(
            dataset_name=f"loop-{tag}",
            dataset_hash="0" * 64,
            plan_hash=plan_hash,
            config_hash="2" * 64,
            code_version="0.1.0",
            seed=0,
        ),
        train_start=datetime(2024, 4, 1, tzinfo=UTC),
        test_end=datetime(2024, 4, 30, tzinfo=UTC),
    )
    drift = DriftBaseline(
        features=[FeatureBaseline(name=n, count=400, null_fraction=0) for n in features]
    )
    return write_bundle(root, manifest, {"model.onnx": onx.SerializeToString()}, drift)
