"""``[serve] precision = "int8"``: served from the bundle's INT8 variant when its parity gate
passed, refused with a clear reason otherwise (issue 16 §4)."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import MODEL_FEATURES, T0, ServeFactory, World, vector

from dockline.core.bundle import (
    INT8_FILE,
    Bundle,
    BundleScorer,
    Calibration,
    Lineage,
    ThresholdChoice,
)
from dockline.train.candidates import TRAINED
from dockline.train.export import build_bundle


def _int8_bundle(root: Path) -> Bundle:
    """The product's logistic candidate on the serving tests' features, built with INT8."""
    rng = np.random.default_rng(3)
    n = 3000
    x = np.column_stack(
        [
            rng.normal(size=(n, 3)),
            rng.integers(0, 24, n),
            rng.integers(0, 7, n),
        ]
    ).astype(np.float32)
    y = (x[:, 0] - 0.7 * x[:, 1] + 0.05 * x[:, 3] + rng.normal(size=n) > 0.8).astype(np.int64)
    model = TRAINED["logistic"].make({}, 0).fit(x[:2000], y[:2000])
    return build_bundle(
        root,
        estimator=model,
        features=MODEL_FEATURES,
        x_test=x[2000:],
        x_train=x[:2000],
        train_scores=None,
        project="serve-tests",
        model_name="int8m",
        label="y",
        candidate="logistic",
        params={},
        calibration=Calibration(method="none"),
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.6, recall=0.5
        ),
        lineage=Lineage(
            dataset_name="serve-int8",
            dataset_hash="3" * 64,
            plan_hash="1" * 64,
            config_hash="2" * 64,
            code_version="0.1.0",
            seed=0,
        ),
        metrics={},
        train_start=T0.replace(month=4),
        test_end=T0.replace(day=1),
        tolerance=1e-5,
        int8=(0.04, 0.01),
    )


def _row(entity: str) -> np.ndarray:
    values = vector(entity)
    return np.array(
        [[math.nan if values[f] is None else values[f] for f in MODEL_FEATURES]], np.float32
    )


def test_int8_serving_refuses_a_bundle_without_a_passing_variant(serve: ServeFactory) -> None:
    server, _ = serve(precision="int8")  # "main" was built without quantization
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 503 and ready.json()["reason"] == "int8_unavailable"
    r = httpx.post(f"{server.url}/v1/predict", json={"entity": "s001"})
    assert r.status_code == 503
    body = r.json()
    assert body["reason"] == "int8_unavailable"
    assert "without quantization" in body["message"], body


def test_int8_serving_scores_with_the_int8_variant(world: World, serve: ServeFactory) -> None:
    bundle = _int8_bundle(world.staging)
    assert bundle.manifest.int8 is not None and bundle.manifest.int8.status == "passed"
    assert INT8_FILE in bundle.manifest.lineage.files
    version = world.register("int8m", bundle)
    world.promote("int8m", version)
    int8, _ = serve(model="int8m", precision="int8")
    fp32, _ = serve(model="int8m")
    expected8 = BundleScorer(bundle, precision="int8")
    expected32 = BundleScorer(bundle)
    differs = 0
    for entity in ("s001", "s002", "s003", "s004"):
        got8 = httpx.post(f"{int8.url}/v1/predict", json={"entity": entity}).json()
        got32 = httpx.post(f"{fp32.url}/v1/predict", json={"entity": entity}).json()
        p8 = float(expected8.score(_row(entity))[0])
        p32 = float(expected32.score(_row(entity))[0])
        assert got8["probability"] == pytest.approx(p8, abs=1e-9)
        assert got32["probability"] == pytest.approx(p32, abs=1e-9)
        assert abs(p8 - p32) <= 0.04
        differs += p8 != p32
    assert differs  # the INT8 answers really come from another model
    assert httpx.get(f"{int8.url}/ready").json()["checks"]["model"]["ok"]
