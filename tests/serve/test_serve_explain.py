"""``?explain=true`` over real HTTP: per candidate kind, refusals, unchanged plain answers.

Bundles of every trained candidate kind are built by training's own ``build_bundle`` (so they
carry ``explain.json``), registered in the shared MLflow registry and served from the shared
online store; the fitted estimators stay in the test to give the reference raw scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from serve_helpers import (
    FRESH,
    HOUR_OF_WEEK,
    MODEL_FEATURES,
    STALE,
    T0,
    ServeFactory,
    World,
    vector,
)

from dockline.core.bundle import Bundle, Calibration, Lineage, ThresholdChoice, apply_calibration
from dockline.core.config import TrainConfig
from dockline.core.explain import EXPLAIN_FILE
from dockline.train.candidates import TRAINED
from dockline.train.export import HourOfWeekRates, build_bundle

KINDS = ["logistic", "lightgbm", "extra_trees"]
SMALL: dict[str, dict[str, Any]] = {
    "logistic": {},
    "lightgbm": {"n_estimators": 30, "num_leaves": 15, "min_child_samples": 10},
    "extra_trees": {"n_estimators": 10, "max_depth": 6, "min_samples_leaf": 5},
}
CALIBRATION = Calibration(method="platt", a=1.2, b=-0.1)
PLAIN_KEYS = {
    "request_id",
    "entity",
    "probability",
    "label",
    "threshold",
    "status",
    "reason",
    "source",
    "model",
    "as_of",
    "age_s",
    "latency_ms",
}


def _training(seed: int = 0, n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(size=(n, 3)),
            rng.integers(0, 24, n),  # hour_of_day
            rng.integers(0, 7, n),  # day_of_week
        ]
    ).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.1 * (x[:, 3] - 12) / 6 + rng.normal(size=n) > 0.3).astype(int)
    x[:, 1][rng.random(n) < 0.1] = np.nan  # f1 is null for some stored vectors too
    return x, y


def _bundle(world: World, kind: str, estimator: Any, x: np.ndarray) -> Bundle:
    return build_bundle(
        world.staging / "explain",
        estimator=estimator,
        features=MODEL_FEATURES,
        x_test=x[600:],
        x_train=x[:600],
        train_scores=None,
        project="serve-tests",
        model_name=f"explain-{kind}",
        label="y",
        candidate=kind,
        params=SMALL[kind],
        calibration=CALIBRATION,
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.6, recall=0.5
        ),
        lineage=Lineage(
            dataset_name="serve-test-set",
            dataset_hash="3" * 64,
            plan_hash="1" * 64,
            config_hash="2" * 64,
            code_version="0.1.0",
            seed=0,
        ),
        metrics={},
        train_start=T0 - timedelta(days=30),
        test_end=T0 - timedelta(days=1),
        tolerance=TrainConfig().parity_tolerance,
        hour_of_week=HourOfWeekRates(global_rate=0.25, hour_of_week=HOUR_OF_WEEK),
    )


@pytest.fixture(scope="module")
def explained(world: World) -> dict[str, tuple[str, Any, Bundle]]:
    """Per kind: (registered model name, fitted estimator, bundle), promoted to champion."""
    x, y = _training()
    out = {}
    for kind in KINDS:
        estimator = TRAINED[kind].make(SMALL[kind], seed=0).fit(x[:600], y[:600])
        bundle = _bundle(world, kind, estimator, x)
        name = f"explain-{kind}"
        world.promote(name, world.register(name, bundle))
        out[kind] = (name, estimator, bundle)
    return out


def _row(entity: str) -> np.ndarray:
    values = vector(entity)
    return np.array(
        [[math.nan if values[f] is None else values[f] for f in MODEL_FEATURES]], np.float32
    )


def _native_raw(kind: str, estimator: Any, x: np.ndarray) -> float:
    if kind == "logistic":
        return float(estimator.decision_function(x.astype(np.float64))[0])
    if kind == "lightgbm":
        return float(estimator.booster_.predict(x, raw_score=True)[0])
    return float(estimator.predict_proba(x)[0, 1])


def _check(kind: str, estimator: Any, entity: str, body: dict[str, Any]) -> None:
    contributions = body["contributions"]
    assert list(contributions) == MODEL_FEATURES
    total = body["base_value"] + sum(contributions.values())
    assert total == pytest.approx(body["raw_score"], abs=1e-9)
    assert body["raw_score"] == pytest.approx(_native_raw(kind, estimator, _row(entity)), abs=1e-6)
    raw = body["raw_score"]
    uncalibrated = raw if kind == "extra_trees" else 1.0 / (1.0 + math.exp(-raw))
    served = float(apply_calibration(CALIBRATION, uncalibrated))
    assert body["probability"] == pytest.approx(served, abs=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_explain_answers_exact_contributions_per_model_kind(
    kind: str, explained: dict[str, tuple[str, Any, Bundle]], serve: ServeFactory
) -> None:
    name, estimator, _ = explained[kind]
    server, _ = serve(model=name, stale_policy="baseline")
    with httpx.Client(base_url=server.url) as client:
        for entity in ("s001", "s007"):  # s007's f1 is null: the model's missing handling
            r = client.post("/v1/predict?explain=true", json={"entity": entity})
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == PLAIN_KEYS | {"contributions", "base_value", "raw_score"}
            _check(kind, estimator, entity, body)
        # A stale vector answered by the bundle's baseline: no model to explain.
        r = client.post("/v1/predict?explain=true", json={"entity": STALE[0]})
        assert r.status_code == 200 and r.json()["source"] == "baseline"
        assert r.json()["contributions"] is None and r.json()["raw_score"] is None
        # Without explain, and with explain=false, the answer is the plain one.
        for url in ("/v1/predict", "/v1/predict?explain=false", "/v1/predict?other=1"):
            plain = client.post(url, json={"entity": "s001"}).json()
            assert set(plain) == PLAIN_KEYS
        # The batch explains every entity the model scored, in one call per model.
        entities = [*FRESH[:8], "s007", "ghost", STALE[0]]
        r = client.post("/v1/predict/batch?explain=1", json={"entities": entities})
        assert r.status_code == 200, r.text
        items = {it["entity"]: it for it in r.json()["predictions"]}
        for entity in [*FRESH[:8], "s007"]:
            _check(kind, estimator, entity, items[entity])
        # the unknown entity and the baseline's answer have nothing to explain
        assert items["ghost"]["status"] == "error" and items["ghost"]["contributions"] is None
        assert items[STALE[0]]["source"] == "baseline"
        assert items[STALE[0]]["contributions"] is None
        plain_batch = client.post("/v1/predict/batch", json={"entities": entities}).json()
        assert all("contributions" not in it for it in plain_batch["predictions"])


def test_explain_on_a_bundle_without_a_dump_is_refused(world: World, serve: ServeFactory) -> None:
    assert EXPLAIN_FILE not in world.bundles[0].manifest.lineage.files
    server, app = serve()  # "main": the helpers' bundles have no dump
    with httpx.Client(base_url=server.url) as client:
        for url, body in (
            ("/v1/predict?explain=true", {"entity": "s001"}),
            ("/v1/predict/batch?explain=true", {"entities": ["s001", "s002"]}),
        ):
            r = client.post(url, json=body)
            assert r.status_code == 409, r.text
            assert r.json()["reason"] == "explain_unavailable"
            assert r.json()["field"] == "explain"
        assert client.post("/v1/predict", json={"entity": "s001"}).status_code == 200
    # The metrics windows count a refusal, not a server fault.
    for endpoint in ("/v1/predict", "/v1/predict/batch"):
        counts = app.state.telemetry._current[endpoint].counts
        assert counts["rejected_count"] == 1 and counts["internal_error_count"] == 0


def test_an_invalid_explain_value_is_a_422(
    explained: dict[str, tuple[str, Any, Bundle]], serve: ServeFactory
) -> None:
    server, _ = serve(model=explained["logistic"][0])
    with httpx.Client(base_url=server.url) as client:
        for query in ("explain=maybe", "explain=", "explain=true&explain=false"):
            for url, body in (
                ("/v1/predict", {"entity": "s001"}),
                ("/v1/predict/batch", {"entities": ["s001"]}),
            ):
                r = client.post(f"{url}?{query}", json=body)
                assert r.status_code == 422, (query, r.text)
                assert r.json()["reason"] == "invalid_value"
                assert r.json()["field"] == "explain"
        # /docs documents the parameter and the explained answers
        spec = client.get("/openapi.json").json()
        for path in ("/v1/predict", "/v1/predict/batch"):
            (parameter,) = spec["paths"][path]["post"]["parameters"]
            assert parameter["name"] == "explain" and parameter["in"] == "query"
        schemas = spec["components"]["schemas"]
        assert {"contributions", "base_value", "raw_score"} <= set(
            schemas["ExplainedPredictResponse"]["properties"]
        )
        assert "contributions" in schemas["ExplainedBatchItem"]["properties"]


@contextmanager
def _tampered(world: World, name: str) -> Iterator[None]:
    local = world.registry.resolve(name, "champion")
    assert local is not None
    dump = world.data.bundles / local.bundle_id / EXPLAIN_FILE
    original = dump.read_bytes()
    dump.write_bytes(original.replace(b'"offset":0.0', b'"offset":0.1', 1))
    assert dump.read_bytes() != original
    try:
        yield
    finally:
        dump.write_bytes(original)


def test_a_tampered_dump_keeps_the_bundle_from_loading(
    world: World, explained: dict[str, tuple[str, Any, Bundle]], serve: ServeFactory
) -> None:
    _, _, bundle = explained["extra_trees"]
    world.promote("explain-tampered", world.register("explain-tampered", bundle))
    with _tampered(world, "explain-tampered"):
        server, _ = serve(model="explain-tampered")
        with httpx.Client(base_url=server.url) as client:
            r = client.post("/v1/predict?explain=true", json={"entity": "s001"})
            assert r.status_code == 503 and r.json()["reason"] == "no_model"
            r = client.post("/v1/admin/reload", headers={"authorization": "Bearer secret"})
            assert r.status_code == 409
            assert r.json()["reason"] == "bundle_tampered"
            assert EXPLAIN_FILE in r.json()["message"]


def test_int8_serving_does_not_explain(world: World, serve: ServeFactory) -> None:
    """The dump describes the FP32 model; INT8 answers differ within their parity gate, so the
    raw score would not be the one served."""
    from test_serve_int8 import _int8_bundle

    bundle = _int8_bundle(world.staging / "explain-int8")
    assert EXPLAIN_FILE in bundle.manifest.lineage.files
    world.promote("explain-int8", world.register("explain-int8", bundle))
    int8, _ = serve(model="explain-int8", precision="int8")
    fp32, _ = serve(model="explain-int8")
    r = httpx.post(f"{int8.url}/v1/predict?explain=true", json={"entity": "s001"})
    assert r.status_code == 409 and r.json()["reason"] == "explain_unavailable"
    assert "INT8" in r.json()["message"]
    assert httpx.post(f"{int8.url}/v1/predict", json={"entity": "s001"}).status_code == 200
    r = httpx.post(f"{fp32.url}/v1/predict?explain=true", json={"entity": "s001"})
    assert r.status_code == 200 and r.json()["contributions"] is not None
