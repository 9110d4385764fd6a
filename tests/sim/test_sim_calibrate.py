"""The city fitted to the real Divvy archive: estimation, the city file, the simulated city it
builds, the held-out check and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dockline.cli._decide import decide_app
from dockline.cli._sim import sim_app
from dockline.core.errors import NotFoundError, ValidationError
from dockline.sim.calibrate import CalibratedCity, calibrate, load_city, month_counts, save_city
from dockline.sim.city import City, CityConfig
from dockline.sim.validate import validate_month

DIVVY = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "divvy"
if not DIVVY.is_dir():
    DIVVY = Path("/work/shared/data/divvy")

STATUS_SCHEMA = pa.schema(
    [
        ("station_id", pa.string()),
        ("obs_ts", pa.timestamp("us", tz="UTC")),
        ("num_bikes_available", pa.int16()),
        ("num_docks_available", pa.int16()),
        ("capacity", pa.int16()),
        ("is_renting", pa.bool_()),
    ]
)


@pytest.fixture(scope="module")
def divvy_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve real stations, the first four days of October and November 2013."""
    out = tmp_path_factory.mktemp("divvy-slice")
    info = pq.read_table(DIVVY / "station_information.parquet").sort_by("station_id")
    ids = info["station_id"].to_pylist()[:12]
    pq.write_table(
        info.filter(pc.is_in(info["station_id"], pa.array(ids))),
        out / "station_information.parquet",
    )
    (out / "station_status").mkdir()
    for month in ("2013-10", "2013-11"):
        y, m = (int(x) for x in month.split("-"))
        lo = datetime(y, m, 1, 5, tzinfo=UTC)
        table = pq.read_table(
            DIVVY / "station_status" / f"{month}.parquet",
            filters=[
                ("station_id", "in", ids),
                ("obs_ts", ">=", lo),
                ("obs_ts", "<", lo + timedelta(days=4)),
            ],
        )
        pq.write_table(table, out / "station_status" / f"{month}.parquet")
    return out


def _write_status(root: Path, month: str, rows: list[tuple[str, datetime, int, int]]) -> None:
    (root / "station_status").mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "station_id": [r[0] for r in rows],
            "obs_ts": [r[1] for r in rows],
            "num_bikes_available": [r[2] for r in rows],
            "num_docks_available": [r[3] for r in rows],
            "capacity": [r[2] + r[3] for r in rows],
            "is_renting": [True] * len(rows),
        },
        schema=STATUS_SCHEMA,
    )
    pq.write_table(table, root / "station_status" / f"{month}.parquet")


def _write_info(root: Path, ids: list[str], capacity: int = 15) -> None:
    pq.write_table(
        pa.table(
            {
                "station_id": ids,
                "name": [f"Station {i}" for i in ids],
                "lat": [41.88 + 0.01 * k for k in range(len(ids))],
                "lon": [-87.63 - 0.01 * k for k in range(len(ids))],
                "capacity": pa.array([capacity] * len(ids), type=pa.int16()),
            }
        ),
        root / "station_information.parquet",
    )


