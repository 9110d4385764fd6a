"""The city model: determinism, conservation, failures where empty, daily patterns, trucks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from dockline.core.errors import ConfigError, NotFoundError
from dockline.sim import City, CityConfig, Move
from dockline.sim.city import BUSINESS, RESIDENTIAL, weather_factor

MONDAY_MIDNIGHT_CHICAGO = datetime(2024, 5, 6, 5, tzinfo=UTC)


def trajectory(config: CityConfig, steps: int) -> np.ndarray:
    city = City(config)
    rows = []
    for _ in range(steps):
        city.step()
        rows.append(np.concatenate([city.bikes, city.docks_disabled, city.is_renting]))
    return np.array(rows)


def test_same_config_same_trajectory_and_seed_matters() -> None:
    config = CityConfig(stations=120, seed=11)
    a = trajectory(config, 400)
    b = trajectory(config, 400)
    assert np.array_equal(a, b)
    c = trajectory(CityConfig(stations=120, seed=12), 400)
    assert not np.array_equal(a, c)


def test_layout_ids_capacities_and_status() -> None:
    city = City(CityConfig(stations=200, seed=3))
    assert city.station_ids[0] == "s0001" and len(set(city.station_ids)) == 200
    assert city.capacity.min() >= 11 and city.capacity.max() <= 39
    assert set(np.unique(city.zone)) == {0, 1, 2}
    assert abs(city.lat.mean() - 41.88) < 0.1 and abs(city.lon.mean() + 87.65) < 0.1
    city.run(30)
    status = city.status()
    assert np.array_equal(
        status.num_docks_available, city.capacity - status.num_bikes_available - city.docks_disabled
    )
    assert (status.num_docks_available >= 0).all() and (status.num_bikes_available >= 0).all()
    assert (status.last_reported <= city.time_s).all()
    assert (status.last_reported > city.time_s - 60).all()
    assert len(np.unique(status.last_reported)) > 10  # per-station jitter
    assert status.time == MONDAY_MIDNIGHT_CHICAGO + timedelta(minutes=30)


def test_bikes_are_conserved_through_trips_diversions_and_trucks() -> None:
    city = City(CityConfig(stations=150, seed=5, trips_per_station_hour=4.0))
    total = city.total_bikes()
    rng = np.random.default_rng(0)
    for minute in range(1500):
        if minute % 50 == 0:
            src, dst = rng.choice(city.n, 2, replace=False)
            city.apply_moves([(city.station_ids[src], city.station_ids[dst], 8)])
        city.step()
        assert city.total_bikes() == total
        assert (city.bikes >= 0).all()
        assert (city.bikes + city.docks_disabled <= city.capacity).all()
    m = city.metrics
    assert m.trips_started > 5000 and m.failed_rentals > 0 and m.diverted_returns > 0
    assert m.bikes_moved > 0 and city.bikes_in_flight > 0


def test_failed_rentals_happen_only_at_empty_or_closed_stations() -> None:
    city = City(CityConfig(stations=100, seed=9, trips_per_station_hour=3.0))
    failures = 0
    for _ in range(900):
        before = city.metrics.failed_rentals
        city.step()
        failed_here = city.last_failed > 0
        failures += int(failed_here.sum())
        assert int(city.last_failed.sum()) == city.metrics.failed_rentals - before
        assert ((city.bikes[failed_here] == 0) | ~city.is_renting[failed_here]).all()
    assert failures > 0


def test_weekday_morning_flows_to_business_and_evening_back() -> None:
    city = City(CityConfig(stations=300, seed=2, start=MONDAY_MIDNIGHT_CHICAGO))
    city.run(7 * 60)  # to 07:00 local
    before = city.zone_flows.copy()
    business_bikes = city.bikes[city.zone == BUSINESS].sum()
    city.run(3 * 60)  # 07:00-10:00 local
    morning = city.zone_flows - before
    assert morning[RESIDENTIAL, BUSINESS] > 3 * morning[BUSINESS, RESIDENTIAL]
    assert city.bikes[city.zone == BUSINESS].sum() > business_bikes
    city.run(6 * 60)  # to 16:00
    before = city.zone_flows.copy()
    city.run(3 * 60)  # 16:00-19:00
    evening = city.zone_flows - before
    assert evening[BUSINESS, RESIDENTIAL] > 2 * evening[RESIDENTIAL, BUSINESS]
    night_before = city.metrics.trips_started
    city.run(6 * 60)  # 19:00-01:00
    city_night_start = city.metrics.trips_started
    city.run(3 * 60)  # 01:00-04:00: almost nobody rides
    assert city.metrics.trips_started - city_night_start < (city_night_start - night_before) / 5


def test_rain_and_cold_suppress_demand() -> None:
    assert weather_factor(20, 0) > weather_factor(20, 2) > weather_factor(20, 8)
    assert weather_factor(25, 0) > weather_factor(0, 0) > 0


def test_truck_moves_pick_up_now_and_deliver_after_travel_time() -> None:
    city = City(CityConfig(stations=50, seed=4, trips_per_station_hour=0.0))
    src = int(np.argmax(city.bikes))
    dst = int(np.argmax(city.docks_available - (np.arange(50) == src) * 1000))
    a, b = city.station_ids[src], city.station_ids[dst]
    bikes_src, bikes_dst = int(city.bikes[src]), int(city.bikes[dst])
    picked = city.apply_moves([Move(a, b, 3)])
    assert picked == [3]
    assert city.bikes[src] == bikes_src - 3 and city.bikes[dst] == bikes_dst
    assert city.bikes_in_trucks == 3
    city.run(120)
    assert city.bikes[dst] == bikes_dst + 3 and city.bikes_in_trucks == 0
    assert city.metrics.moves == 1 and city.metrics.bikes_moved == 3
    assert city.metrics.truck_km > 0
    # Immediate moves, and a move asking for more than the station has.
    have = int(city.bikes[dst])
    assert city.apply_moves([(b, a, have + 50)], immediate=True) == [have]
    assert city.bikes[dst] == 0
    with pytest.raises(NotFoundError):
        city.apply_moves([("nope", a, 1)])


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        CityConfig(stations=0)
    with pytest.raises(ConfigError):
        CityConfig(tz="Mars/Olympus")
    with pytest.raises(ValueError, match="tz-aware"):
        CityConfig(start=datetime(2024, 1, 1))
