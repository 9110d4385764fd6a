"""``dockline ui``: it serves the dashboard and its APIs, and refuses a data dir that is not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from dockline.cli._ui import ui

# dockline's root app registers `ui` the same way: app.command("ui")(_ui.ui)
app = typer.Typer()
app.command("ui")(ui)
app.command("noop", hidden=True)(lambda: None)  # two commands: typer keeps `ui` as a name

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["ui", "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_a_data_dir_that_is_not_one_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ui", "--data-dir", str(tmp_path / "nothing")])
    assert result.exit_code != 0
    assert getattr(result.exception, "reason", None) == "no_data_dir"


@pytest.mark.slow
def test_dockline_ui_serves_the_page_and_the_apis(served: Any) -> None:
    port = _free_port()
    code = (
        "import typer; from dockline.cli._ui import ui; app = typer.Typer();"
        " app.command('ui')(ui); app.command('noop')(lambda: None); app()"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = ["ui", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--data-dir", str(served.platform.data.root)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"dashboard: http://127.0.0.1:{port}/ui/"
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(line.removeprefix("dashboard: "), timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.2)
        assert page.status_code == 200 and "dockline dashboard" in page.text
        stations = httpx.get(f"http://127.0.0.1:{port}/v1/stations", timeout=30).json()
        assert len(stations["stations"]) == len(served.stations)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
