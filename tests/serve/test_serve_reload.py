"""The bundle runtime over real HTTP: hot reload under load, admin auth, tampered bundles."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow as pa
from serve_helpers import (
    FRESH,
    FRESH_AGE,
    GROUP,
    STORE_COLUMNS,
    T0,
    ServeFactory,
    Server,
    World,
    vector,
)

from dockline.core.config import DataDir, ServeConfig
from dockline.core.contracts import TS_TYPE
from dockline.core.time import FixedClock, to_micros
from dockline.serve import create_app
from dockline.store import SqliteOnlineStore

AUTH = {"authorization": "Bearer secret"}


@contextmanager
def tampered(world: World, model: str, version: int) -> Iterator[None]:
    """Flip one bit of the local copy of ``version``'s model.onnx; restore it on exit."""
    local = world.registry.get(model, version)
    model_file = world.data.bundles / local.bundle_id / "model.onnx"
    original = model_file.read_bytes()
    model_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        yield
    finally:
        model_file.write_bytes(original)


def test_hot_reload_under_load_fails_no_request(world: World, serve: ServeFactory) -> None:
    v1 = world.register("reload", world.bundles[0])
    v2 = world.register("reload", world.bundles[1])
    world.promote("reload", v1)
    server, _ = serve(model="reload")
    statuses: Counter[int] = Counter()
    # One list per client: each sends its next request after the last answer, so its versions
    # follow the server's order. A shared list would interleave answers of the two clients in
    # the order their threads got the GIL, not the order the server answered.
    per_client: list[list[int]] = [[], []]
    stop = threading.Event()

    def hammer(versions: list[int]) -> None:
        with httpx.Client(base_url=server.url) as client:
            i = 0
            while not stop.is_set():
                r = client.post("/v1/predict", json={"entity": FRESH[i % 6]})
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    versions.append(r.json()["model"]["version"])
                i += 1

    threads = [threading.Thread(target=hammer, args=(v,)) for v in per_client]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        world.promote("reload", v2)
        r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True
        assert r.json()["champion"]["version"] == v2
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(statuses) == {200}, statuses
    for versions in per_client:
        assert versions[0] == v1 and versions[-1] == v2
        switch = versions.index(v2)
        assert all(v == v2 for v in versions[switch:])  # no flapping back after the swap
    assert sum(statuses.values()) > 50

    # Reloading again with no alias move changes nothing.
    r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["changed"] is False


def test_the_poller_follows_promotions_without_an_admin_call(
    world: World, serve: ServeFactory
) -> None:
    v1 = world.register("polled", world.bundles[0])
    v2 = world.register("polled", world.bundles[1])
    world.promote("polled", v1)
    server, _ = serve(model="polled", reload_poll="0.2s")

    def version() -> int:
        r = httpx.post(f"{server.url}/v1/predict", json={"entity": "s001"})
        assert r.status_code == 200
        return int(r.json()["model"]["version"])

    assert version() == v1
    world.promote("polled", v2)
    deadline = time.monotonic() + 15
    while version() != v2:
        assert time.monotonic() < deadline, "the poller never picked up the promotion"
        time.sleep(0.1)


def test_admin_endpoints_need_the_bearer_token(serve: ServeFactory) -> None:
    server, _ = serve()
    no_token, _ = serve(token=None)
    with httpx.Client(base_url=server.url) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "secret"}):
            r = client.post("/v1/admin/reload", headers=headers)
            assert r.status_code == 401 and r.json()["reason"] == "unauthorized"
            r = client.post("/v1/admin/routing", headers=headers, json={"mode": "shadow"})
            assert r.status_code == 401 and r.json()["reason"] == "unauthorized"
            assert client.get("/v1/admin/routing", headers=headers).status_code == 401
        # nothing changed
        assert client.get("/v1/admin/routing", headers=AUTH).json()["mode"] == "champion"
        r = client.post("/v1/admin/routing", headers=AUTH, json={"mode": "warp"})
        assert r.status_code == 422 and r.json()["field"] == "mode"
        r = client.post(
            "/v1/admin/routing", headers=AUTH, json={"mode": "canary", "canary_share": 2}
        )
        assert r.status_code == 422 and r.json()["field"] == "canary_share"
    # With no token configured the admin endpoints are closed to everyone.
    r = httpx.post(f"{no_token.url}/v1/admin/reload", headers=AUTH)
    assert r.status_code == 401


def test_a_tampered_bundle_is_refused_and_the_old_model_keeps_serving(
    world: World, serve: ServeFactory
) -> None:
    v1 = world.register("tamper", world.bundles[0])
    v2 = world.register("tamper", world.bundles[1])
    world.promote("tamper", v1)
    server, _ = serve(model="tamper")
    with tampered(world, "tamper", v2):  # the verified local copy serving would load
        world.promote("tamper", v2)
        r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH, timeout=30)
        assert r.status_code == 409, r.text
        assert r.json()["reason"] == "bundle_tampered" and r.json()["field"] == "champion"
        p = httpx.post(f"{server.url}/v1/predict", json={"entity": "s001"})
        assert p.status_code == 200 and p.json()["model"]["version"] == v1
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'dockline_serve_model_reloads_total{outcome="bundle_tampered",role="champion"}' in (
            metrics
        )
        # A fresh process refuses to start serving it at all.
        fresh, _ = serve(model="tamper")
        r = httpx.post(f"{fresh.url}/v1/predict", json={"entity": "s001"})
        assert r.status_code == 503 and r.json()["reason"] == "no_model"
        assert httpx.get(f"{fresh.url}/ready").status_code == 503


