"""The dashboard's fixtures: one served data dir for every UI test, and a headless Chromium.

The data dir is real end to end: a simulated archive ingested up to a cut, the offline store, a
PIT dataset, a trained and registered model made champion, the serving app running over HTTP
with a few minutes of traffic; then the rest of the archive ingested three hours later (so the
first predictions' labels are known), more traffic, and one decision cycle audited.

Debian's ``chromium`` is driven by Playwright (``executable_path``; never ``playwright
install``): missing, the browser tests skip with an install hint, except under ``CI=true``
where they fail.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dockline.core.decisions import decode_decision
from dockline.core.time import FixedClock
from dockline.monitor.predictions import read_prediction_log
from dockline.pipeline.decide import decision_log
from dockline.pipeline.features import build_dataset, materialize
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.lineage import record_alias_move
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.pipeline.train import TrainSummary, open_registry, train_model
from dockline.pipeline.ui_api import stations
from dockline.sim import CityConfig, write_archive

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "no Debian chromium at /usr/bin/chromium: as root, `apt-get install -y chromium`"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONFIG = """\
[train]
candidates = ["logistic"]
n_trials = 0
cv_folds = 2

[serve]
prediction_flush_interval = "200ms"
"""


@dataclass
class Served:
    platform: Platform
    url: str
    summary: TrainSummary
    stations: list[str]
    decision_id: str


def _wait_for_log(root: Path, newest: datetime, deadline_s: float = 15.0) -> None:
    """Until the log holds the requests made at ``newest`` (files of earlier traffic are not
    enough: the pages read the latest prediction of each station)."""
    stop = time.monotonic() + deadline_s
    while True:
        rows = read_prediction_log(root, columns=["logged_at"])
        if rows.num_rows and pc.max(rows["logged_at"]).as_py() >= newest:
            return
        if time.monotonic() > stop:
            raise AssertionError("the prediction log was not flushed")
        time.sleep(0.05)


def _decide_once(client: httpx.Client, platform: Platform) -> str:
    """One reactive cycle over the served stations through ``POST /v1/decide``, audited."""
    stations = client.get("/v1/stations").json()["stations"]
    states = [
        {
            "station_id": s["station_id"],
            "bikes": s["status"]["bikes"],
            "docks": s["status"]["docks"],
            "capacity": s["capacity"],
            "lat": s["lat"],
            "lon": s["lon"],
            "as_of": s["status"]["at"],
        }
        for s in stations
        if s["status"] is not None
    ]
    first = states[0]
    fleet = [
        {"truck_id": f"truck-{k}", "lat": first["lat"], "lon": first["lon"], "load": 0}
        for k in (1, 2)
    ]
    body: dict[str, Any] = {
        "stations": states,
        "fleet": fleet,
        "policy": "predictive",
        # the archive ends near midnight in Chicago: open the service day for the test
        "constraints": {"service_start_hour": 0, "service_end_hour": 24, "max_eta_min": 240},
    }
    r = client.post("/v1/decide", json=body)
    assert r.status_code == 200, r.text
    decision = decode_decision(r.content)
    decision_log(platform.data.root).append([decision])
    return decision.decision_id


def _split_archive(full: Path, cut: datetime, first: Path, rest: Path) -> None:
    """The archive up to ``cut`` in ``first``, the reports after it in ``rest``: the feed as it
    stood when serving started, and what it reported afterwards."""
    status = pq.read_table(full / "station_status" / f"{cut:%Y-%m}.parquet")
    before = pc.less_equal(status["obs_ts"], pa.scalar(cut, status.schema.field("obs_ts").type))
    for out, rows in ((first, status.filter(before)), (rest, status.filter(pc.invert(before)))):
        (out / "station_status").mkdir(parents=True)
        pq.write_table(rows, out / "station_status" / f"{cut:%Y-%m}.parquet")
        shutil.copy(full / "station_information.parquet", out / "station_information.parquet")


def _traffic(client: httpx.Client, clock: FixedClock, ids: list[str], minutes: int) -> None:
    """A few minutes of requests: the batch path for every station and single ones."""
    for minute in range(minutes):
        if minute:
            clock.advance(timedelta(minutes=1))
        r = client.post("/v1/predict/batch", json={"entities": ids})
        assert r.status_code == 200, r.text
        for station in ids[: 5 + 2 * minute]:
            r = client.post("/v1/predict", json={"entity": station})
            assert r.status_code == 200, r.text


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("ui-city")
    archive = write_archive(
        CityConfig(stations=25, seed=3, step=timedelta(minutes=5)), 4, tmp / "archive"
    )
    assert archive.first_ts is not None and archive.last_ts is not None
    cut = archive.last_ts - timedelta(hours=3)
    _split_archive(tmp / "archive", cut, tmp / "first", tmp / "rest")
    (tmp / "data").mkdir()
    (tmp / "data" / "dockline.toml").write_text(CONFIG, encoding="utf-8")
    clock = FixedClock(cut + timedelta(minutes=2))
    platform = Platform.open(tmp / "data", clock=clock)
    ingest_archive(platform, tmp / "first", source="archive:ui")
    sink_offline(platform)
    materialize(platform)
    out = platform.data.datasets / "ui-empty"
    build_dataset(
        platform,
        label="empty_next_hour",
        start=archive.first_ts + timedelta(hours=12),
        end=cut - timedelta(hours=1),
        every=timedelta(minutes=20),
        out=out,
    )
    summary = train_model(platform, dataset=out, actor="test")
    if summary.alias != "champion":  # a tiny city may not beat persistence: serve it anyway
        event = open_registry(platform).set_alias(
            summary.model_name,
            "champion",
            summary.version,
            actor="test",
            reason="the dashboard tests serve it",
            action="promote",
        )
        record_alias_move(platform, event)
    with BackgroundServer(create_serving_app(platform)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ids = [s["station_id"] for s in stations(platform)["stations"]]
            _traffic(client, clock, ids, 4)
            # the feed goes on for three hours: the predictions' labels become known
            clock.advance(timedelta(hours=3))
            ingest_archive(platform, tmp / "rest", source="archive:ui-later")
            sink_offline(platform)
            materialize(platform)
            _traffic(client, clock, ids, 3)
            _wait_for_log(platform.data.serving_predictions, clock.now())
            decision_id = _decide_once(client, platform)
        clock.advance(timedelta(minutes=1))  # time passes: the monitor reads [start, now)
        yield Served(platform, server.url, summary, ids, decision_id)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (skips without it; fails under CI=true)."""
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMIUM)):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{INSTALL_HINT}; under CI=true this is a failure", pytrace=False)
        pytest.skip(INSTALL_HINT)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
