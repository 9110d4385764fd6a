"""/v1/predict and /v1/predict/batch over real HTTP: answers, errors, the freshness gate."""

from __future__ import annotations

import math
from datetime import timedelta

import httpx
import numpy as np
import pytest
from serve_helpers import (
    FRESH,
    FRESH_AGE,
    HOUR_OF_WEEK,
    MODEL_FEATURES,
    STALE,
    STALE_AGE,
    T0,
    ServeFactory,
    World,
    vector,
)

from dockline.core.bundle import BundleScorer
from dockline.core.time import FixedClock


def _expected(world: World, entity: str, version: int = 1) -> float:
    values = vector(entity)
    row = np.array(
        [[math.nan if values[f] is None else values[f] for f in MODEL_FEATURES]], np.float32
    )
    return float(BundleScorer(world.bundles[version - 1]).score(row)[0])


def test_predict_scores_the_latest_vector_with_the_champion(
    world: World, serve: ServeFactory
) -> None:
    server, _ = serve()
    with httpx.Client(base_url=server.url) as client:
        seen_ids = set()
        for entity in ("s001", "s002"):
            r = client.post("/v1/predict", json={"entity": entity})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["probability"] == pytest.approx(_expected(world, entity), abs=1e-6)
            assert body["label"] == (body["probability"] >= 0.5)
            assert body["threshold"] == 0.5
            assert body["status"] == "ok" and body["reason"] is None
            assert body["source"] == "model"
            assert body["model"] == {
                "name": "main",
                "version": 1,
                "bundle_id": world.bundles[0].bundle_id,
                "role": "champion",
            }
            assert body["as_of"] == (T0 - FRESH_AGE).isoformat()
            assert body["age_s"] == pytest.approx(FRESH_AGE.total_seconds())
            seen_ids.add(body["request_id"])
        assert len(seen_ids) == 2
        # s007 has a null feature (NaN for the model), which a logistic regression cannot score:
        # a NaN probability is never served.
        r = client.post("/v1/predict", json={"entity": "s007"})
        assert r.status_code == 500 and r.json()["reason"] == "invalid_prediction"

        # Caller-supplied values override the stored ones...
        override = client.post("/v1/predict", json={"entity": "s001", "features": {"f0": 5.0}})
        assert override.status_code == 200
        assert override.json()["probability"] != pytest.approx(_expected(world, "s001"))
        # ...and score an entity the store does not know when they cover every model feature.
        full = dict.fromkeys(MODEL_FEATURES, 0.0)
        r = client.post("/v1/predict", json={"entity": "nowhere", "features": full})
        assert r.status_code == 200 and r.json()["as_of"] is None


def test_batch_is_vectorized_and_matches_single_predictions(
    world: World, serve: ServeFactory
) -> None:
    server, _ = serve(max_batch=100)
    entities = [*FRESH[:20], "ghost", "s003", STALE[0]]
    with httpx.Client(base_url=server.url) as client:
        r = client.post("/v1/predict/batch", json={"entities": entities})
        assert r.status_code == 200, r.text
        items = r.json()["predictions"]
        assert [i["entity"] for i in items] == entities
        for item in items:
            if item["entity"] == "ghost":
                assert item["status"] == "error" and item["reason"] == "unknown_entity"
                assert item["probability"] is None
                continue
            single = client.post("/v1/predict", json={"entity": item["entity"]}).json()
            if item["entity"].endswith("7"):  # a null feature: NaN from the model, never served
                assert single["reason"] == item["reason"] == "invalid_prediction"
                assert item["status"] == "error" and item["probability"] is None
                continue
            assert item["probability"] == pytest.approx(single["probability"], abs=1e-6)
            assert item["label"] == single["label"]
            assert item["status"] == single["status"]
            assert item["model"]["version"] == 1
        assert items[-1]["status"] == "degraded" and items[-1]["reason"] == "stale_features"


