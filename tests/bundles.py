"""Real bundles for tests that need a model but not training: a seeded logistic regression on
synthetic data, exported to ONNX (zipmap off) and written like every bundle (hashed files)."""

from __future__ import annotations

from datetime import datetime
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

__all__ = ["gate_verdict", "logistic_bundle"]


def gate_verdict() -> GateVerdict:
    """A passing gate verdict, for registering a test bundle."""
    return GateVerdict(
        passed=True, primary_metric="pr_auc", higher_is_better=True, value=0.5, margin=0.0,
        ece=0.01, max_ece=0.05,
    )  # fmt: skip


def logistic_bundle(
    root: Path,
    features: list[str],
    *,
    seed: int,
    rows: int,
    plan_hash: str,
    project: str,
    dataset_name: str,
    dataset_hash: str,
    train_start: datetime,
    test_end: datetime,
    coef_divisor: float | None = None,
    scale: float = 1.0,
    constant: float | None = None,
    shuffle: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> Bundle:
    """A logistic regression over ``features`` fitted on ``rows`` seeded synthetic rows.

    ``coef_divisor`` divides its weights (then ``scale`` multiplies them) to keep probabilities
    spread on raw feature scales; ``constant`` zeroes the weights so it answers that probability
    for everything; ``shuffle`` fits it on shuffled labels (no signal left).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(features))).astype(np.float32)
    y = (x @ rng.normal(size=len(features)) + rng.normal(scale=0.5, size=rows)) > 0
    if shuffle:
        y = rng.permutation(y)
    model = LogisticRegression().fit(x, y)
    if coef_divisor is not None:
        model.coef_ = model.coef_ / coef_divisor * scale
    if constant is not None:
        model.coef_ = np.zeros_like(model.coef_)
        model.intercept_ = np.array([np.log(constant / (1 - constant))])
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    manifest = BundleManifest(
        project=project,
        model_name="m",
        label="y",
        candidate="logistic",
        features=features,
        onnx=OnnxSpec(input_name="X", output_name="probabilities", opset=17),
        calibration=Calibration(method="none"),
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.6, recall=0.5
        ),
        parity=ParityReport(rows=rows, max_abs_diff=1e-7, tolerance=1e-5, passed=True),
        lineage=Lineage(
            dataset_name=dataset_name,
            dataset_hash=dataset_hash,
            plan_hash=plan_hash,
            config_hash="2" * 64,
            code_version="0.1.0",
            seed=seed,
        ),
        train_start=train_start,
        test_end=test_end,
    )
    drift = DriftBaseline(
        features=[FeatureBaseline(name=n, count=rows, null_fraction=0) for n in features]
    )
    files = {"model.onnx": onx.SerializeToString(), **(extra_files or {})}
    return write_bundle(root, manifest, files, drift)
