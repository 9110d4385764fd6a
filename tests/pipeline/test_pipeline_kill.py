"""``kill -9`` of the ingester mid-stream, then restart: no lost and no duplicated rows.

The ingester runs as a real ``dockline ingest --feed`` process against a simulated city served
from this test process. The test pauses the simulated clock around the kill, so the publication
the killed process may have been committing is still the one served when the new process starts:
then "no loss" is exact — every record the simulator published is accepted or dead-lettered.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from dockline.core.time import FixedClock
from dockline.pipeline.platform import Platform
from dockline.sim import City, CityConfig, FaultConfig, SimServer


class _Ticker:
    """Advances the simulated clock one minute every ``interval`` seconds while running."""

    def __init__(self, clock: FixedClock, interval: float = 0.03) -> None:
        self.clock = clock
        self.interval = interval
        self.running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.running.is_set():
                self.clock.advance(timedelta(minutes=1))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _ingest(data_dir: Path, url: str, duration: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dockline",
            "--data-dir",
            str(data_dir),
            "ingest",
            "--feed",
            url,
            "--clock",
            "feed",
            "--duration",
            duration,
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _log_rows(data_dir: Path) -> int:
    log = Platform.open(data_dir).open_log()
    try:
        return sum(log.end_offsets("station_status").values())
    except KeyError:
        return 0
    finally:
        log.close()


class _StatusRequests:
    """Counts station_status requests the simulator answers (a spy on the real server)."""

    def __init__(self, server: SimServer) -> None:
        self.count = 0
        self._handle = server.handle
        server.handle = self  # type: ignore[method-assign]

    def __call__(self, path: str, headers: dict[str, str]) -> object:
        if "station_status" in path:
            self.count += 1
        return self._handle(path, headers)

    def wait_for_more(self, than: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count <= than:
            assert time.monotonic() < deadline, "the ingester never fetched station_status"
            time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_of_the_ingester_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # every fault but the quiet feeds: a held record is counted `unchanged` by an ingester that
    # is then killed, so "every record is a row or a dead letter" would not be exact
    faults = dataclasses.replace(FaultConfig.all(0.01), quiet=0.0, dead=0.0, on_change=0.0)
    city = City(CityConfig(stations=80, seed=5, faults=faults))
    clock = FixedClock(city.time)
    with SimServer(city, speed=2000.0, clock=clock) as server:
        requests = _StatusRequests(server)
        ticker = _Ticker(clock)
        try:
            url = server.url + "/gbfs.json"

            def start(duration: str) -> subprocess.Popen[bytes]:
                # the clock stays paused until the new process has fetched the publication the
                # previous one may have died committing: only then is "no loss" exact
                before = requests.count
                process = _ingest(data_dir, url, duration)
                requests.wait_for_more(before)
                return process

            for round_ in range(2):  # kill it twice, at different moments
                first = start("60s")
                deadline = time.monotonic() + 30
                ticker.running.set()
                while _log_rows(data_dir) < 2_000 * (round_ + 1) and time.monotonic() < deadline:
                    time.sleep(0.05)
                ticker.running.clear()
                # kill only once it has fetched the publication that stays current: everything
                # older is then committed (it works in order), and the restart refetches this one.
                # (A publication fetched, then replaced before it was committed, is gone from a
                # current-state feed for any consumer: that loss is the feed's, not ours.)
                requests.wait_for_more(requests.count)
                os.kill(first.pid, signal.SIGKILL)
                first.communicate(timeout=10)  # reap it and close its pipes
                assert first.returncode == -signal.SIGKILL
            second = start("8s")
            ticker.running.set()
            time.sleep(1.5)
            ticker.running.clear()  # let it catch up with the last publication, then finish
            _out, err = second.communicate(timeout=60)
            assert second.returncode == 0, err.decode()
        finally:
            ticker.close()
        stats = server.stats()

    platform = Platform.open(data_dir)
    store = platform.open_deadletters()
    try:
        dead = store.counts()
    finally:
        store.close()
    pattern = str(platform.data.offline("station_status") / "**" / "*.parquet")
    row = duckdb.execute(
        "select count(*), count(distinct (station_id, event_ts)) from read_parquet(?)", [pattern]
    ).fetchone()
    assert row is not None
    rows, distinct = row
    assert rows == distinct, "a restart duplicated rows"
    assert rows == _log_rows(data_dir)
    assert dead == {k: v for k, v in stats["expected_rejections"].items() if v}  # type: ignore[attr-defined]
    assert rows + sum(dead.values()) == stats["published_records"], "records were lost"
