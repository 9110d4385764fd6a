"""``dockline ingest`` and ``dockline deadletters``: the edge and what it rejected."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dockline.cli._common import DataDirOpt, JsonOpt, open_platform, parse_cli_duration, want_json
from dockline.cli._output import (
    console,
    counts_table,
    err_console,
    print_json,
    progress_bar,
    spinner,
)
from dockline.core.contracts import IngestSummary, RejectReason
from dockline.core.errors import ConfigError
from dockline.ingest.client import ClockSource


class ClockChoice(enum.StrEnum):
    """Where ``ingested_at`` comes from."""

    AUTO = "auto"
    LOCAL = "local"
    FEED = "feed"


def report_ingest(summary: IngestSummary, written: dict[str, int], json_out: bool) -> None:
    """Print an ingest run's summary and the offline rows written; exit 1 on its alarm."""
    _print_summary(summary, json_out, {"offline_rows_written": written})
    if summary.alarm:
        # most of what arrived was rejected: almost always a wrong clock, mapping or URL
        err_console.print(f"[bold red]ingest alarm:[/bold red] {escape(summary.alarm)}")
        raise typer.Exit(1)


def _print_summary(
    summary: IngestSummary, json_out: bool, extra: dict[str, object] | None = None
) -> None:
    if json_out:
        payload = summary.to_dict()
        payload.update(extra or {})
        print_json(payload)
        return
    rate = f" ({summary.received / summary.seconds:,.0f} records/s)" if summary.seconds else ""
    console.print(
        f"[bold]{summary.source}[/bold]: received {summary.received:,} records, accepted"
        f" {summary.accepted:,} from {summary.stations:,} stations in {summary.seconds:.1f} s{rate}"
    )
    if summary.unchanged:
        console.print(
            f"{summary.unchanged:,} records repeated a station's newest accepted event"
            " (no new report since the last poll): already stored, not appended again"
        )
    if summary.skipped_documents:
        console.print(
            f"{summary.skipped_documents:,} documents ({summary.skipped_records:,} records) were"
            " skipped: their last_updated did not advance (already seen)"
        )
    if summary.dead_letters:
        console.print(counts_table("dead letters by reason", summary.dead_letters))
    else:
        console.print("no dead letters")


def ingest(
    feed: Annotated[
        str | None, typer.Option(help="GBFS auto-discovery URL (gbfs.json) to follow.")
    ] = None,
    archive: Annotated[
        Path | None, typer.Option(help="Archive: GBFS JSON directory or Parquet/CSV.")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="With --feed: stop after this long, e.g. 10m.")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Source name (default derived from the feed/archive).")
    ] = None,
    mapping: Annotated[
        str | None,
        typer.Option(
            "--map",
            help="Archive column mapping, e.g. 'obs_ts=event_ts,bikes=num_bikes_available'.",
        ),
    ] = None,
    clock: Annotated[
        ClockChoice,
        typer.Option(
            help="ingested_at from the 'local' clock, the 'feed' clock, or 'auto': the feed's"
            " clock when the feed says it is simulated (dockline sim serve does), else local."
        ),
    ] = ClockChoice.AUTO,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingest a live GBFS feed or an archive into the event log and the offline store.

    Examples:
      dockline ingest --feed http://127.0.0.1:8080/gbfs.json --duration 10m
      dockline ingest --archive ../shared/data/divvy --json
      dockline ingest --archive ./my-archive --map 'obs_ts=event_ts,bikes=num_bikes_available'
    """
    json_out = want_json(json_out)
    from dockline.pipeline.ingest import ingest_archive, ingest_feed, sink_offline

    if (feed is None) == (archive is None):
        raise ConfigError("give exactly one of --feed URL or --archive PATH")
    clock_source: ClockSource = clock.value
    limit = None if duration is None else parse_cli_duration(duration, "--duration")
    platform = open_platform(data_dir, existing=False)
    with progress_bar(quiet=json_out) as progress:
        task = progress.add_task("ingesting", total=None, info="")

        def update(summary: IngestSummary) -> None:
            progress.update(
                task,
                completed=summary.received,
                info=f"{summary.accepted:,} accepted, {summary.rejected:,} dead letters",
            )

        if archive is not None:
            summary = ingest_archive(
                platform,
                archive,
                source=source,
                mapping=_parse_mapping(mapping),
                on_progress=update,
            )
        else:
            assert feed is not None
            summary = ingest_feed(
                platform,
                feed,
                source=source,
                duration=limit,
                clock_source=clock_source,
                on_progress=update,
            )
        progress.update(task, description="writing offline store", info="")
        reports = sink_offline(platform)
    report_ingest(summary, {topic: report.records for topic, report in reports.items()}, json_out)


def _parse_mapping(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    mapping: dict[str, str] = {}
    for part in text.split(","):
        source, sep, target = part.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"--map entries must look like source=target; got {part!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def deadletters(
    reason: Annotated[
        RejectReason | None,
        typer.Option(help="Only this reason (meanings and fixes: docs/deadletters.md)."),
    ] = None,
    examples: Annotated[int, typer.Option(help="Examples to show per reason.")] = 2,
    replay: Annotated[
        bool, typer.Option("--replay", help="Re-ingest pending dead letters.")
    ] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show dead letters by reason with examples; --replay re-ingests them after a fix.

    Examples:
      dockline deadletters
      dockline deadletters --reason late --examples 5
      dockline deadletters --replay --json
    """
    from dockline.pipeline.deadletters import replay_dead_letters, summarize_dead_letters

    json_out = want_json(json_out)
    platform = open_platform(data_dir)
    if replay:
        with spinner("replaying dead letters", quiet=json_out):
            result = replay_dead_letters(platform, reason=reason)
        if json_out:
            print_json(result)
        else:
            console.print(
                f"replayed {result['replayed']:,} dead letters: {result['accepted']:,} accepted,"
                f" {result['still_rejected']:,} still rejected"
                + (
                    f", {result['not_replayable']:,} not replayable (their payload is not JSON)"
                    if result.get("not_replayable")
                    else ""
                )
            )
        return
    report = summarize_dead_letters(platform, reason=reason, examples=examples)
    if json_out:
        print_json(report)
        return
    if not report["counts"]:
        console.print("no dead letters")
        return
    console.print(counts_table("dead letters by reason", report["counts"]))
    for why, letters in report["examples"].items():
        console.print(f"[bold]{why}[/bold]")
        for letter in letters:
            console.print(f"  {letter['source']} {letter['key'] or '-'}: {letter['detail']}")
            console.print(
                f"    raw: {letter['raw'][:160]}", markup=False, no_wrap=True, overflow="ellipsis"
            )
