"""The CLI habits users bring from git, dbt and mlflow (issue 13), on the installed command."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest
from _run import DOCKLINE, env, ok_json, one_line_error, run
from typer.main import get_command
from typer.testing import CliRunner

from dockline.cli import app
from dockline.core.contracts import GateVerdict
from dockline.train.registry import TAG_BUNDLE_ID, TAG_GATE, mlflow_client


def test_global_options_are_accepted_after_the_command_too(
    filled_data_dir: Path, tmp_path: Path
) -> None:
    data = str(filled_data_dir)
    after = ok_json(run("deadletters", "--data-dir", data, "--json", cwd=tmp_path))
    before = ok_json(run("--data-dir", data, "--json", "deadletters", cwd=tmp_path))
    mixed = ok_json(run("--json", "deadletters", "--data-dir", data, cwd=tmp_path))
    assert after == before == mixed and "counts" in after


def test_short_help_and_version(tmp_path: Path) -> None:
    for args in (("-h",), ("features", "-h"), ("models", "list", "-h")):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Usage: dockline" in result.stdout
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.strip() == "dockline 0.1.0"


def _register(db: Path, name: str, *, passed: bool) -> None:
    """A version as `dockline train` leaves it: a bundle id tag and a gate verdict tag."""
    client = mlflow_client(f"sqlite:///{db}")
    client.create_registered_model(name)
    gate = GateVerdict(
        passed=passed,
        primary_metric="pr_auc",
        higher_is_better=True,
        value=0.42,
        margin=0.0,
        ece=0.01,
        max_ece=0.05,
        reasons=[] if passed else ["pr_auc 0.4200 does not beat baseline persistence 0.5000"],
    )
    client.create_model_version(
        name,
        (db.parent / "artifacts" / name).as_uri(),
        tags={TAG_BUNDLE_ID: f"bundle-{name}", TAG_GATE: gate.model_dump_json()},
    )


@pytest.mark.slow  # MLflow creates its store and answers six commands: about a minute here
def test_models_list_without_a_name_lists_every_model(data_copy: Path, tmp_path: Path) -> None:
    empty = run("models", "list", "--data-dir", str(data_copy), cwd=tmp_path)
    assert empty.returncode == 0 and "no registered models yet" in empty.stdout
    assert not (data_copy / "mlruns").exists()
    db = data_copy / "mlruns" / "mlflow.db"
    _register(db, "alpha", passed=True)
    _register(db, "beta", passed=False)
    listed = ok_json(run("models", "list", "--data-dir", str(data_copy), "--json", cwd=tmp_path))
    assert [m["model"] for m in listed["models"]] == ["alpha", "beta"]
    assert [m["versions"][0]["bundle_id"] for m in listed["models"]] == [
        "bundle-alpha",
        "bundle-beta",
    ]
    table = run("models", "list", "--data-dir", str(data_copy), cwd=tmp_path)
    assert "alpha" in table.stdout and "beta" in table.stdout
    one = ok_json(
        run("models", "list", "beta", "--data-dir", str(data_copy), "--json", cwd=tmp_path)
    )
    assert one["model"] == "beta" and len(one["versions"]) == 1

    # A failed gate refuses the promotion: a runtime failure, exit 1.
    refused = run("models", "promote", "beta", "1", "--data-dir", str(data_copy), cwd=tmp_path)
    one_line_error(refused, 1, "failed the promotion gate")
    promoted = ok_json(
        run("models", "promote", "alpha", "1", "--data-dir", str(data_copy), "--json", cwd=tmp_path)
    )
    assert promoted["to_version"] == 1 and promoted["alias"] == "champion"


def test_exit_codes_and_json_errors(tmp_path: Path) -> None:
    # A usage error (an unknown option) exits 2 in one line, and as JSON with --json.
    one_line_error(run("ingest", "--archiv", "x", cwd=tmp_path), 2, "--archiv")
    usage = run("ingest", "--archiv", "x", "--json", cwd=tmp_path)
    assert usage.returncode == 2 and usage.stderr == ""
    assert orjson.loads(usage.stdout)["reason"] == "usage"
    # A missing data dir is a usage error too, with its reason and place.
    missing = run("--json", "deadletters", "--data-dir", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2
    assert orjson.loads(missing.stdout) == {
        "error": "no such data dir; pass --data-dir DIR (or set DOCKLINE_DATA_DIR) to one that"
        " `dockline ingest` or `dockline demo` has filled",
        "reason": "no_data_dir",
        "where": "nowhere",
    }
    # A source that cannot be read is a runtime failure: exit 1.
    failed = run("ingest", "--archive", str(tmp_path / "absent"), "--json", cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    error = orjson.loads(failed.stdout)
    assert set(error) == {"error", "reason", "where"} and "absent" in str(error["where"])


def test_piped_output_is_not_wrapped(tmp_path: Path) -> None:
    archive = tmp_path / "a"
    args = ("--stations", "3", "--days", "0.1", "--out", str(archive), "--json")
    ok_json(run("sim", "archive", *args, cwd=tmp_path))
    result = run("ingest", "--archive", str(archive), "--data-dir", "d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert len(first) > 80 and "records/s)" in first, result.stdout


def _walk(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [path]
    found = [path]
    for name, sub in subcommands.items():
        found += _walk(sub, (*path, name))
    return found


COMMANDS = _walk(get_command(app))


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "dockline" for p in COMMANDS])
def test_every_help_has_an_example_and_flags_take_no_value(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "dockline " in result.output.split("Example")[1]
    assert "<bool>" not in result.output
    for line in result.output.splitlines():
        if "--json" in line or "--help" in line:
            assert "<" not in line.split("--")[1].split("  ")[0], line


def test_choices_are_listed_in_help() -> None:
    runner = CliRunner()
    deadletters = runner.invoke(app, ["deadletters", "--help"], env={"COLUMNS": "200"}).output
    assert "late" in deadletters and "missing_field" in deadletters
    ingest = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"}).output
    assert "local|feed" in ingest


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; return the exit code and what the terminal got."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [DOCKLINE, *args], cwd=cwd, env=env(TERM="xterm"), stdout=subprocess.DEVNULL,
        stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["features", "materialize"], "materializing"),
        (["features", "heal"], "recomputing online vectors"),
        (["deadletters", "--replay"], "replaying dead letters"),
        (["features", "consistency", "--sample", "20"], "replaying the log"),
        (
            ["dataset", "build", "--label", "empty_next_hour", "--start", "2024-05-06T08:00",
             "--end", "2024-05-06T09:00", "--out", "ds"],
            "building ds",
        ),
    ],
)  # fmt: skip
def test_long_work_shows_progress_on_a_terminal_only(
    data_copy: Path, tmp_path: Path, args: list[str], shown: str
) -> None:
    code, seen = _on_a_terminal([*args, "--data-dir", str(data_copy)], tmp_path)
    assert code == 0, seen
    assert shown in seen
    code, seen = _on_a_terminal([*args, "--data-dir", str(data_copy), "--json"], tmp_path)
    assert code == 0 and shown not in seen
    piped = run(*args, "--data-dir", str(data_copy), cwd=tmp_path)
    assert piped.returncode == 0 and shown not in piped.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_says_what_it_serves_and_logs_requests(filled_data_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    args = ["serve", "--data-dir", str(filled_data_dir), "--port", str(port), "--access-log"]
    proc = subprocess.Popen(
        [DOCKLINE, *args], cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.2)
    finally:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=30)
    assert "no champion for model bikeshare-empty_next_hour yet" in stderr
    assert "12 entities in the online store, 0 with features fresher than" in stderr
    assert '"GET /health HTTP/1.1" 200' in stdout  # uvicorn's access log


def test_config_show_says_where_each_setting_came_from(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "dockline.toml").write_text("[serve]\nport = 9000\n")
    shown = ok_json(
        run("config", "show", "--json", cwd=tmp_path, DOCKLINE_DATA_DIR=str(data),
            DOCKLINE_PROJECT=str(tmp_path))
    )  # fmt: skip
    rows = {row["key"]: (row["value"], row["source"]) for row in shown["settings"]}
    assert rows["data_dir"] == (str(data), "env")
    assert rows["serve.port"] == (9000, "file")
    assert rows["features.project"] == (str(tmp_path), "env")
    assert rows["serve.host"] == ("127.0.0.1", "default")
    assert rows["ingest.allowed_lateness"] == ("10m", "default")
    flag = ok_json(run("config", "show", "--data-dir", str(data), "--json", cwd=tmp_path))
    assert {row["key"]: row["source"] for row in flag["settings"]}["data_dir"] == "flag"


def test_config_check_reports_every_error_at_once(tmp_path: Path) -> None:
    (tmp_path / "dockline.toml").write_text(
        "[ingest]\nallowed_latenes = '5m'\n[serve]\nport = -1\n[train]\ntarget_precision = 2\n"
    )
    result = run("config", "check", "--data-dir", ".", cwd=tmp_path)
    assert result.returncode == 1
    for key in ("ingest.allowed_latenes", "serve.port", "train.target_precision"):
        assert key in result.stdout
    checked = run("config", "check", "--data-dir", ".", "--json", cwd=tmp_path)
    assert checked.returncode == 1 and len(orjson.loads(checked.stdout)["errors"]) == 3
    # Every other command names them all too, in its one line.
    one_line_error(
        run("deadletters", "--data-dir", ".", cwd=tmp_path),
        2,
        "allowed_latenes",
        "serve.port",
        "train.target_precision",
    )


@pytest.mark.slow  # trains twice on a small dataset: about 40 s here
def test_a_failed_gate_exits_1_behind_fail_on_gate(data_copy: Path, tmp_path: Path) -> None:
    data = str(data_copy)
    ok_json(
        run(
            "dataset", "build", "--label", "empty_next_hour", "--start", "2024-05-06T06:00:00",
            "--end", "2024-05-07T04:00:00", "--every", "10m", "--out", str(tmp_path / "ds"),
            "--data-dir", data, "--json", cwd=tmp_path,
        )
    )  # fmt: skip
    args = ("train", "--dataset", str(tmp_path / "ds"), "--trials", "0", "--data-dir", data)
    gated = run(*args, "--fail-on-gate", "--json", cwd=tmp_path)
    summary = orjson.loads(gated.stdout)
    assert "gate" in summary, (gated.stdout, gated.stderr)
    assert not summary["gate"]["passed"]  # a day of 12 stations does not beat persistence
    assert gated.returncode == 1
    assert run(*args, "--json", cwd=tmp_path).returncode == 0  # without the flag: a result
