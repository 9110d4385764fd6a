"""``dockline lineage trace ID``: walk a prediction or a bundle back to the log offsets.

Registered by the root app with ``app.add_typer(lineage_app, name="lineage")``. The data
directory is the root's ``--data-dir`` (or this group's own).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from dockline.cli._common import group_platform
from dockline.cli._output import console, err_console, print_json

if TYPE_CHECKING:
    pass

__all__ = ["lineage_app"]

lineage_app = typer.Typer(
    help="""Lineage: where a prediction or a bundle came from (OpenLineage events in lineage/).

    Example: dockline lineage trace 1d0b-1 --json
    """,
    no_args_is_help=True,
)


@lineage_app.callback()
def _lineage(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (default: the root's --data-dir)."),
    ] = None,
) -> None:
    """Lineage over the data directory's prediction log, bundles, datasets and offline store."""
    ctx.obj = data_dir


def _summary(step: dict[str, Any]) -> str:
    kind = step["kind"]
    if kind == "prediction":
        return (
            f"{step.get('entity')} at {step.get('logged_at')}: p={step.get('probability')}"
            f" ({step.get('role')}, {step.get('model_name')} v{step.get('model_version')})"
        )
    if kind == "bundle":
        lin = step.get("lineage", {})
        return (
            f"{step.get('model_name')}; dataset {lin.get('dataset_name')}; seed {lin.get('seed')}"
        )
    if kind == "training_run":
        return (
            f"{step.get('model_name')} v{step.get('model_version')}, {step.get('candidate')},"
            f" {step.get('started_at')} → {step.get('completed_at')}"
        )
    if kind == "dataset":
        return f"{step.get('row_count')} rows built {step.get('built_at')} at {step.get('path')}"
    if kind == "plan":
        return f"project {step.get('project')}"
    if kind == "offline_partitions":
        parts = step.get("partitions", [])
        span = f"{parts[0]} … {parts[-1]}" if parts else "none"
        verdict = {True: "unchanged since build", False: "CHANGED since build", None: "?"}[
            step.get("unchanged_since_build")
        ]
        return f"{len(parts)} partitions ({span}), {step.get('rows')} rows; {verdict}"
    if kind == "log_offsets":
        return ", ".join(
            f"p{p}: {r['first']}..{r['last']}" for p, r in step.get("partitions", {}).items()
        )
    return ""


@lineage_app.command("trace")
def trace(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="A prediction's request_id or a bundle id.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Walk prediction → bundle → training run → dataset → plan → offline partitions → log.

    Exits 1 when a link could not be followed or did not verify (listed under problems).

    Example: dockline lineage trace r-0001a2b3 --json
    """
    from dockline.pipeline.lineage import trace as walk

    result = walk(group_platform(ctx), ident).to_dict()
    if json_out:
        print_json(result)
    else:
        table = Table(title=f"lineage of {ident}", title_justify="left")
        table.add_column("step")
        table.add_column("id")
        table.add_column("what")
        for step in result["steps"]:
            table.add_row(step["kind"], str(step["id"]), _summary(step))
        console.print(table)
        for problem in result["problems"]:
            err_console.print(f"[red]problem:[/] {problem}")
    if result["problems"]:
        raise typer.Exit(1)
