"""The dashboard's JSON APIs on a real running serving app: what they answer, and their errors."""

from __future__ import annotations

from typing import Any

import httpx
import pyarrow.compute as pc
import pytest

from dockline.monitor.predictions import read_prediction_log
from dockline.pipeline.decide import decision_log
from dockline.pipeline.lineage import trace
from dockline.pipeline.train import open_registry

pytestmark = pytest.mark.slow  # the module's data dir is trained and served (~20 s)


def test_stations_have_positions_status_and_their_latest_prediction(served: Any) -> None:
    body = httpx.get(f"{served.url}/v1/stations", timeout=30).json()
    assert [s["station_id"] for s in body["stations"]] == sorted(served.stations)
    for s in body["stations"]:
        assert -90 <= s["lat"] <= 90 and -180 <= s["lon"] <= 180 and s["capacity"] > 0
        assert s["status"]["bikes"] + s["status"]["docks"] <= s["capacity"]
        assert s["prediction"]["bundle_id"] == served.summary.bundle_id
        assert 0.0 <= s["prediction"]["probability"] <= 1.0


def test_a_station_history_holds_its_bikes_predictions_and_moves(served: Any) -> None:
    decision = decision_log(served.platform.data.root).read()[-1]
    moved = decision.actions[0].to_station if decision.actions else served.stations[0]
    body = httpx.get(f"{served.url}/v1/stations/{moved}/history?hours=12", timeout=30).json()
    assert body["station_id"] == moved and len(body["status"]) > 100  # 5-min reports, 12 h
    assert {p["bundle_id"] for p in body["predictions"]} == {served.summary.bundle_id}
    # the first minutes' labels are known three hours on; the last minutes' not yet
    known = [p["outcome"] is not None for p in body["predictions"]]
    assert known[0] and not known[-1] and known == sorted(known, reverse=True)
    if decision.actions:
        assert body["decisions"][0]["decision_id"] == decision.decision_id


def test_models_decisions_performance_windows_and_lineage_match_the_pipeline(
    served: Any,
) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        models = client.get("/v1/models").json()["models"]
        registry = open_registry(served.platform)
        assert [m["model"] for m in models] == [served.summary.model_name]
        assert len(models[0]["history"]) == len(registry.history(served.summary.model_name))
        assert models[0]["versions"][0]["gate"]["primary_metric"] == "pr_auc"
        decisions = client.get("/v1/decisions").json()["decisions"]
        assert [d["decision_id"] for d in decisions] == [served.decision_id]
        perf = client.get("/v1/monitoring/performance").json()
        logged = read_prediction_log(served.platform.data.serving_predictions)
        assert perf["rows"] == pc.sum(pc.equal(logged["source"], "model")).as_py()
        assert any(w["labelled"] > 0 for w in perf["windows"])
        assert any(w["labelled"] == 0 for w in perf["windows"])
        assert {w["bundle_id"] for w in perf["windows"]} == {served.summary.bundle_id}
        windows = client.get("/v1/monitoring/windows?hours=24").json()["windows"]
        assert windows and all("request_count" in w for w in windows)
        rid = client.get("/v1/stations").json()["stations"][0]["prediction"]["request_id"]
        assert client.get(f"/v1/lineage/{rid}").json() == trace(served.platform, rid).to_dict()


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/v1/stations/no-such-station/history", 404, "unknown_station"),
        ("/v1/stations/s0001/history?hours=abc", 422, "bad_value"),
        ("/v1/stations/s0001/history?hours=-1", 422, "bad_value"),
        ("/v1/decisions?since=yesterday", 422, "bad_time"),
        ("/v1/decisions?limit=-2", 422, "bad_value"),
        ("/v1/lineage/no-such-id", 404, "unknown_id"),
        ("/v1/monitoring/windows?hours=0", 422, "bad_value"),
    ],
)
def test_bad_requests_answer_4xx_with_a_reason(
    served: Any, path: str, status: int, reason: str
) -> None:
    r = httpx.get(f"{served.url}{path}", timeout=30)
    assert (r.status_code, r.json()["reason"]) == (status, reason), r.text


def test_the_page_is_served_with_a_same_origin_policy(served: Any) -> None:
    r = httpx.get(f"{served.url}/ui", timeout=30, follow_redirects=True)
    assert r.status_code == 200 and "<main" in r.text and str(r.url).endswith("/ui/")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert (
        httpx.get(f"{served.url}/ui/js/main.js", timeout=30)
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
