"""Console output helpers: JSON for scripts, Rich tables and progress bars for people."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def _console(*, stderr: bool) -> Console:
    # Rich wraps at 80 columns when the stream is not a terminal; output piped to a file or a
    # pager keeps its lines whole instead (a terminal still wraps at its own width).
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, width=UNWRAPPED_WIDTH, soft_wrap=True)


UNWRAPPED_WIDTH = 1000
"""The width output gets when it is not a terminal: wide enough never to wrap a line."""

console = _console(stderr=False)
err_console = _console(stderr=True)


def unwrap_piped_consoles(*, stderr: bool = False) -> None:
    """Consoles the pipeline creates itself (the demo's report) do not wrap when piped either.

    Rich reads ``COLUMNS`` when a console is created; called inside a command (after its help
    was handled), so help screens keep their own width.
    """
    if not (err_console if stderr else console).is_terminal:
        # An inherited COLUMNS describes some terminal, not this pipe (test runners set 80).
        os.environ["COLUMNS"] = str(UNWRAPPED_WIDTH)


def print_json(value: Any) -> None:
    """Print one JSON object on stdout (structs, dataclasses and datetimes are handled)."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode() + "\n")


def counts_table(title: str, counts: Mapping[str, int], *, total_label: str = "total") -> Table:
    """A two-column table of counts with a total row."""
    table = Table(title=title, title_justify="left")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for key, value in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(key, f"{value:,}")
    table.add_row(f"[bold]{total_label}[/bold]", f"[bold]{sum(counts.values()):,}[/bold]")
    return table


@contextmanager
def progress_bar(*, transient: bool = False, quiet: bool = False) -> Iterator[Progress]:
    """A Rich progress bar on stderr for people at a terminal.

    Disabled with ``quiet`` (``--json``) and when stderr is not a terminal, so logs and scripts
    see only the result — and an error stays the one line it should be.
    """
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=quiet or not err_console.is_terminal,
    )
    with progress:
        yield progress


@contextmanager
def spinner(description: str, *, quiet: bool = False) -> Iterator[None]:
    """Progress for work that reports none of its own: a pulsing bar and the time spent."""
    with progress_bar(quiet=quiet, transient=True) as progress:
        progress.add_task(description, total=None, info="")
        yield
