"""GBFS rendering against the official schemas, and exact, 1:1 fault injection."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema.validators import validator_for

from dockline.core.errors import ConfigError
from dockline.sim import (
    City,
    CityConfig,
    FaultConfig,
    FaultInjector,
    GbfsVersion,
    dumps,
    parse_faults,
    render_gbfs,
    render_station_information,
    render_station_status,
    render_system_information,
    render_vehicle_types,
)
from dockline.sim.faults import FAULT_NAMES, REJECTING_FAULTS

VERSIONS: tuple[GbfsVersion, ...] = ("2.3", "3.0")


def validate(gbfs_dir: Path, version: str, feed: str, doc: dict[str, Any]) -> None:
    schema = json.loads((gbfs_dir / "schemas" / f"v{version}" / f"{feed}.json").read_text())
    cls = validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = [
        f"{e.json_path}: {e.message}" for e in validator.iter_errors(orjson.loads(dumps(doc)))
    ]
    assert not errors, f"v{version} {feed}: {errors[:3]}"


def parse_time(value: Any, version: str) -> datetime:
    if version == "2.3":
        assert isinstance(value, int)
        return datetime.fromtimestamp(value, UTC)
    assert isinstance(value, str) and value.endswith("Z")
    return datetime.fromisoformat(value)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_unfaulted_document_validates(gbfs_dir: Path, version: GbfsVersion) -> None:
    city = City(CityConfig(stations=80, seed=1))
    city.run(45)
    t = city.time
    docs = {
        "gbfs": render_gbfs("http://127.0.0.1:8080/v", version, last_updated=t, ttl=60),
        "system_information": render_system_information(
            city.config, version, last_updated=t, ttl=60
        ),
        "vehicle_types": render_vehicle_types(version, last_updated=t, ttl=60),
        "station_information": render_station_information(city, version, last_updated=t, ttl=60),
        "station_status": render_station_status(city.status(), city.station_ids, version, ttl=7),
    }
    for feed, doc in docs.items():
        validate(gbfs_dir, version, feed, doc)
        assert parse_time(doc["last_updated"], version) == t
    status = docs["station_status"]
    assert status["ttl"] == 7
    records = status["data"]["stations"]
    assert len(records) == 80
    bikes_key = "num_bikes_available" if version == "2.3" else "num_vehicles_available"
    assert [r[bikes_key] for r in records] == city.bikes.tolist()
    for rec in records:
        reported = parse_time(rec["last_reported"], version)
        assert t - timedelta(seconds=60) < reported <= t
    info = docs["station_information"]["data"]["stations"][0]
    if version == "3.0":
        assert info["name"] == [{"text": city.names[0], "language": "en"}]
        assert docs["gbfs"]["data"]["feeds"][0]["name"] == "gbfs"
    else:
        assert info["name"] == city.names[0]
        assert "en" in docs["gbfs"]["data"]


def served(city: City, injector: FaultInjector, version: GbfsVersion) -> list[dict[str, Any]]:
    """One publication as a client would parse it."""
    status = injector.hold(city.time_s, city.status())
    past = city.past_counts(30)
    plan = injector.plan(
        city.time_s,
        status.last_reported,
        old_bikes=past[0] if past else None,
        old_docks=past[1] if past else None,
    )
    injector.commit(plan)
    doc = render_station_status(status, city.station_ids, version, ttl=60, plan=plan)
    records: list[dict[str, Any]] = orjson.loads(dumps(doc))["data"]["stations"]
    return records


def classify(
    rec: dict[str, Any],
    version: str,
    now_s: int,
    seen: Counter[str],
    held: dict[str, Any] | None = None,
) -> list[str]:
    """Every rejecting fault visible in ``rec`` (a consumer's view, written independently).

    ``held``: each station's previously published record; the same record again is a quiet
    station's (held) report, old but no fault.
    """
    bikes_key = "num_bikes_available" if version == "2.3" else "num_vehicles_available"
    required = ("station_id", bikes_key, "num_docks_available", "is_renting", "last_reported")
    found = []
    if any(k not in rec for k in required):
        found.append("missing_field")
        return found
    counts = (rec[bikes_key], rec["num_docks_available"])
    if any(not isinstance(c, int) for c in counts) or not isinstance(rec["is_renting"], bool):
        found.append("bad_type")
    elif any(c < 0 for c in counts):
        found.append("negative_count")
    ts = rec["last_reported"]
    sid = str(rec["station_id"])
    if version == "2.3" and ts > 1e11:
        ts //= 1000
    seconds = ts if version == "2.3" else int(datetime.fromisoformat(ts).timestamp())
    if seconds == 86_400:
        found.append("stale")
    elif seconds > now_s + 3600:
        found.append("future")
    elif held is None and seconds < now_s - 20 * 60:
        found.append("out_of_order")
    elif held is not None and not seen[sid]:
        # a consumer's watermark: older than the newest accepted record is late; the newest
        # accepted record again is a quiet station's held report (unchanged, no fault)
        snapshot = (seconds, counts, rec["is_renting"], rec.get("is_returning"))
        newest = held.get(sid)
        if newest is not None and seconds < newest[0]:
            found.append("out_of_order")
        elif newest == snapshot:
            seen[sid] += 1
            return []
        elif not found:
            held[sid] = snapshot
    if seen[sid]:
        found.append("duplicate")
    seen[sid] += 1
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_fault_counts_are_exact_and_one_per_record(version: GbfsVersion) -> None:
    faults = FaultConfig.all(0.02)
    city = City(CityConfig(stations=300, seed=5, faults=faults))
    injector = FaultInjector(faults, seed=5, n_stations=city.n)
    observed: Counter[str] = Counter()
    published = millis = numeric = 0
    unnamed = 0
    held: dict[str, Any] = {}
    for _ in range(60):
        city.step()
        records = served(city, injector, version)
        published += len(records)
        seen: Counter[str] = Counter()
        for rec in records:
            kinds = classify(rec, version, city.time_s, seen, held)
            assert len(kinds) <= 1, rec
            observed.update(kinds)
            if "station_id" in rec:
                numeric += isinstance(rec["station_id"], int)
            else:
                unnamed += 1
            if version == "2.3" and isinstance(rec.get("last_reported"), int):
                millis += rec["last_reported"] > 1e11
    counts = injector.counts
    assert counts.published_records == published
    for name in REJECTING_FAULTS:
        assert observed[name] == counts[name], name
        assert counts[name] > 0, name
    assert counts.expected_rejections["late"] == counts["out_of_order"]
    # Every record's id is a JSON number, except where missing_field removed the id.
    assert counts["numeric_ids"] == published == numeric + unnamed
    if version == "2.3":
        assert counts["millis"] == millis > 0
    assert counts["vanish"] > 0
    assert set(counts) == set(FAULT_NAMES)


def test_vanished_stations_disappear_and_come_back() -> None:
    faults = FaultConfig(vanish=0.05, vanish_minutes=(3, 3))
    city = City(CityConfig(stations=100, seed=8, faults=faults))
    injector = FaultInjector(faults, seed=8, n_stations=city.n)
    missing_runs: Counter[str] = Counter()
    absent: dict[str, int] = {}
    for _ in range(30):
        city.step()
        ids = {r["station_id"] for r in served(city, injector, "2.3")}
        for sid in city.station_ids:
            if sid not in ids:
                absent[sid] = absent.get(sid, 0) + 1
            elif sid in absent:
                missing_runs[sid] += 1
                assert absent.pop(sid) == 3  # gone exactly vanish_minutes publications
    assert injector.counts["vanish"] >= sum(missing_runs.values()) > 0


FIELDS = ("num_bikes_available", "num_docks_available", "is_renting", "is_returning")


def test_quiet_dead_and_on_change_stations_republish_their_previous_record() -> None:
    faults = FaultConfig(quiet=0.01, quiet_minutes=(10, 20), dead=0.002, on_change=0.3)
    city = City(CityConfig(stations=150, seed=5, faults=faults))
    injector = FaultInjector(faults, seed=5, n_stations=city.n)
    previous: dict[str, dict[str, Any]] = {}
    repeats: Counter[str] = Counter()
    runs: dict[str, int] = {}
    longest = 0
    for _ in range(90):
        city.step()
        records = {r["station_id"]: r for r in served(city, injector, "2.3")}
        for sid, rec in records.items():
            before = previous.get(sid)
            if before is not None and rec["last_reported"] == before["last_reported"]:
                # a held record is the previous one, counts and all
                assert all(rec[f] == before[f] for f in FIELDS), sid
                repeats[sid] += 1
                runs[sid] = runs.get(sid, 0) + 1
                longest = max(longest, runs[sid])
            else:
                runs[sid] = 0
            previous[sid] = rec
    counts = injector.counts
    assert counts.held_records == sum(repeats.values()) > 0
    assert counts["quiet"] > 0 and counts["dead"] > 0 and counts["on_change"] > 0
    assert longest >= 10  # a quiet spell lasts quiet_minutes publications at least
    assert counts.to_dict()["held_records"] == counts.held_records
    # nothing but held stations repeat: the city's own stations report every minute
    clean = City(CityConfig(stations=150, seed=5))
    plain = FaultInjector(FaultConfig(), seed=5, n_stations=clean.n)
    last: dict[str, int] = {}
    for _ in range(20):
        clean.step()
        for rec in served(clean, plain, "2.3"):
            assert rec["last_reported"] != last.get(rec["station_id"])
            last[rec["station_id"]] = rec["last_reported"]
    assert plain.counts.held_records == 0


def test_out_of_order_records_carry_an_older_snapshot() -> None:
    faults = FaultConfig(out_of_order=0.05)
    city = City(CityConfig(stations=200, seed=4, faults=faults))
    injector = FaultInjector(faults, seed=4, n_stations=city.n)
    lag = 30 * 60 + 7
    found = 0
    for _ in range(40):
        city.step()
        status = city.status()
        for rec, lr in zip(
            served(city, injector, "2.3"), status.last_reported.tolist(), strict=True
        ):
            if rec["last_reported"] != lr:
                assert rec["last_reported"] == lr - lag
                assert (rec["last_reported"] - lr) % 60 != 0  # never a real publication time
                found += 1
    assert found == injector.counts["out_of_order"] > 0


def test_parse_faults() -> None:
    cfg = parse_faults("stale=0.01, duplicate=0.02,out_of_order_lag=15m,vanish_minutes=2-4")
    assert (cfg.stale, cfg.duplicate, cfg.out_of_order_lag, cfg.vanish_minutes) == (
        0.01,
        0.02,
        timedelta(minutes=15),
        (2, 4),
    )
    assert parse_faults("all") == FaultConfig.all(0.005)
    assert parse_faults("all").millis == 0.005
    assert parse_faults("") == FaultConfig() == parse_faults(None)
    for bad in ("stale=2", "nonsense=0.1", "stale=abc", "stale=0.6,future=0.6"):
        with pytest.raises(ConfigError):
            parse_faults(bad)