def test_a_reload_with_unmoved_aliases_reads_no_bundle(world: World, serve: ServeFactory) -> None:
    # The poller runs every few seconds on the serving core: re-reading and hashing an unchanged
    # bundle (40 ms for a 36 MB forest) stalled requests. The loaded copy was verified at load,
    # so an alias that has not moved needs only the registry's metadata.
    v1 = world.register("unmoved", world.bundles[0])
    world.promote("unmoved", v1)
    server, _ = serve(model="unmoved")
    with tampered(world, "unmoved", v1):
        r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is False
        p = httpx.post(f"{server.url}/v1/predict", json={"entity": "s001"})
        assert p.status_code == 200 and p.json()["model"]["version"] == v1


def _own_store(path: Path, columns: list[str]) -> SqliteOnlineStore:
    """A store of its own (re-registering the shared one would wipe every test's vectors)."""
    store = SqliteOnlineStore(path)
    store.register(GROUP, columns)
    rows = [vector(e) for e in FRESH[:3]]
    table = pa.table(
        {
            "station_id": FRESH[:3],
            "as_of": pa.array([T0 - FRESH_AGE] * 3, TS_TYPE),
            **{c: [r[c] for r in rows] for c in columns},
        }
    )
    store.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=to_micros(T0))
    return store


def test_a_changed_group_layout_answers_503_instead_of_misaligned_scores(
    world: World, tmp_path: Path
) -> None:
    store = _own_store(tmp_path / "online.sqlite", STORE_COLUMNS)
    app = create_app(
        store=store,
        registry=world.registry,
        model_name="main",
        config=ServeConfig(reload_poll="1h"),
        data_dir=DataDir(tmp_path / "out"),
        clock=FixedClock(T0),
    )
    with Server(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/v1/predict", json={"entity": FRESH[1]}).status_code == 200
        # A new plan re-registers the group with the same names in another order and writes
        # its vectors: the loaded model's column index no longer fits them.
        _own_store(tmp_path / "online.sqlite", list(reversed(STORE_COLUMNS))).close()
        store.register(GROUP, list(reversed(STORE_COLUMNS)))  # this handle sees it too
        for path, body in (
            ("/v1/predict", {"entity": FRESH[1]}),
            ("/v1/predict/batch", {"entities": FRESH[:2]}),
        ):
            r = client.post(path, json=body)
            assert r.status_code == 503, r.text
            assert r.json()["reason"] == "feature_schema_mismatch"
        ready = client.get("/ready").json()
        assert ready["reason"] == "feature_schema_mismatch"
        assert ready["checks"]["layout"] == {"ok": False, "reason": "feature_schema_mismatch"}
    store.close()


def test_vectors_of_another_width_answer_503_though_the_store_cache_lags(
    world: World, tmp_path: Path
) -> None:
    store = _own_store(tmp_path / "online.sqlite", STORE_COLUMNS)
    app = create_app(
        store=store,
        registry=world.registry,
        model_name="main",
        config=ServeConfig(reload_poll="1h"),
        data_dir=DataDir(tmp_path / "out"),
        clock=FixedClock(T0),
    )
    with Server(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/v1/predict", json={"entity": FRESH[1]}).status_code == 200
        # Another process (the materializer) re-registers with one more column; the serving
        # handle's cached columns do not see it, but the vectors' width does.
        other = SqliteOnlineStore(tmp_path / "online.sqlite")
        other.register(GROUP, ["new_first", *STORE_COLUMNS])
        rows = [vector(e) for e in FRESH[:3]]
        table = pa.table(
            {
                "station_id": FRESH[:3],
                "as_of": pa.array([T0 - FRESH_AGE] * 3, TS_TYPE),
                "new_first": [1.0] * 3,
                **{c: [r[c] for r in rows] for c in STORE_COLUMNS},
            }
        )
        other.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=to_micros(T0))
        other.close()
        for path, body in (
            ("/v1/predict", {"entity": FRESH[1]}),
            ("/v1/predict/batch", {"entities": FRESH[:2]}),
        ):
            r = client.post(path, json=body)
            assert r.status_code == 503, r.text
            assert r.json()["reason"] == "feature_schema_mismatch"
    store.close()


def test_a_bundle_trained_on_another_plan_is_refused(world: World, tmp_path: Path) -> None:
    # The test bundles were trained on plan "1" * 64; the online group comes from another one.
    app = create_app(
        store=world.store,
        registry=world.registry,
        model_name="main",
        config=ServeConfig(reload_poll="1h"),
        data_dir=DataDir(tmp_path / "out"),
        clock=FixedClock(T0),
        plan_hash="9" * 64,
    )
    with Server(app) as server, httpx.Client(base_url=server.url) as client:
        r = client.post("/v1/predict", json={"entity": FRESH[1]})
        assert r.status_code == 503 and r.json()["reason"] == "feature_schema_mismatch"
        assert "plan" in r.json()["message"]
        assert client.get("/ready").json()["reason"] == "feature_schema_mismatch"
