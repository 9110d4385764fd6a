"""The demo's accounting on a short run: a rejecting fault the simulator never injected.

``dockline demo`` failed now and then under machine load: a loaded poller fetches fewer
publications in the same simulated half hour, so at the demo's low fault rate some rejecting
fault (``bad_type`` in the runs seen) was never injected. The simulator lists every reason with
its count, zeros included; an ingest summary lists only the reasons it met; the demo compared
the two dicts as they were, so ``{..., 'bad_type': 0}`` never equalled the dead letters. Here
the same city is followed for a few publications with a fixed clock (no load needed).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dockline.core.contracts import IngestSummary
from dockline.core.errors import ContractError
from dockline.core.time import FixedClock
from dockline.pipeline.demo import DEMO_FAULT_RATE, DEMO_START, accounting_report, check_accounting
from dockline.pipeline.ingest import ingest_feed, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import City, CityConfig, FaultConfig, SimServer

PUBLICATIONS = 16  # what a loaded demo run fetched of its 30 simulated minutes


def _follow_like_the_demo(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo's city (40 stations, seed 7, its faults), one fetch per publication."""
    city = City(
        CityConfig(stations=40, seed=7, start=DEMO_START, faults=FaultConfig.all(DEMO_FAULT_RATE))
    )
    clock = FixedClock(city.time)
    end = city.time + timedelta(minutes=PUBLICATIONS)
    platform = Platform.open(tmp_path / "data")
    with SimServer(city, speed=1200.0, clock=clock) as server:

        def advance(summary: IngestSummary) -> None:
            clock.advance(timedelta(minutes=1))

        summary = ingest_feed(
            platform,
            f"{server.url}/gbfs.json",
            stop=lambda: clock.now() >= end,
            clock_source="feed",
            on_progress=advance,
        )
        stats = server.stats()
    reports = sink_offline(platform)
    sunk = {t: r.records for t, r in reports.items()}
    return accounting_report(platform, summary, stats, sunk), stats


def test_a_reason_never_injected_is_not_a_disagreement(tmp_path: Path) -> None:
    report, stats = _follow_like_the_demo(tmp_path)
    assert 0 < report["publications"] <= PUBLICATIONS
    never = [reason for reason, n in stats["expected_rejections"].items() if n == 0]
    assert never, "the run must leave some rejecting fault uninjected to test this"
    assert sum(report["dead_letters"].values()) > 0  # and inject others
    check_accounting(report)  # raised ContractError("dead letters ... differ ...") before
    assert report["dead_letters"] == report["expected_dead_letters"]
    assert report["received"] == report["published_records"]
    # the check is as strict as before: one dead letter more, or of another reason, fails it
    reason, n = next(iter(report["dead_letters"].items()))
    for wrong in ({**report["dead_letters"], reason: n + 1}, {**report["dead_letters"], "x": 1}):
        with pytest.raises(ContractError, match="differ from the injected faults"):
            check_accounting({**report, "dead_letters": wrong})


def test_held_records_are_what_a_consumer_counts_unchanged(tmp_path: Path) -> None:
    """A quiet station republishes its last values; when the publication that drew them faulted
    its record or left it out, the consumer never accepted them, so the repeat is a new event
    to it — the simulator counted it held regardless (373 held for 369 unchanged here)."""
    city = City(CityConfig(stations=40, seed=1, faults=FaultConfig.all(0.03)))
    clock = FixedClock(city.time)
    end = city.time + timedelta(minutes=30)
    platform = Platform.open(tmp_path / "data")
    with SimServer(city, speed=1200.0, clock=clock) as server:
        summary = ingest_feed(
            platform,
            f"{server.url}/gbfs.json",
            stop=lambda: clock.now() >= end,
            clock_source="feed",
            on_progress=lambda _: clock.advance(timedelta(minutes=1)),
        )
        stats = server.stats()
    assert stats["held_records"] > 0 and stats["faults"]["vanish"] > 0
    assert summary.unchanged == stats["held_records"]
    nonzero = {reason: n for reason, n in stats["expected_rejections"].items() if n}
    assert summary.dead_letters == nonzero
    assert summary.received == stats["published_records"]