def test_flows_and_operator_moves_are_inferred_from_count_changes(tmp_path: Path) -> None:
    # Monday 2013-10-07 08:00 Chicago (13:00 UTC): hour of week 8.
    t0 = datetime(2013, 10, 7, 13, 0, 1, tzinfo=UTC)
    bikes = [5, 4, 4, 6, 6, 16, 15, 15]  # -1 dep, +2 arr, +10 operator drop-off, -1 dep
    rows = [("a", t0 + timedelta(minutes=i), b, 20 - b) for i, b in enumerate(bikes)]
    rows.insert(3, rows[2])  # a duplicated snapshot time: ignored
    rows += [("b", t0 + timedelta(minutes=i), 0, 10) for i in range(3)]  # empty: no exposure
    rows.append(("b", t0 + timedelta(minutes=30), 5, 5))  # after a recorder gap: not a flow
    rows += [("zz", t0 + timedelta(minutes=i), i, 20 - i) for i in range(3)]  # not in info
    _write_info(tmp_path, ["a", "b"], capacity=20)
    _write_status(tmp_path, "2013-10", rows)
    c = month_counts(tmp_path, "2013-10", ("a", "b"))
    assert c.dep[0, 8] == 2 and c.arr[0, 8] == 2
    assert c.dep[:, :8].sum() == 0 and c.dep[1].sum() == 0 and c.arr[1].sum() == 0
    assert c.moves.count == 1 and int(c.moves.delta[0]) == 10 and int(c.moves.station[0]) == 0
    assert int(c.moves.ts_us[0]) == int((t0 + timedelta(minutes=5)).timestamp() * 1e6)
    assert c.dep_exposure[0, 8] == pytest.approx(6.0)  # 7 valid pairs, one was a move
    assert c.dep_exposure[1, 8] == 0.0  # station b had no bike to rent
    assert c.empty_minutes.tolist() == [0, 3] and c.observed_minutes.tolist() == [8, 4]
    fit = calibrate(tmp_path, ("2013-10",))
    assert fit.trips == 2 and fit.moves.summary() == {
        "moves": 1,
        "bikes_removed": 0,
        "bikes_added": 10,
    }
    # 2 departures in 6 exposed minutes, shrunk toward the station's mean (the same here).
    assert fit.city.departures[0, 8] == pytest.approx(2 / 6 * 60)


def test_calibrate_real_slice_is_consistent_and_round_trips(
    divvy_slice: Path, tmp_path: Path
) -> None:
    fit = calibrate(divvy_slice, ("2013-10",))
    city = fit.city
    assert city.n == 12 and city.departures.shape == (12, 168)
    assert np.all(city.departures >= 0) and np.all(city.bikes <= city.capacity)
    # The rates integrate back to the departures counted (shrinkage keeps each station's mean).
    counts = month_counts(divvy_slice, "2013-10", city.station_ids)
    per_station = counts.dep.sum(axis=1) / np.maximum(counts.dep_exposure.sum(axis=1), 1) * 60
    weighted = (city.departures * counts.dep_exposure).sum(axis=1) / np.maximum(
        counts.dep_exposure.sum(axis=1), 1
    )
    assert np.allclose(weighted, per_station, rtol=0.35, atol=0.05)
    a = save_city(city, tmp_path / "a.toml")
    b = save_city(load_city(a), tmp_path / "b.toml")
    assert a.read_bytes() == b.read_bytes()


def test_bad_city_files_and_months_are_clear_errors(divvy_slice: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stations]]\nid = "x"\nlat = 1.0\n')
    with pytest.raises(ValidationError) as err:
        load_city(bad)
    assert err.value.reason == "bad_city_file" and err.value.where == str(bad)
    with pytest.raises(NotFoundError):
        calibrate(divvy_slice, ("2014-01",))
    with pytest.raises(ValidationError):
        CalibratedCity(("a",), ("a",), np.zeros(1), np.zeros(1), np.array([5]), np.array([9]),
                       np.zeros((1, 168)), np.zeros((1, 168)))  # fmt: skip


def _toy_city(n: int = 6, rate: float = 30.0) -> CalibratedCity:
    arr = np.full((n, 168), rate)
    arr[0] = 0.0  # nobody rides to station 0
    return CalibratedCity(
        station_ids=tuple(f"x{i}" for i in range(n)),
        names=tuple(f"X {i}" for i in range(n)),
        lat=41.88 + 0.004 * np.arange(n),
        lon=np.full(n, -87.63),
        capacity=np.full(n, 400, dtype=np.int64),
        bikes=np.full(n, 200, dtype=np.int64),
        departures=np.full((n, 168), rate),
        arrivals=arr,
    )