@pytest.mark.parametrize(
    ("body", "status", "reason", "field"),
    [
        (b'{"entity": "nope"}', 404, "unknown_entity", "entity"),
        (b"{}", 422, "missing_field", "entity"),
        (b'{"entity": 12}', 422, "invalid_type", "entity"),
        (b'{"entity": "s001", "colour": 1}', 422, "unknown_field", "colour"),
        (b'{"entity": "s001", "features": {"f0": "x"}}', 422, "invalid_type", "features.f0"),
        (b'{"entity": "s001", "features": {"zz": 1}}', 422, "unknown_feature", "features.zz"),
        (b'{"entity": ""}', 422, "invalid_value", "entity"),
        (b"{not json", 422, "invalid_json", "body"),
        (b'{"entity": "nope", "features": {"f0": 1}}', 404, "unknown_entity", "entity"),
    ],
)
def test_every_error_has_a_reason_and_names_the_field(
    serve: ServeFactory, body: bytes, status: int, reason: str, field: str
) -> None:
    server, _ = serve()
    r = httpx.post(
        f"{server.url}/v1/predict", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    error = r.json()
    assert error["reason"] == reason
    assert error["field"] == field
    assert error["message"] and error["request_id"]


def test_batch_limits_and_unknown_routes(serve: ServeFactory) -> None:
    server, _ = serve(max_batch=4)
    with httpx.Client(base_url=server.url) as client:
        r = client.post("/v1/predict/batch", json={"entities": FRESH[:5]})
        assert r.status_code == 413 and r.json()["reason"] == "batch_too_large"
        assert r.json()["field"] == "entities"
        r = client.post("/v1/predict/batch", json={"entities": ["s001", 3]})
        assert r.status_code == 422 and r.json()["field"] == "entities[1]"
        r = client.post("/v1/predict/batch", json={"entities": []})
        assert r.status_code == 422 and r.json()["reason"] == "invalid_value"
        huge = {"entities": ["x" * 250] * 2000}
        r = client.post("/v1/predict/batch", json=huge)
        assert r.status_code == 413 and r.json()["reason"] == "body_too_large"
        r = client.get("/v1/nothing")
        assert r.status_code == 404 and r.json()["reason"] == "not_found"
        r = client.get("/v1/predict")
        assert r.status_code == 405 and r.json()["reason"] == "method_not_allowed"


def test_stale_vectors_follow_the_policy(world: World, serve: ServeFactory) -> None:
    stale = STALE[0]
    flag, _ = serve(stale_policy="flag")
    baseline, _ = serve(stale_policy="baseline")
    reject, _ = serve(stale_policy="reject")
    r = httpx.post(f"{flag.url}/v1/predict", json={"entity": stale})
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["reason"], body["source"]) == (
        "degraded",
        "stale_features",
        "model",
    )
    assert body["age_s"] == pytest.approx(STALE_AGE.total_seconds())
    assert body["probability"] == pytest.approx(_expected(world, stale), abs=1e-6)

    r = httpx.post(f"{baseline.url}/v1/predict", json={"entity": stale})
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["source"]) == ("degraded", "baseline")
    # The vector says Wednesday (2) at 09h: hour of week 2 * 24 + 9.
    assert body["probability"] == pytest.approx(HOUR_OF_WEEK[2 * 24 + 9])

    r = httpx.post(f"{reject.url}/v1/predict", json={"entity": stale})
    assert r.status_code == 503
    assert r.json()["reason"] == "stale_features" and r.json()["field"] == "entity"
    # A fresh vector passes every policy untouched.
    for server in (flag, baseline, reject):
        r = httpx.post(f"{server.url}/v1/predict", json={"entity": "s002"})
        assert r.status_code == 200 and r.json()["status"] == "ok"


def test_the_gate_follows_the_injected_clock_and_baseline_needs_a_baseline(
    world: World, serve: ServeFactory
) -> None:
    clock = FixedClock(T0)
    server, _ = serve(clock=clock, stale_policy="baseline", max_feature_age="5m")
    r = httpx.post(f"{server.url}/v1/predict", json={"entity": "s004"})
    assert r.json()["status"] == "ok"
    clock.advance(timedelta(minutes=5))  # 5 min 30 s old now
    r = httpx.post(f"{server.url}/v1/predict", json={"entity": "s004"})
    assert r.json()["status"] == "degraded" and r.json()["source"] == "baseline"

    # Version 2's bundle ships no baseline.json: the baseline policy then rejects.
    world.register("nobaseline", world.bundles[1])
    world.promote("nobaseline", 1)
    other, _ = serve(model="nobaseline", stale_policy="baseline")
    r = httpx.post(f"{other.url}/v1/predict", json={"entity": STALE[1]})
    assert r.status_code == 503 and r.json()["reason"] == "stale_features"


def test_health_ready_docs(serve: ServeFactory) -> None:
    server, _ = serve()
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
        assert "PredictRequest" in spec["components"]["schemas"]
        assert "/v1/predict/batch" in spec["paths"]
        client.post("/v1/predict", json={"entity": STALE[2]})  # now /ready checks this one
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "stale_features"


def test_without_a_champion_nothing_is_ready(world: World, serve: ServeFactory) -> None:
    server, _ = serve(model="never-registered")
    r = httpx.post(f"{server.url}/v1/predict", json={"entity": "s001"})
    assert r.status_code == 503 and r.json()["reason"] == "no_model"
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 503 and ready.json()["reason"] == "no_model"
