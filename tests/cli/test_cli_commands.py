"""The CLI for real: subprocesses, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest


def dockline(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dockline`` and return the finished process."""
    prefix = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "dockline", *prefix, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def json_of(result: subprocess.CompletedProcess[str], *, code: int = 0) -> Any:
    assert result.returncode == code, result.stderr
    return orjson.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_commands() -> None:
    result = dockline("--help")
    assert result.returncode == 0
    for command in ("demo", "sim", "ingest", "deadletters"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("ingest",), ("exactly one of --feed", "--archive")),
        (
            ("ingest", "--archive", "/nonexistent/archive"),
            ("/nonexistent/archive", "does not exist"),
        ),
        (("ingest", "--archive", ".", "--map", "obs_ts"), ("--map", "source=target")),
        (("sim", "serve", "--faults", "stale=2"), ("stale", "[0, 1]")),
        (
            ("ingest", "--feed", "http://127.0.0.1:9/gbfs.json", "--duration", "1s"),
            ("127.0.0.1:9",),
        ),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    tmp_path: Path, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    assert_one_line_error(dockline(*args, data_dir=tmp_path), *fragments)


def test_bad_config_file_names_the_file_and_setting(tmp_path: Path) -> None:
    (tmp_path / "dockline.toml").write_text("[ingest]\nallowed_latenes = 5\n")
    result = dockline("deadletters", data_dir=tmp_path)
    assert_one_line_error(result, "dockline.toml", "allowed_latenes")


