"""Every GBFS fixture (MobilityData, v2.3 and v3.0) through the schemas and the real code path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema.validators import validator_for

from dockline.core.config import IngestConfig
from dockline.core.contracts import STATION_INFORMATION_SCHEMA, STATION_STATUS_SCHEMA, RejectReason
from dockline.core.time import from_micros
from dockline.ingest import StationStatusNormalizer, normalize_station_information, parse_discovery
from dockline.ingest._time import parse_timestamp

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "gbfs" / "fixtures"
SCHEMAS = FIXTURES.parent / "schemas"
ALL_FIXTURES = sorted(FIXTURES.glob("v*/*/*.json"))
# The README: the spec examples of gbfs.json and one v3.0 system_information break the schema.
INVALID = {
    "v2.3/mobilitydata-spec-examples/gbfs.json",
    "v3.0/mobilitydata-spec-examples/gbfs.json",
    "v3.0/mobilitydata-spec-examples/system_information-2.json",
}


def rel(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


def feed_of(path: Path) -> str:
    return path.stem.split("-")[0]


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_fixture_set_is_there() -> None:
    assert len(ALL_FIXTURES) >= 50
    assert all((FIXTURES / name).exists() for name in INVALID)


WITH_SCHEMA = [p for p in ALL_FIXTURES if (SCHEMAS / p.parts[-3] / f"{feed_of(p)}.json").exists()]


@pytest.mark.parametrize("path", WITH_SCHEMA, ids=rel)
def test_fixture_against_official_schema(path: Path) -> None:
    schema = load(SCHEMAS / path.parts[-3] / f"{feed_of(path)}.json")
    cls = validator_for(schema)
    cls.check_schema(schema)
    errors = list(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(load(path)))
    if rel(path) in INVALID:
        assert errors, f"{rel(path)} should be rejected by the schema"
        assert all(e.message for e in errors)
    else:
        assert not errors, [e.message for e in errors]


def test_the_invalid_fixtures_fail_for_the_documented_reasons() -> None:
    schema = load(SCHEMAS / "v3.0" / "system_information.json")
    cls = validator_for(schema)
    messages = [
        e.message
        for e in cls(schema).iter_errors(
            load(FIXTURES / "v3.0/mobilitydata-spec-examples/system_information-2.json")
        )
    ]
    assert any("is a required property" in m for m in messages)


STATUS = [p for p in ALL_FIXTURES if feed_of(p) == "station_status"]
INFO = [p for p in ALL_FIXTURES if feed_of(p) == "station_information"]


@pytest.mark.parametrize("path", STATUS, ids=rel)
def test_station_status_fixture_parses(path: Path) -> None:
    payload = path.read_bytes()
    raw = orjson.loads(payload)
    stations = raw["data"]["stations"]
    newest = max(parse_timestamp(s["last_reported"]) for s in stations)
    norm = StationStatusNormalizer("fixture", IngestConfig())
    batch = norm.normalize_document(payload, ingested_at=from_micros(newest), batch_id=rel(path))
    assert batch.received == len(stations)
    assert batch.accepted.schema == STATION_STATUS_SCHEMA
    assert batch.version == raw["version"]
    assert batch.last_updated is not None and batch.last_updated.utcoffset() == timedelta(0)
    without_docks = [s["station_id"] for s in stations if "num_docks_available" not in s]
    # num_docks_available is optional in the schema (virtual stations) but required by our
    # contract: such records are dead-lettered, everything else is accepted
    assert batch.accepted.num_rows == len(stations) - len(without_docks)
    assert [(d.key, d.reason) for d in batch.dead_letters] == [
        (sid, RejectReason.MISSING_FIELD) for sid in without_docks
    ]
    for row, station in zip(
        batch.accepted.to_pylist(),
        [s for s in stations if s["station_id"] not in without_docks],
        strict=True,
    ):
        assert row["station_id"] == station["station_id"]
        assert row["event_ts"].utcoffset() == timedelta(0)
        assert row["event_ts"] == from_micros(parse_timestamp(station["last_reported"]))
        bikes = station.get("num_vehicles_available", station.get("num_bikes_available"))
        assert row["num_bikes_available"] == bikes
        assert row["num_docks_available"] == station["num_docks_available"]


@pytest.mark.parametrize("path", INFO, ids=rel)
def test_station_information_fixture_parses(path: Path) -> None:
    payload = path.read_bytes()
    raw = orjson.loads(payload)
    at = from_micros(parse_timestamp(raw["last_updated"]))
    batch = normalize_station_information(payload, source="f", ingested_at=at, batch_id="x")
    assert batch.dead_letters == []
    assert batch.accepted.num_rows == len(raw["data"]["stations"])
    assert batch.accepted.schema == STATION_INFORMATION_SCHEMA
    rows = batch.accepted.to_pylist()
    for row, station in zip(rows, raw["data"]["stations"], strict=True):
        assert row["event_ts"] == at and row["event_ts"].utcoffset() == timedelta(0)
        assert isinstance(row["name"], str) and row["name"]
        assert row["lat"] == station["lat"]
        assert row["capacity"] == station.get("capacity")


DISCOVERY = [p for p in ALL_FIXTURES if p.name == "gbfs.json"]


@pytest.mark.parametrize("path", DISCOVERY, ids=rel)
def test_discovery_parses_every_gbfs_json(path: Path) -> None:
    raw = load(path)
    found = parse_discovery(raw, "http://example.test/gbfs.json")
    assert found.version == raw["version"]
    assert "station_information" in found.feeds
    if raw["version"].startswith("2."):
        assert found.language == "en"
        expected = {f["name"]: f["url"] for f in raw["data"]["en"]["feeds"]}
    else:
        expected = {f["name"]: f["url"] for f in raw["data"]["feeds"]}
    assert found.feeds == expected