def test_city_runs_the_calibrated_rates_and_conserves_bikes() -> None:
    cal = _toy_city()
    city = City(CityConfig(seed=3, calibrated=cal, maintenance_per_station_day=0.0))
    assert city.n == 6 and city.station_ids == list(cal.station_ids)
    assert city.capacity.tolist() == [400] * 6 and int(city.bikes.sum()) == 1200
    total = city.total_bikes()
    arrivals = np.zeros(6, dtype=np.int64)
    city.add_step_hook(lambda _: arrivals.__iadd__(city.last_arrivals))
    m = city.run(600)
    assert city.total_bikes() == total
    expected = 6 * 30.0 * 10  # six stations × 30 trips/h × 10 h, no weather factor
    assert abs(m.trips_started - expected) < 5 * np.sqrt(expected)
    assert arrivals[0] == 0 and arrivals[1:].min() > 0
    dep, arr = city.expected_flows(60)
    assert dep.tolist() == pytest.approx([30.0] * 6) and arr[0] == pytest.approx(0.0, abs=1e-6)
    again = City(CityConfig(seed=3, calibrated=cal, maintenance_per_station_day=0.0))
    again.run(600)
    assert np.array_equal(again.bikes, city.bikes)


def test_default_city_is_unchanged_by_the_calibrated_option() -> None:
    a = City(CityConfig(stations=40, seed=11))
    b = City(CityConfig(stations=40, seed=11, calibrated=None))
    a.run(300)
    b.run(300)
    assert np.array_equal(a.bikes, b.bikes) and a.metrics == b.metrics


def test_holdout_check_replays_moves(divvy_slice: Path) -> None:
    fit = calibrate(divvy_slice, ("2013-10",))
    report = validate_month(fit.city, divvy_slice, "2013-11")
    d = report.as_dict()
    assert report.days == pytest.approx(4.0, abs=0.01)
    assert 0.0 <= report.sim_empty_share <= 1.0 and 0.0 <= report.archive_empty_share <= 1.0
    assert report.bikes_added - report.bikes_added_skipped >= 0
    assert "empty_relative_error" in d and report.trips_sim > 0
    # A daily reset to the archive's counts starts each day where Chicago was: it changes the
    # trajectory, and with no moves replayed no drop-off is ever short of bikes.
    reset = validate_month(fit.city, divvy_slice, "2013-11", reset_daily=True, replay_moves=False)
    assert reset.reset_daily and reset.bikes_added_skipped == 0
    assert (reset.sim_empty_share, reset.sim_full_share) != (
        report.sim_empty_share,
        report.sim_full_share,
    )


def test_cli_calibrate_and_evaluate_on_the_fitted_city(divvy_slice: Path, tmp_path: Path) -> None:
    out = tmp_path / "city.toml"
    result = CliRunner().invoke(
        sim_app,
        ["calibrate", "--archive", str(divvy_slice), "--out", str(out), "--months", "2013-10",
         "--holdout", "2013-11", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["stations"] == 12 and load_city(out).n == 12
    assert report["operator_moves"]["moves"] >= 0 and "holdout" in report
    missing = CliRunner().invoke(
        sim_app,
        ["calibrate", "--archive", str(divvy_slice), "--out", str(out), "--months", "2012-01"],
    )
    assert missing.exit_code != 0
    evaluated = CliRunner().invoke(
        decide_app,
        ["evaluate", "--city", str(out), "--days", "0.1", "--seeds", "1", "--data-dir",
         str(tmp_path / "dd"), "--policies", "none,reactive", "--json"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    body = json.loads(evaluated.stdout)
    assert body["config"]["stations"] == 12 and body["config"]["city"].startswith("calibrated")
    assert set(body["policies"]) == {"none", "reactive"}


@pytest.mark.slow
def test_end_to_end_fit_on_two_months_check_on_the_third(tmp_path: Path) -> None:
    fit = calibrate(DIVVY, ("2013-09", "2013-10"))
    assert fit.city.n > 250 and fit.moves.count > 1000
    path = save_city(fit.city, tmp_path / "city.toml")
    report = validate_month(load_city(path), DIVVY, "2013-11")
    assert report.days > 25 and report.moves > 100
    for share in (report.sim_empty_share, report.sim_full_share):
        assert 0.0 <= share <= 1.0
