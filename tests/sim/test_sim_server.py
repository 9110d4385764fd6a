"""The GBFS server over real 127.0.0.1 sockets: discovery, conditional requests, ttl, counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest

from dockline.core.time import FixedClock
from dockline.sim import City, CityConfig, FaultConfig, SimServer
from dockline.sim.faults import REJECTING_FAULTS

Served = tuple[SimServer, FixedClock, httpx.Client]
FEEDS = ("system_information", "vehicle_types", "station_information", "station_status")


@pytest.fixture
def served() -> Iterator[Served]:
    faults = FaultConfig(negative_count=0.03, duplicate=0.03, stale=0.02, missing_field=0.02)
    city = City(CityConfig(stations=120, seed=6, faults=faults))
    clock = FixedClock(city.time)
    with SimServer(city, speed=60.0, clock=clock) as server, httpx.Client(timeout=5) as client:
        yield server, clock, client


def test_discovery_lists_absolute_urls_with_the_real_port(served: Served) -> None:
    server, _, client = served
    assert server.port > 0
    v2 = client.get(f"{server.url}/gbfs.json").json()
    assert v2["version"] == "2.3" and isinstance(v2["last_updated"], int)
    urls = {f["name"]: f["url"] for f in v2["data"]["en"]["feeds"]}
    assert urls["station_status"] == f"{server.url}/v2/station_status.json"
    v3 = client.get(f"{server.url}/v3/gbfs.json").json()
    assert v3["version"] == "3.0" and isinstance(v3["last_updated"], str)
    urls3 = {f["name"]: f["url"] for f in v3["data"]["feeds"]}
    assert urls3["station_status"] == f"{server.url}/v3/station_status.json"
    for url in [*urls.values(), *urls3.values()]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == "application/json"
    assert client.get(f"{server.url}/v2/nope.json").status_code == 404
    assert client.get(f"{server.url}/elsewhere").status_code == 404


def test_conditional_requests_ttl_and_clock_header(served: Served) -> None:
    server, clock, client = served
    url = f"{server.url}/v2/station_status.json"
    clock.advance(timedelta(seconds=15))
    first = client.get(url)
    assert first.status_code == 200
    doc = first.json()
    assert doc["ttl"] == 45 // 60  # 45 simulated seconds left = 0.75 real seconds at speed 60
    assert first.headers["x-dockline-clock"] == clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert datetime.fromisoformat(first.headers["x-dockline-clock"]) == clock.now()
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert "x-dockline-clock" in again.headers
    assert client.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    # The next simulated minute is a new publication.
    clock.advance(timedelta(minutes=1))
    fresh = client.get(url, headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag
    assert fresh.json()["last_updated"] == doc["last_updated"] + 60
    assert client.get(url, headers={"If-Modified-Since": modified}).status_code == 200
    # Static feeds are conditional too.
    info = client.get(f"{server.url}/v3/station_information.json")
    assert client.get(info.url, headers={"If-None-Match": info.headers["etag"]}).status_code == 304
    # Slower clocks give longer ttl (real seconds).
    slow = SimServer(server.city, speed=2.0, clock=clock)
    with slow:
        assert client.get(f"{slow.url}/v2/station_status.json").json()["ttl"] == 45 // 2


def test_faults_are_counted_once_per_served_publication(served: Served) -> None:
    server, clock, client = served
    observed: Counter[str] = Counter()
    records = 0
    for _ in range(25):
        clock.advance(timedelta(minutes=1))
        v2 = client.get(f"{server.url}/v2/station_status.json").json()["data"]["stations"]
        v3 = client.get(f"{server.url}/v3/station_status.json").json()["data"]["stations"]
        assert len(v2) == len(v3)
        client.get(f"{server.url}/v2/station_status.json")  # a repeat is not counted again
        records += len(v2)
        seen: Counter[str] = Counter()
        for rec in v2:
            if (
                "station_id" not in rec
                or any(
                    k not in rec
                    for k in ("num_bikes_available", "num_docks_available", "is_renting")
                )
                or "last_reported" not in rec
            ):
                observed["missing_field"] += 1
            elif rec["num_bikes_available"] < 0 or rec["num_docks_available"] < 0:
                observed["negative_count"] += 1
            elif rec["last_reported"] == 86_400:
                observed["stale"] += 1
            if "station_id" in rec:
                observed["duplicate"] += seen[rec["station_id"]] > 0
                seen[rec["station_id"]] += 1
    stats = client.get(f"{server.url}/_sim/stats").json()
    assert stats["published_records"] == records == server.counts.published_records
    assert stats["publications"] == 25
    for name in ("missing_field", "negative_count", "stale", "duplicate"):
        assert stats["faults"][name] == observed[name] > 0, name
    assert set(stats["expected_rejections"]) == {
        "stale", "duplicate", "late", "missing_field", "bad_type", "negative_count", "future"
    }  # fmt: skip
    assert sum(stats["expected_rejections"].values()) == sum(
        stats["faults"][n] for n in REJECTING_FAULTS
    )
    assert stats["metrics"]["steps"] == 25 and stats["bikes_total"] > 0
