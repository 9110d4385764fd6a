"""The commands in README.md and docs/ work as written.

- Every ``dockline …`` line in a ``bash`` block parses (no unknown command or option).
- Every block fenced as ```` ```bash runnable ```` runs for real, in a temp dir, with the
  installed command on the PATH: it must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from reference_pages import REPO
from typer.testing import CliRunner

from dockline.cli import app

FENCE = re.compile(r"^[ \t]*```(?P<info>[^\n]*)\n(?P<body>.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    runnable: bool
    body: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def shell_blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            words = match["info"].split()
            if words and words[0] in ("bash", "sh", "shell", "console"):
                line = text.count("\n", 0, match.start()) + 1
                found.append(Block(page, line, "runnable" in words[1:], match["body"]))
    return found


BLOCKS = shell_blocks()
RUNNABLE = [block for block in BLOCKS if block.runnable]
# Placeholders in a documented command (`[--follow]`, `list|history`, `…`) are not parsed.
PLACEHOLDER = re.compile(r"[\[\]|…<>]")


def dockline_commands(block: Block) -> list[list[str]]:
    """The argument lists of the ``dockline`` commands in a block (continuations joined)."""
    commands = []
    for line in block.body.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|;|\|\|", line.split(" # ")[0]):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            if words and words[0] == "dockline" and not any(PLACEHOLDER.search(w) for w in words):
                commands.append(words[1:])
    return commands


def test_the_docs_have_runnable_blocks() -> None:
    assert len(RUNNABLE) >= 2, [b.name for b in BLOCKS]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_every_documented_command_parses(block: Block) -> None:
    runner = CliRunner()
    for args in dockline_commands(block):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"{block.name}: dockline {shlex.join(args)}\n{result.output}"


@pytest.mark.slow  # each block is a real session: simulate, ingest, materialize, build, …
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_runnable_blocks_run(block: Block, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKLINE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO / "src")
    script = "set -euo pipefail\n" + block.body
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{block.name}\n{result.stdout}\n{result.stderr}"
