"""Helpers for the online-feature tests: a feed-shaped event stream and a reference "offline"."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
from reference import reference_features

from dockline.core.contracts import STATION_INFORMATION_SCHEMA, STATION_STATUS_SCHEMA, TS_TYPE
from dockline.features import load_project
from dockline.features.plan import Plan, compile_project

S = 1_000_000
M = 60 * S
T0 = 1_714_550_400 * S  # 2024-05-01 08:00 UTC (03:00 in Chicago)
REPO_EXAMPLE = "examples/bikeshare"


def bikeshare_plan(*, batch: bool = True) -> Plan:
    """The real bike-share plan; ``batch=False`` drops the batch features (and what uses them)."""
    project = load_project(_example_path())
    if not batch:
        project = dataclasses.replace(
            project,
            profiles=[],
            neighbourhoods=[],
            derived=[d for d in project.derived if d.name == "fill_ratio"],
        )
    return compile_project(project)


def _example_path() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2] / REPO_EXAMPLE)


def feed_events(
    stations: int, polls: int, *, seed: int = 0, start: int = T0, every: int = M
) -> list[dict[str, Any]]:
    """Station-status events as a GBFS poller produces them: one poll per ``every``, every event
    of a poll stamped with the poll's ``ingested_at``; ``event_ts`` (last_reported) lags by up to
    90 s, a few are 20 s in the future, stations that did not report again are absent."""
    rng = random.Random(seed)
    bikes = {f"s{i:03d}": rng.randrange(0, 12) for i in range(stations)}
    last: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for k in range(polls):
        polled = start + k * every + 10 * S
        for station in bikes:
            if rng.random() < 0.15:
                continue  # no new report this poll
            ts = polled + 20 * S if rng.random() < 0.03 else polled - rng.randrange(0, 90) * S
            if ts <= last.get(station, -1):
                continue
            last[station] = ts
            bikes[station] = max(0, min(15, bikes[station] + rng.choice([-2, -1, 0, 0, 1, 2])))
            out.append(
                {
                    "station_id": station,
                    "event_ts": ts,
                    "ingested_at": polled,
                    "num_bikes_available": bikes[station],
                    "num_docks_available": 15 - bikes[station],
                    "capacity": 15 if rng.random() > 0.05 else None,
                    "is_installed": True,
                    "is_renting": rng.random() > 0.05,
                    "is_returning": rng.random() > 0.05,
                    "source": "test",
                }
            )
    return out


def info_events(stations: int, *, at: int = T0) -> list[dict[str, Any]]:
    """One station_information event per station, known at ``at``."""
    return [
        {
            "station_id": f"s{i:03d}",
            "event_ts": at,
            "ingested_at": at,
            "name": f"Station {i}",
            "lat": 41.8 + i / 1000,
            "lon": -87.6 - i / 1000,
            "capacity": 15,
            "region_id": None,
            "source": "test",
        }
        for i in range(stations)
    ]


def close_enough(a: object, b: object) -> bool:
    """Both null, or within 1e-9 relative (absolute below 1): the consistency tolerance."""
    if a is None or b is None:
        return a is None and b is None
    x, y = float(a), float(b)  # type: ignore[arg-type]
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def status_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of the station_status contract."""
    return pa.Table.from_pylist(list(rows), STATION_STATUS_SCHEMA)


def info_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of the station_information contract."""
    return pa.Table.from_pylist(list(rows), STATION_INFORMATION_SCHEMA)


class ReferenceOffline:
    """An "offline executor" computed by the brute-force reference (``features(spine)``)."""

    def __init__(self, plan: Plan, events: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.plan = plan
        self.events = events
        self.calls = 0

    def features(self, spine: pa.Table, *, labels: bool = False) -> pa.Table:
        """Reference values for every spine row, sorted by (as_of, key)."""
        self.calls += 1
        keys = spine.column(self.plan.key).to_pylist()
        times = spine.column("as_of").cast(pa.int64()).to_pylist()
        points = sorted(zip(keys, times, strict=True), key=lambda p: (p[1], p[0]))
        rows = reference_features(self.plan, self.events, points)
        columns: dict[str, pa.Array] = {
            self.plan.key: pa.array([p[0] for p in points], pa.string()),
            "as_of": pa.array([p[1] for p in points], TS_TYPE),
        }
        for group in self.plan.groups:
            columns[group.as_of_column] = pa.array([r[group.as_of_column] for r in rows], TS_TYPE)
        for name in self.plan.feature_names:
            columns[name] = pa.array([r[name] for r in rows], pa.float64())
        return pa.table(columns)