def test_sim_archive_then_import_accounts_for_every_row(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    written = json_of(
        dockline(
            "sim", "archive", "--stations", "25", "--days", "0.5", "--out", str(archive), "--json"
        )
    )
    assert (archive / "station_status").is_dir()
    summary = json_of(dockline("ingest", "--archive", str(archive), "--json", data_dir=tmp_path))
    assert summary["received"] == written["rows"]
    assert summary["accepted"] + sum(summary["dead_letters"].values()) == summary["received"]
    assert summary["stations"] == 25
    assert summary["offline_rows_written"]["station_status"] == summary["accepted"]
    # importing the same archive again resumes after the last batch: nothing is added twice
    again = json_of(dockline("ingest", "--archive", str(archive), "--json", data_dir=tmp_path))
    assert again["accepted"] == 0 and again["skipped_records"] == again["received"]
    assert again["offline_rows_written"]["station_status"] == 0


def _status_doc(last_updated: int, stations: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {"last_updated": last_updated, "ttl": 60, "version": "2.3", "data": {"stations": stations}}
    )


def _station(station_id: str, last_reported: int, bikes: object = 3) -> dict[str, Any]:
    return {
        "station_id": station_id,
        "num_bikes_available": bikes,
        "num_docks_available": 7,
        "is_installed": True,
        "is_renting": True,
        "is_returning": True,
        "last_reported": last_reported,
    }


def test_dead_letters_report_and_replay_after_a_fix(tmp_path: Path) -> None:
    now = 1_714_978_800  # 2024-05-06T07:00:00Z
    archive = tmp_path / "json"
    archive.mkdir()
    three_days = 3 * 86_400
    (archive / "station_status_1.json").write_bytes(
        _status_doc(
            now,
            [
                _station("a", now - 30),
                _station("b", now - three_days),  # stale under the default stale_after of 1 day
                _station("c", now - 20, bikes="seven"),  # bad type: no config fixes this
            ],
        )
    )
    # most of it was rejected: the run says so loudly and exits 1, the summary still printed
    ingest = dockline("ingest", "--archive", str(archive), "--json", data_dir=tmp_path)
    summary = json_of(ingest, code=1)
    assert "ingest alarm" in ingest.stderr and "[ingest] settings" in ingest.stderr
    assert summary["accepted"] == 1 and summary["alarm"]
    assert summary["dead_letters"] == {"bad_type": 1, "stale": 1}

    report = json_of(dockline("deadletters", "--json", data_dir=tmp_path))
    assert report["counts"] == {"bad_type": 1, "stale": 1}
    assert report["examples"]["stale"][0]["key"] == "b"
    assert "seven" in report["examples"]["bad_type"][0]["raw"]

    # the fix: this source publishes stations that report rarely; accept up to a week
    (tmp_path / "dockline.toml").write_text('[ingest]\nstale_after = "P7D"\n')
    replayed = json_of(dockline("deadletters", "--replay", "--json", data_dir=tmp_path))
    assert replayed == {"replayed": 2, "accepted": 1, "still_rejected": 1, "not_replayable": 0}
    after = json_of(dockline("deadletters", "--json", data_dir=tmp_path))
    assert after["pending"] == {"bad_type": 1}
    # a second replay finds only the letter that still fails
    again = json_of(dockline("deadletters", "--replay", "--json", data_dir=tmp_path))
    assert again == {"replayed": 1, "accepted": 0, "still_rejected": 1, "not_replayable": 0}


def test_demo_accounts_for_every_published_record(tmp_path: Path) -> None:
    result = dockline(
        "demo",
        "--stations",
        "40",
        "--hours",
        "0.5",
        "--speed",
        "1200",
        "--history-days",
        "0",
        "--json",
        data_dir=tmp_path,
    )
    report = json_of(result)
    # Its report (on stderr with --json) is piped here: whole lines, not wrapped at 80 columns.
    first = result.stderr.splitlines()[0]
    assert first.startswith("dockline demo") and first.rstrip().endswith(str(tmp_path)), first
    assert report["received"] == report["published_records"] > 0
    assert report["dead_letters"] == report["expected_dead_letters"]
    assert report["offline_distinct_rows"] == report["offline_rows"] == report["accepted"]
    assert report["features"]["consistency_match_rate"] == 1.0
    assert report["features"]["dataset"] is None  # half an hour leaves no label horizon
    # The simulated feed restarts at the same times, so a used data dir would skip all of it:
    # a second run says so in one line instead of failing on accounting half-way.
    again = dockline("demo", "--stations", "40", "--hours", "0.5", data_dir=tmp_path)
    assert_one_line_error(again, str(tmp_path), "empty data dir")


@pytest.mark.slow
def test_demo_trains_registers_and_serves_a_champion(tmp_path: Path) -> None:
    """The whole loop: history → features → training set → champion → real HTTP answers."""
    report = json_of(
        dockline(
            "demo",
            "--stations",
            "40",
            "--hours",
            "1",
            "--speed",
            "1800",
            "--history-days",
            "3",
            "--json",
            data_dir=tmp_path,
        )
    )
    assert report["history"]["accepted"] == report["history"]["rows"] > 0
    assert report["features"]["dataset_rows"] > 0
    model = report["model"]
    assert model["alias"] == "champion" and model["version"] == 1
    bundles = (tmp_path / "bundles").iterdir()
    assert any(path.name.startswith(model["bundle_id"]) for path in bundles)
    metric = model["primary_metric"]
    assert model["test_metrics"][metric] > max(model["baselines"].values())
    serving = report["serving"]
    assert serving["statuses"] == {"200": serving["requests"]}
    assert serving["batch_status"] == 200 and serving["batch_items"] == 40
    assert serving["unknown_entity"] == [404, "unknown_entity"]
    assert serving["malformed"][0] == 422
    # P7 at the end: decision cycles over HTTP (audited, sent to the truck API) and a scored day
    assert len(serving["decisions"]) == 3
    assert all(c["refused"] == 0 and c["accepted"] == c["actions"] for c in serving["decisions"])
    assert set(serving["evaluation"]) == {"none", "reactive", "predictive", "oracle"}
    # the scored day's predictive policy acted on the champions this demo trained
    forecaster = serving["evaluation_forecaster"]
    assert forecaster.startswith("model:empty:1/full:") and model["bundle_id"] in forecaster
    assert (
        serving["evaluation"]["oracle"]["empty_full_minutes"]
        <= (serving["evaluation"]["none"]["empty_full_minutes"])
    )
    # P6: the monitor cycle canaried a deliberately bad challenger and rolled it back itself
    canary = report["monitor"]["canary"]
    assert canary["action"] == "rollback" and canary["alias"] == "challenger"
    assert canary["windows"] <= 2 and set(canary["verdicts"]) == {"fail"}
    assert "prediction_shift" in canary["reason"]
    assert canary["routing_after"] == "champion" and canary["champion_after"] == 1
    assert report["monitor"]["health"] and report["monitor"]["drift"]


def test_the_readme_live_feed_recipe_accepts_the_simulated_feed(tmp_path: Path) -> None:
    """`dockline sim serve … --faults all` then `dockline ingest --feed …`, flags as in the
    README: the simulator announces its clock and ingest follows it by default (it used to
    dead-letter everything as stale and exit 0)."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    sim = subprocess.Popen(
        [sys.executable, "-m", "dockline", "sim", "serve", "--stations", "30", "--speed", "600",
         "--port", str(port), "--faults", "all", "--duration", "2m"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/gbfs.json"
        deadline = time.monotonic() + 30
        while True:
            assert sim.poll() is None, sim.stderr.read() if sim.stderr else ""
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the simulator never answered"
            time.sleep(0.1)
        result = dockline("ingest", "--feed", url, "--duration", "8s", "--json", data_dir=tmp_path)
        summary = json_of(result)
        assert summary["accepted"] > 0 and summary["alarm"] is None
        # only the injected faults (about 3.5 % of records) are dead letters, not everything
        assert sum(summary["dead_letters"].values()) < 0.1 * summary["received"]
    finally:
        sim.terminate()
        sim.communicate(timeout=30)  # reaps it and closes its stderr pipe
