"""Run the installed ``dockline`` command for real, from any working directory.

The command is the console script beside the test interpreter (``make`` installs it), run with
``PYTHONPATH`` pointing at this checkout's ``src`` so it is this code that runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
DOCKLINE = shutil.which("dockline", path=str(Path(sys.executable).parent)) or "dockline"


def env(**extra: str) -> dict[str, str]:
    """The environment the command runs in: this checkout's code, no inherited data dir."""
    base = {
        k: v for k, v in os.environ.items() if k not in ("DOCKLINE_DATA_DIR", "DOCKLINE_PROJECT")
    }
    # DOCKLINE_TEST_SRC runs another checkout's code (e.g. main, to see a test fail before a fix).
    base["PYTHONPATH"] = os.environ.get("DOCKLINE_TEST_SRC", str(REPO / "src"))
    return base | extra


def run(
    *args: str, cwd: Path, timeout: float = 300, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``dockline ARGS`` in ``cwd``; returns the finished process."""
    return subprocess.run(
        [DOCKLINE, *args],
        cwd=cwd,
        env=env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a successful command printed."""
    assert result.returncode == 0, result.stderr + result.stdout
    return orjson.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The single stderr line of a failed command, checked for its exit code and fragments."""
    assert result.returncode == code, (result.returncode, result.stderr, result.stdout)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
