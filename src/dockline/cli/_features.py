"""``dockline features`` and ``dockline dataset``: online vectors, consistency, training sets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dockline.cli._common import (
    DataDirOpt,
    JsonOpt,
    ProjectOpt,
    open_platform,
    parse_cli_duration,
    parse_time,
    want_json,
)
from dockline.cli._output import console, print_json, spinner

if TYPE_CHECKING:
    from dockline.pipeline.platform import Platform

features_app = typer.Typer(
    help="""Materialize online vectors, measure online/offline consistency, heal.

    Examples:
      dockline features materialize --data-dir .dockline-demo
      dockline features consistency --sample 500 --json
    """,
    no_args_is_help=True,
)
dataset_app = typer.Typer(
    help="""Point-in-time training sets.

    Example:
      dockline dataset build --label empty_next_hour --start 2024-05-01 --end 2024-05-08 \\
        --out datasets/week
    """,
    no_args_is_help=True,
)


@features_app.command("materialize")
def features_materialize(
    follow: Annotated[bool, typer.Option("--follow", help="Keep following the log.")] = False,
    duration: Annotated[
        str | None, typer.Option(help="With --follow: stop after this long, e.g. 10m.")
    ] = None,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the latest feature vector of every entity to the online store.

    Examples:
      dockline features materialize
      dockline features materialize --follow --duration 1h
    """
    from dockline.pipeline.features import materialize

    json_out = want_json(json_out)
    limit = (
        None
        if duration is None
        else time.monotonic() + parse_cli_duration(duration, "--duration").total_seconds()
    )
    platform = open_platform(data_dir)
    with spinner("materializing", quiet=json_out or follow):
        report = materialize(
            platform,
            project=project,
            follow=follow,
            stop=None if limit is None else (lambda: time.monotonic() >= limit),
        )
    if json_out:
        print_json(report)
        return
    console.print(
        f"materialized {report.events:,} events into {report.vectors:,} vectors for"
        f" {report.entities:,} entities in {report.micro_batches:,} micro-batches"
        f" ({report.seconds:.1f} s)"
    )


@features_app.command("consistency")
def features_consistency(
    start: Annotated[str | None, typer.Option(help="From this time (ISO-8601, UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Until this time (ISO-8601, UTC).")] = None,
    sample: Annotated[int, typer.Option(help="Points (entity, time) to compare.")] = 2000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    served: Annotated[
        bool,
        typer.Option(
            "--served",
            help="Check what serving really served: the prediction log's vectors, recomputed"
            " offline at their request times.",
        ),
    ] = False,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay the log online, recompute sampled vectors offline, report mismatches per feature.

    Example: dockline features consistency --start 2013-10-01 --end 2013-11-01 --json

    Example: dockline features consistency --served --json
    """
    from rich.table import Table

    from dockline.pipeline.features import check_consistency

    json_out = want_json(json_out)
    platform = open_platform(data_dir)
    if served:
        _served_consistency(platform, start, end, project, json_out)
        return
    with spinner("replaying the log and comparing online with offline", quiet=json_out):
        report = check_consistency(
            platform,
            start=parse_time(start, "--start"),
            end=parse_time(end, "--end"),
            sample=sample,
            seed=seed,
            project=project,
        )
    if json_out:
        print_json(report)
        return
    table = Table(title=f"online vs offline at {report.points:,} points", title_justify="left")
    table.add_column("feature")
    table.add_column("compared", justify="right")
    table.add_column("mismatches", justify="right")
    table.add_column("match", justify="right")
    for name, agreement in report.per_feature.items():
        table.add_row(
            name, f"{agreement.compared:,}", f"{agreement.mismatches:,}", f"{agreement.rate:.2%}"
        )
    console.print(table)
    console.print(f"overall match rate: [bold]{report.overall_match_rate:.4%}[/bold]")
    for name, examples in report.examples.items():
        for example in examples[:2]:
            console.print(f"  {name}: {example}", markup=False)


def _served_consistency(
    platform: Platform, start: str | None, end: str | None, project: Path | None, json_out: bool
) -> None:
    """``consistency --served``: exit 1 when a served vector differs from offline."""
    from rich.table import Table

    from dockline.pipeline.features import check_served_consistency

    with spinner("recomputing served vectors offline", quiet=json_out):
        served_report = check_served_consistency(
            platform,
            start=parse_time(start, "--start"),
            end=parse_time(end, "--end"),
            project=project,
        )
    if json_out:
        print_json(served_report)
        if served_report.mismatches:
            raise typer.Exit(1)
        return
    table = Table(
        title=f"served vs offline at {served_report.compared:,} request points",
        title_justify="left",
    )
    table.add_column("feature")
    table.add_column("compared", justify="right")
    table.add_column("mismatches", justify="right")
    for name, entry in served_report.features.items():
        table.add_row(name, f"{entry['compared']:,}", f"{entry['mismatches']:,}")
    console.print(table)
    console.print(
        f"points with any mismatch: [bold]{served_report.mismatches:,}[/bold]"
        f" of {served_report.compared:,}"
        + (f"; skipped {served_report.skipped}" if served_report.skipped else "")
    )
    for name, entry in served_report.features.items():
        for example in entry["examples"][:2]:
            console.print(f"  {name}: {example}", markup=False)
    if served_report.mismatches:
        raise typer.Exit(1)


@features_app.command("heal")
def features_heal(
    at: Annotated[
        str | None, typer.Option(help="Recompute as of this time (default: newest ingestion).")
    ] = None,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute online vectors from the offline store and report what changed.

    Examples:
      dockline features heal
      dockline features heal --at 2024-05-06T12:00:00 --json
    """
    from dockline.pipeline.features import heal_online

    json_out = want_json(json_out)
    platform = open_platform(data_dir)
    with spinner("recomputing online vectors offline", quiet=json_out):
        report = heal_online(platform, at=parse_time(at, "--at"), project=project)
    if json_out:
        print_json(report)
        return
    console.print(
        f"healed {report.entities:,} entities: {report.changed_entities:,} vectors changed"
        + (
            f" ({', '.join(f'{k}: {v}' for k, v in sorted(report.changed.items()))})"
            if report.changed
            else ""
        )
        + (f"; kept {report.kept_newer:,} newer vectors" if report.kept_newer else "")
    )
