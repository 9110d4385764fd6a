"""``dockline cdc ingest``: follow a PostgreSQL table of station_status rows by replication."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import typer

from dockline.cli._common import DataDirOpt, JsonOpt, open_platform, parse_cli_duration, want_json
from dockline.cli._ingest import report_ingest
from dockline.cli._output import console, progress_bar
from dockline.core.contracts import IngestSummary
from dockline.core.errors import ConfigError

cdc_app = typer.Typer(
    help="""Change data capture: station_status rows another system writes into PostgreSQL.

Example:
  dockline cdc ingest --dsn postgresql://dockline@127.0.0.1:5432/bikes --once
""",
    no_args_is_help=True,
)


@cdc_app.command("ingest")
def cdc_ingest(
    dsn: Annotated[
        str | None,
        typer.Option(help="PostgreSQL connection string or URL (default: [cdc] dsn)."),
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="Table to follow, schema.table (default: [cdc] table).")
    ] = None,
    slot: Annotated[
        str | None,
        typer.Option(help="Logical replication slot, created when missing (default: [cdc] slot)."),
    ] = None,
    source: Annotated[str | None, typer.Option(help="Source name (default cdc:<slot>).")] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Stop once what was committed at the start is in.")
    ] = False,
    duration: Annotated[
        str | None, typer.Option(help="Without --once: stop after this long, e.g. 10m.")
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            help="initial: a first run ingests the table's existing rows, then streams;"
            " never: only changes after the slot exists (default: [cdc] snapshot)."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingest a PostgreSQL table's inserted and updated rows through logical replication.

    Rows are validated like a feed's records (rejects go to the dead letters); a restart resumes
    from the last transaction appended to the log. A first run reads the rows already in the
    table through the new slot's snapshot (--snapshot never: it does not). Needs
    wal_level=logical and wal2json.

    Examples:
      dockline cdc ingest --dsn 'host=127.0.0.1 dbname=bikes user=dockline' --once
      dockline cdc ingest --table public.station_status --slot dockline --duration 1h
      dockline cdc ingest --snapshot never --once
    """
    from dockline.pipeline.cdc import ingest_cdc
    from dockline.pipeline.ingest import sink_offline

    json_out = want_json(json_out)
    platform = open_platform(data_dir, existing=False)
    config = platform.config.cdc
    dsn = dsn or config.dsn
    if not dsn:
        raise ConfigError("give --dsn or set [cdc] dsn in dockline.toml", reason="missing_dsn")
    if once and duration is not None:
        raise ConfigError("give --once or --duration, not both")
    mode = snapshot or config.snapshot
    if mode not in ("initial", "never"):
        raise ConfigError(f"--snapshot must be initial or never; got {mode!r}", reason="bad_value")
    snapshot_mode: Literal["initial", "never"] = "never" if mode == "never" else "initial"
    deadline = (
        None
        if duration is None
        else time.monotonic() + parse_cli_duration(duration, "--duration").total_seconds()
    )
    with progress_bar(quiet=json_out) as progress:
        task = progress.add_task("ingesting changes", total=None, info="")

        def update(summary: IngestSummary) -> None:
            progress.update(
                task,
                completed=summary.received,
                info=f"{summary.accepted:,} accepted, {summary.rejected:,} dead letters",
            )

        summary = ingest_cdc(
            platform,
            dsn,
            table=table or config.table,
            slot=slot or config.slot,
            source=source,
            once=once,
            snapshot=snapshot_mode,
            stop=None if deadline is None else (lambda: time.monotonic() >= deadline),
            sink_every=None if once else config.sink_every,
            on_progress=update,
        )
        progress.update(task, description="writing offline store", info="")
        reports = sink_offline(platform)
    if summary.snapshot_rows and not json_out:
        console.print(f"{summary.snapshot_rows:,} rows came from the initial snapshot")
    report_ingest(summary, {topic: report.records for topic, report in reports.items()}, json_out)
