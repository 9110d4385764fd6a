"""Trucks in the simulated city: travel time, refusals with reasons, the truck API over HTTP,
common random numbers, and the simulator's own forecasts."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import numpy as np
import pytest

from dockline.core.decisions import travel_km, travel_minutes
from dockline.core.time import FixedClock
from dockline.sim import City, CityConfig, SimServer
from dockline.sim.fleet import ActionRequest, Fleet, future_outlook


def quiet_city(**kw: object) -> City:
    """No riders and no maintenance: bikes move only by truck."""
    config = CityConfig(
        stations=30, seed=3, trips_per_station_hour=0.0, maintenance_per_station_day=0.0, **kw
    )  # type: ignore[arg-type]
    return City(config)


def pick(city: City) -> tuple[str, str]:
    """A source with >= 5 bikes and a destination with >= 5 free docks."""
    src = int(np.flatnonzero(city.bikes >= 5)[0])
    dst = int(np.flatnonzero((city.docks_available >= 5) & (np.arange(city.n) != src))[0])
    return city.station_ids[src], city.station_ids[dst]


def test_a_move_loads_at_pickup_and_unloads_at_the_eta() -> None:
    city = quiet_city()
    fleet = Fleet(city, trucks=1, capacity=10)
    src, dst = pick(city)
    i, j = city.index_of(src), city.index_of(dst)
    b_src, b_dst, total = int(city.bikes[i]), int(city.bikes[j]), city.total_bikes()
    (result,) = fleet.apply([ActionRequest("t1", src, dst, 4)])
    assert result.status == "accepted" and result.pickup_at and result.eta
    km1 = travel_km(41.88, -87.63, city.lat[i], city.lon[i])
    km2 = travel_km(city.lat[i], city.lon[i], city.lat[j], city.lon[j])
    assert result.km == pytest.approx(km1 + km2, abs=1e-3)
    assert result.pickup_at - city.time >= timedelta(minutes=travel_minutes(km1, 20.0, 5.0))
    assert fleet.snapshot()[0].busy_until is not None
    while city.time < result.eta:
        assert city.total_bikes() == total, "bikes are conserved in the truck"
        if city.time < result.pickup_at:
            assert city.bikes[i] == b_src
        assert city.bikes[j] == b_dst, "nothing arrives before the ETA"
        city.step()
    city.step()
    assert city.bikes[i] == b_src - 4 and city.bikes[j] == b_dst + 4
    assert city.total_bikes() == total
    assert city.metrics.moves == 1 and city.metrics.bikes_moved == 4
    assert city.metrics.truck_km == pytest.approx(km1 + km2, rel=1e-9)
    snap = fleet.snapshot()[0]
    assert snap.busy_until is None and snap.load == 0
    assert (snap.lat, snap.lon) == (round(city.lat[j], 6), round(city.lon[j], 6))


def test_impossible_moves_are_refused_with_a_reason() -> None:
    city = quiet_city()
    fleet = Fleet(city, trucks=2, capacity=10)
    src, dst = pick(city)
    empty = (
        city.station_ids[int(np.flatnonzero(city.bikes == 0)[0])]
        if (city.bikes == 0).any()
        else None
    )
    requests = [
        ActionRequest("t9", src, dst, 2),
        ActionRequest("t1", "nope", dst, 2),
        ActionRequest("t1", src, dst, 0),
        ActionRequest("t1", src, src, 2),
        ActionRequest("t1", src, dst, 11),
        ActionRequest("t1", src, dst, 2),  # accepted
        ActionRequest("t1", src, dst, 2),  # the same truck again: busy
    ]
    results = fleet.apply(requests)
    assert [r.reason for r in results] == [
        "unknown_truck",
        "unknown_station",
        "bad_bikes",
        "same_station",
        "over_capacity",
        None,
        "truck_busy",
    ]
    assert all(r.detail for r in results if r.status == "refused")
    if empty is not None:
        (r,) = fleet.apply([ActionRequest("t2", empty, dst, 2)])
        assert r.reason == "no_bikes"
    city.is_renting[city.index_of(dst)] = False
    (r,) = fleet.apply([ActionRequest("t2", src, dst, 2)])
    assert r.reason == "station_closed"
    assert fleet.accepted == 1


def test_the_truck_api_over_http() -> None:
    city = quiet_city()
    clock = FixedClock(city.time)
    src, dst = pick(city)
    j = city.index_of(dst)
    before = int(city.bikes[j])
    with (
        SimServer(city, clock=clock, fleet=Fleet(city, trucks=2)) as server,
        httpx.Client(timeout=5) as client,
    ):
        url = f"{server.url}/v1/actions"
        body = {
            "actions": [
                {"truck_id": "t1", "from_station": src, "to_station": dst, "bikes": 3,
                 "eta": "ignored: a decision's action is accepted as it is"},
                {"truck_id": "t2", "from_station": src, "to_station": "s9999", "bikes": 3},
            ]
        }  # fmt: skip
        answer = client.post(url, json=body)
        assert answer.status_code == 200
        data = answer.json()
        assert data["accepted"] == 1 and data["refused"] == 1
        ok, refused = data["results"]
        assert ok["status"] == "accepted" and "reason" not in ok
        assert refused == {**refused, "status": "refused", "reason": "unknown_station"}
        eta = datetime.fromisoformat(ok["eta"])
        trucks = client.get(f"{server.url}/v1/trucks").json()["trucks"]
        assert trucks[0]["busy_until"] is not None and trucks[1]["busy_until"] is None
        again = client.post(url, json={"actions": [body["actions"][0]]}).json()
        assert again["results"][0]["reason"] == "truck_busy"
        clock.set(eta + timedelta(minutes=1))
        client.get(f"{server.url}/_sim/stats")  # the city catches up with the clock
        assert int(city.bikes[j]) == before + 3
        bad = client.post(url, content=b"{not json")
        assert bad.status_code == 400 and bad.json()["reason"] == "bad_request"
        wrong = client.post(url, json={"actions": [{"truck_id": "t1"}]})
        assert wrong.status_code == 400 and wrong.json()["reason"] == "bad_request"
        assert client.post(f"{server.url}/v1/elsewhere", json={}).status_code == 404


def test_trucks_do_not_change_the_random_numbers() -> None:
    """Common random numbers: the same city with and without moves draws the same demand."""
    a = City(CityConfig(stations=80, seed=11, common_random_numbers=True))
    b = City(CityConfig(stations=80, seed=11, common_random_numbers=True))
    fleet = Fleet(b, trucks=3)
    src = [b.station_ids[i] for i in np.argsort(-b.bikes)[:3]]
    dst = [b.station_ids[i] for i in np.argsort(b.bikes)[:3]]
    fleet.apply(
        ActionRequest(f"t{k + 1}", s, d, 8) for k, (s, d) in enumerate(zip(src, dst, strict=True))
    )
    differed = False
    for _ in range(600):
        a.step()
        b.step()
        assert np.array_equal(a.last_demand, b.last_demand)
        differed |= not np.array_equal(a.bikes, b.bikes)
    assert differed and a.total_bikes() == b.total_bikes()
    # Without the option a seed keeps its old trajectory, whose stream follows the bikes.
    c = City(CityConfig(stations=80, seed=11))
    d = City(CityConfig(stations=80, seed=11))
    Fleet(d, trucks=3).apply(
        ActionRequest(f"t{k + 1}", s, t, 8) for k, (s, t) in enumerate(zip(src, dst, strict=True))
    )
    same = True
    for _ in range(600):
        c.step()
        d.step()
        same &= np.array_equal(c.last_demand, d.last_demand)
    assert not same


def test_expected_flows_and_future_outlook() -> None:
    city = City(CityConfig(stations=60, seed=2))
    city.run(7 * 60)  # 07:00 on a Monday in Chicago: the morning peak
    dep, arr = city.expected_flows(60)
    assert dep.sum() == pytest.approx(arr.sum(), rel=1e-9), "every expected trip ends somewhere"
    assert (dep >= 0).all() and (arr >= 0).all() and dep.sum() > 0
    bikes, step = city.bikes.copy(), city.step_index
    out = future_outlook(city, 60)
    assert np.array_equal(city.bikes, bikes) and city.step_index == step, "the city did not move"
    assert (out["need"] >= 0).all() and (out["empty_minutes"] <= 60).all()
    # A station that runs empty in the next hour needs bikes; one that cannot spare any has none.
    assert ((out["empty_minutes"] > 0) <= (out["need"] > 0)).all()
    assert ((out["need"] > 0) <= (out["removable"] == 0)).all()


def test_a_bad_content_length_is_a_400_not_a_dead_thread() -> None:
    import socket

    city = quiet_city()
    with SimServer(city, clock=FixedClock(city.time)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
                b"Connection: close\r\n\r\n"
            )
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400") and b"bad_request" in reply
        assert httpx.get(f"{server.url}/v1/trucks").status_code == 200, "the server still answers"
