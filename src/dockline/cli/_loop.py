"""``dockline monitor run``: one cycle (or cycles forever) of the retraining loop.

A command function for the ``monitor`` group; register it with
``monitor_app.command("run")(monitor_run)`` (in ``cli/_monitor.py`` or where the root app adds
``monitor_app``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from dockline.cli._common import group_platform
from dockline.cli._monitor import AtOpt, JsonOpt, parse_at
from dockline.cli._output import console, print_json
from dockline.core.errors import ConfigError

if TYPE_CHECKING:
    from dockline.pipeline.loop import CycleReport

__all__ = ["monitor_run"]

_VERDICT_STYLE = {"pass": "green", "marginal": "yellow", "fail": "red", "inconclusive": "dim"}


def monitor_run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit (default).")] = False,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Run a cycle every monitor.loop.follow_interval, forever."),
    ] = False,
    train: Annotated[
        bool, typer.Option("--train", help="Train a challenger now even if no trigger fired.")
    ] = False,
    serve_url: Annotated[
        str | None,
        typer.Option("--serve-url", help="The serving app (default monitor.loop.serve_url)."),
    ] = None,
    at: AtOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the loop: triggers → train → gate → challenger → shadow → canary → promote or roll back.

    Each cycle advances as far as the clock allows and saves its state in
    monitoring/loop.json; the serving app's routing is moved through its admin API (token:
    serve.admin_token or $DOCKLINE_ADMIN_TOKEN). Every step lands in `dockline models history`.

    Example: dockline monitor run --once --json
    """
    from dockline.pipeline.loop import control_for, run_cycle

    if once and follow:
        raise ConfigError("--once and --follow exclude each other")
    if follow and at is not None:
        raise ConfigError("--at evaluates one past moment; it cannot be combined with --follow")
    platform = group_platform(ctx)
    loop = platform.config.monitor.loop
    control = control_for(platform, serve_url)
    while True:
        report = run_cycle(platform, control, at=parse_at(at), force_train=train)
        _show(report, json_out)
        if not follow:
            return
        train = False
        time.sleep(loop.follow_interval.total_seconds())


def _show(report: CycleReport, json_out: bool) -> None:
    if json_out:
        print_json(report.to_dict())
        return
    console.print(
        f"loop for {report.model_name} at {report.at:%F %T}Z: {report.phase_before} → "
        f"[bold]{report.phase}[/bold]"
        + (
            f" (challenger v{report.state.challenger})"
            if report.state and report.state.challenger
            else ""
        )
    )
    if report.triggers is not None:
        for t in report.triggers.triggers:
            mark = "[red]fired[/red]" if t.fired else ("ok" if t.measured else "[dim]n/a[/dim]")
            console.print(f"  trigger {t.name}: {mark} — {t.reason}")
    if report.analyses:
        table = Table(title="analysis windows", title_justify="left")
        for column in ("window", "phase", "verdict", "requests (champ/chal)", "reason"):
            table.add_column(column)
        for a in report.analyses:
            style = _VERDICT_STYLE.get(a.verdict, "white")
            table.add_row(
                f"{a.start:%H:%M}–{a.end:%H:%M}",
                a.phase,
                f"[{style}]{a.verdict}[/]",
                f"{a.champion_requests}/{a.challenger_requests}",
                a.reason,
            )
        console.print(table)
    for action in report.actions:
        console.print(f"  [bold]{action['action']}[/bold]: {_text(action)}", markup=True)


def _text(action: dict[str, Any]) -> str:
    version = action.get("version")
    return (f"v{version}: " if version else "") + str(action["reason"])
