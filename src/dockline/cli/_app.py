"""Typer commands. Each command is thin: parse, call ``dockline.pipeline``, print."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from dockline.cli._output import console, counts_table, err_console, print_json, progress_bar
from dockline.core.contracts import IngestSummary, PromotionEvent
from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc, parse_duration

if TYPE_CHECKING:
    from dockline.pipeline.platform import Platform

app = typer.Typer(
    name="dockline",
    help="Turn a live event stream into decisions: ingest, features, train, serve, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
sim_app = typer.Typer(
    help="The simulated city: serve its GBFS feed or write an archive.", no_args_is_help=True
)
app.add_typer(sim_app, name="sim")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


class _State:
    data_dir: Path | None = None


@app.callback()
def _root(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="DOCKLINE_DATA_DIR",
            help="Directory holding all state (default ./.dockline).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """dockline — see `dockline COMMAND --help` for each command."""
    _State.data_dir = data_dir


def _platform() -> Platform:
    from dockline.pipeline.platform import Platform  # imported lazily: keeps `--help` fast

    return Platform.open(_State.data_dir)


def _parse_start(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--start must be an ISO-8601 time; got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return ensure_utc(parsed)


# --------------------------------------------------------------------------------------- sim


@sim_app.command("serve")
def sim_serve(
    stations: Annotated[int, typer.Option(help="Number of stations.")] = 300,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 60.0,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8080,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    faults: Annotated[
        str | None,
        typer.Option(help="Faults to inject, e.g. 'all' or 'stale=0.01,duplicate=0.02'."),
    ] = None,
    start: Annotated[str | None, typer.Option(help="Simulated start time (ISO-8601, UTC).")] = None,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this much real time, e.g. 10m.")
    ] = None,
) -> None:
    """Publish a simulated city as GBFS v2.3 (/gbfs.json) and v3.0 (/v3/gbfs.json).

    Example: dockline sim serve --stations 300 --speed 60 --port 8080 --faults all
    """
    from dockline.sim import City, CityConfig, SimServer, parse_faults

    config_kwargs: dict[str, object] = {
        "stations": stations,
        "seed": seed,
        "faults": parse_faults(faults),
    }
    begin = _parse_start(start)
    if begin is not None:
        config_kwargs["start"] = begin
    city = City(CityConfig(**config_kwargs))  # type: ignore[arg-type]
    limit = None if duration is None else parse_duration(duration).total_seconds()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimServer(city, port=port, speed=speed) as server:
        err_console.print(
            f"serving {stations} stations at {speed:g}× — v2.3 {server.url}/gbfs.json,"
            f" v3.0 {server.url}/v3/gbfs.json, stats {server.url}/_sim/stats (Ctrl-C stops)"
        )
        began = time.monotonic()
        try:
            while not stop.wait(0.2):
                if limit is not None and time.monotonic() - began >= limit:
                    break
        except KeyboardInterrupt:
            pass
        stats = server.stats()
    err_console.print(
        f"served {stats['published_records']:,} station records in"
        f" {stats['publications']:,} publications"
    )


@sim_app.command("archive")
def sim_archive(
    out: Annotated[Path, typer.Option(help="Output directory (Divvy archive layout).")],
    stations: Annotated[int, typer.Option(help="Number of stations.")] = 300,
    days: Annotated[float, typer.Option(help="Simulated days.")] = 7.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    start: Annotated[str | None, typer.Option(help="Simulated start time (ISO-8601, UTC).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a simulated archive: station_status/YYYY-MM.parquet + station_information.parquet.

    Example: dockline sim archive --stations 300 --days 7 --seed 1 --out ./city-archive
    """
    from dockline.sim import CityConfig, write_archive

    config_kwargs: dict[str, object] = {"stations": stations, "seed": seed}
    begin = _parse_start(start)
    if begin is not None:
        config_kwargs["start"] = begin
    config = CityConfig(**config_kwargs)  # type: ignore[arg-type]
    with progress_bar(quiet=json_out) as progress:
        task = progress.add_task("simulating", total=None, info="")

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = write_archive(config, days, out, progress=update)
    result = {
        "rows": summary.rows,
        "stations": stations,
        "days": days,
        "out": str(out),
        "files": [str(p) for p in summary.files],
    }
    if json_out:
        print_json(result)
    else:
        console.print(f"wrote {summary.rows:,} station-minutes for {stations} stations to {out}")


# ------------------------------------------------------------------------------------ ingest


def _print_summary(
    summary: IngestSummary, json_out: bool, extra: dict[str, object] | None = None
) -> None:
    if json_out:
        payload: dict[str, object] = {
            "source": summary.source,
            "received": summary.received,
            "accepted": summary.accepted,
            "unchanged": summary.unchanged,
            "dead_letters": dict(sorted(summary.dead_letters.items())),
            "documents": summary.documents,
            "stations": summary.stations,
            "seconds": round(summary.seconds, 3),
            "records_per_second": round(summary.received / summary.seconds)
            if summary.seconds
            else None,
        }
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
    if summary.dead_letters:
        console.print(counts_table("dead letters by reason", summary.dead_letters))
    else:
        console.print("no dead letters")


@app.command("ingest")
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
        str,
        typer.Option(help="ingested_at from the 'local' clock or the 'feed' (simulator) clock."),
    ] = "local",
    json_out: JsonOpt = False,
) -> None:
    """Ingest a live GBFS feed or an archive into the event log and the offline store.

    Examples:
      dockline ingest --feed http://127.0.0.1:8080/gbfs.json --duration 10m
      dockline ingest --archive ../shared/data/divvy --json
    """
    from dockline.pipeline.ingest import ingest_archive, ingest_feed, sink_offline

    if (feed is None) == (archive is None):
        raise ConfigError("give exactly one of --feed URL or --archive PATH")
    if clock not in ("local", "feed"):
        raise ConfigError(f"--clock must be 'local' or 'feed'; got {clock!r}")
    clock_source: Literal["local", "feed"] = "feed" if clock == "feed" else "local"
    platform = _platform()
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
                duration=None if duration is None else parse_duration(duration),
                clock_source=clock_source,
                on_progress=update,
            )
        progress.update(task, description="writing offline store", info="")
        reports = sink_offline(platform)
    _print_summary(
        summary,
        json_out,
        {"offline_rows_written": {topic: report.records for topic, report in reports.items()}},
    )


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


# ------------------------------------------------------------------------------- dead letters


@app.command("deadletters")
def deadletters(
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    examples: Annotated[int, typer.Option(help="Examples to show per reason.")] = 2,
    replay: Annotated[
        bool, typer.Option("--replay", help="Re-ingest pending dead letters.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show dead letters by reason with examples; --replay re-ingests them after a fix.

    Examples:
      dockline deadletters
      dockline deadletters --reason late --examples 5
      dockline deadletters --replay --json
    """
    from dockline.pipeline.deadletters import replay_dead_letters, summarize_dead_letters

    platform = _platform()
    if replay:
        result = replay_dead_letters(platform, reason=reason)
        if json_out:
            print_json(result)
        else:
            console.print(
                f"replayed {result['replayed']:,} dead letters: {result['accepted']:,} accepted,"
                f" {result['still_rejected']:,} still rejected"
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


# -------------------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    stations: Annotated[int, typer.Option(help="Stations in the simulated city.")] = 200,
    hours: Annotated[float, typer.Option(help="Simulated hours to ingest live.")] = 4.0,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 900.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    history_days: Annotated[
        float, typer.Option(help="Days of history imported first (what the model learns from).")
    ] = 7.0,
    train: Annotated[
        bool, typer.Option(help="Train and register a champion on the history.")
    ] = True,
    json_out: JsonOpt = False,
) -> None:
    """The whole loop on a simulated city with embedded defaults; prints where to look."""
    from dockline.pipeline.demo import run_demo

    run_demo(
        _platform(),
        stations=stations,
        hours=hours,
        speed=speed,
        seed=seed,
        history_days=history_days,
        train=train,
        json_out=json_out,
    )


# ---------------------------------------------------------------------------------- features

features_app = typer.Typer(
    help="Materialize online vectors, measure online/offline consistency, heal.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")
dataset_app = typer.Typer(help="Point-in-time training sets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

ProjectOpt = Annotated[
    Path | None,
    typer.Option(help="Project directory or file (default: features.project in dockline.toml)."),
]


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be an ISO-8601 time; got {value!r}") from None
    return ensure_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


@features_app.command("materialize")
def features_materialize(
    follow: Annotated[bool, typer.Option("--follow", help="Keep following the log.")] = False,
    duration: Annotated[
        str | None, typer.Option(help="With --follow: stop after this long, e.g. 10m.")
    ] = None,
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the latest feature vector of every entity to the online store.

    Examples:
      dockline features materialize
      dockline features materialize --follow --duration 1h
    """
    from dockline.pipeline.features import materialize

    limit = (
        None if duration is None else time.monotonic() + parse_duration(duration).total_seconds()
    )
    report = materialize(
        _platform(),
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
    json_out: JsonOpt = False,
) -> None:
    """Replay the log online, recompute sampled vectors offline, report mismatches per feature.

    Example: dockline features consistency --start 2013-10-01 --end 2013-11-01 --json

    Example: dockline features consistency --served --json
    """
    from rich.table import Table

    from dockline.pipeline.features import check_consistency, check_served_consistency

    if served:
        served_report = check_served_consistency(
            _platform(),
            start=_parse_time(start, "--start"),
            end=_parse_time(end, "--end"),
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
        return
    report = check_consistency(
        _platform(),
        start=_parse_time(start, "--start"),
        end=_parse_time(end, "--end"),
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


@features_app.command("heal")
def features_heal(
    at: Annotated[
        str | None, typer.Option(help="Recompute as of this time (default: newest ingestion).")
    ] = None,
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute online vectors from the offline store and report what changed."""
    from dockline.pipeline.features import heal_online

    report = heal_online(_platform(), at=_parse_time(at, "--at"), project=project)
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


@dataset_app.command("build")
def dataset_build(
    label: Annotated[str, typer.Option(help="The label the dataset is for, e.g. empty_next_hour.")],
    start: Annotated[str, typer.Option(help="First spine time (ISO-8601, UTC).")],
    end: Annotated[str, typer.Option(help="End of the spine (exclusive).")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    every: Annotated[str, typer.Option(help="Spine step, e.g. 5m.")] = "5m",
    name: Annotated[
        str | None, typer.Option(help="Dataset name (default: the directory name).")
    ] = None,
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a point-in-time training set: every station × every step in [start, end).

    Example:
      dockline dataset build --label empty_next_hour --start 2013-09-01 --end 2013-10-01 \\
        --every 5m --out datasets/sep
    """
    from dockline.pipeline.features import build_dataset

    begin, until = _parse_time(start, "--start"), _parse_time(end, "--end")
    assert begin is not None and until is not None
    meta = build_dataset(
        _platform(),
        label=label,
        start=begin,
        end=until,
        every=parse_duration(every),
        out=out,
        name=name,
        project=project,
    )
    if json_out:
        print_json(meta.model_dump(mode="json"))
        return
    console.print(
        f"wrote {meta.row_count:,} rows × {meta.feature_count} features to {out}"
        f" (label {label}: rate {meta.extra.get('label_rate')},"
        f" plan {str(meta.extra.get('plan_hash'))[:12]})"
    )


@app.command("init")
def init(
    path: Annotated[Path, typer.Argument(help="Directory to create the project in.")],
) -> None:
    """Scaffold a project from the bike-share reference project."""
    import shutil

    from dockline.pipeline.features import EXAMPLE_PROJECT

    source = Path("examples/bikeshare") if Path("examples/bikeshare").is_dir() else EXAMPLE_PROJECT
    target = path / "project.py"
    if target.exists():
        raise ConfigError("a project already exists there", where=str(target))
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "project.py", target)
    console.print(f"created {target}; point dockline at it with --project {path}")


# ------------------------------------------------------------------------------ train, models

models_app = typer.Typer(
    help="Registered model versions, aliases (champion, challenger) and their history.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: config serve.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: config serve.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: config serve.workers).")
    ] = None,
) -> None:
    """Serve the champion: /v1/predict, /v1/predict/batch, /health, /ready, /metrics, /docs.

    Example: dockline serve --port 8000 --workers 2
    """
    from dockline.pipeline.serve import run_server

    platform = _platform()
    config = platform.config.serve
    bind_host, bind_port = host or config.host, config.port if port is None else port
    err_console.print(f"serving on http://{bind_host}:{bind_port} (OpenAPI at /docs); Ctrl-C stops")
    run_server(platform, bind_host, bind_port, workers or config.workers)


@app.command("train")
def train(
    dataset: Annotated[
        Path, typer.Option(help="Training set directory (from `dockline dataset build`).")
    ],
    label: Annotated[
        str | None, typer.Option(help="Label to train for (default: config train.label).")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="Optuna trials per candidate (default: config).")
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Make the new version champion if it passes the gate.")
    ] = False,
    check_reproducible: Annotated[
        bool,
        typer.Option(
            "--check-reproducible", help="Train twice and require byte-identical bundles."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train candidates and baselines, calibrate, threshold, report, export, gate and register.

    Example: dockline train --dataset .dockline/datasets/sep --trials 20
    """
    from rich.table import Table

    from dockline.pipeline.train import train_model

    summary = train_model(
        _platform(),
        dataset=dataset,
        label=label,
        n_trials=trials,
        progress=not json_out,
        check_reproducible=check_reproducible,
        promote=promote,
    )
    if json_out:
        print_json(dataclasses.asdict(summary) | {"gate": summary.gate.model_dump(mode="json")})
        return
    metrics = ("pr_auc", "roc_auc", "brier", "log_loss", "ece")
    table = Table(title=f"test window, {summary.rows:,} rows in all", title_justify="left")
    table.add_column("model")
    for name in metrics:
        table.add_column(name, justify="right")
    rows = {**summary.candidates, **{f"baseline: {k}": v for k, v in summary.baselines.items()}}
    for name, values in rows.items():
        mark = " ◀" if name == summary.selected else ""
        table.add_row(name + mark, *(f"{values.get(m, float('nan')):.4f}" for m in metrics))
    console.print(table)
    gate = summary.gate
    verdict = "passed" if gate.passed else "failed: " + "; ".join(gate.reasons)
    console.print(
        f"registered [bold]{summary.model_name}[/bold] version {summary.version}"
        f" (bundle {summary.bundle_id}, ONNX parity {summary.parity_max_abs_diff:.1e});"
        f" gate {verdict}; alias: {summary.alias or '-'}"
    )
    if summary.reproducible:
        console.print("reproducible: a second run gave the same bundle id")
    console.print(f"report: {summary.report}")


ModelArg = Annotated[
    str, typer.Argument(help="Registered model name, e.g. bikeshare-empty_next_hour.")
]
ReasonOpt = Annotated[str, typer.Option(help="Why (recorded in the history).")]


@models_app.command("list")
def models_list(name: ModelArg, json_out: JsonOpt = False) -> None:
    """Every version of a model with its bundle, aliases and gate verdict."""
    from dockline.pipeline.train import open_registry

    versions = open_registry(_platform()).versions(name)
    if json_out:
        print_json({"model": name, "versions": [v.model_dump(mode="json") for v in versions]})
        return
    from rich.table import Table

    table = Table(title=name, title_justify="left")
    for column in ("version", "aliases", "bundle", "created", "gate", "primary metric"):
        table.add_column(column)
    for v in versions:
        gate = v.gate
        table.add_row(
            str(v.version),
            ", ".join(v.aliases) or "-",
            v.bundle_id,
            v.created_at.isoformat(timespec="seconds"),
            "-" if gate is None else ("passed" if gate.passed else "failed"),
            "-" if gate is None else f"{gate.primary_metric} {gate.value:.4f}",
        )
    console.print(table)


@models_app.command("promote")
def models_promote(
    name: ModelArg,
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    reason: ReasonOpt = "promoted by hand",
    json_out: JsonOpt = False,
) -> None:
    """Make a version champion (refused unless its promotion gate passed)."""
    from dockline.pipeline.train import current_actor, open_registry

    event = open_registry(_platform()).promote(name, version, actor=current_actor(), reason=reason)
    _print_event(event, json_out)


@models_app.command("rollback")
def models_rollback(
    name: ModelArg, reason: ReasonOpt = "rolled back by hand", json_out: JsonOpt = False
) -> None:
    """Point champion back at the version it held before."""
    from dockline.pipeline.train import current_actor, open_registry

    event = open_registry(_platform()).rollback(name, actor=current_actor(), reason=reason)
    _print_event(event, json_out)


@models_app.command("history")
def models_history(name: ModelArg, json_out: JsonOpt = False) -> None:
    """The append-only alias history: who moved which alias, when, from which version, why."""
    from dockline.pipeline.train import open_registry

    events = open_registry(_platform()).history(name)
    if json_out:
        print_json({"model": name, "history": [e.model_dump(mode="json") for e in events]})
        return
    from rich.table import Table

    table = Table(title=f"{name}: alias history", title_justify="left")
    for column in ("at", "action", "alias", "from", "to", "who", "why"):
        table.add_column(column)
    for e in events:
        table.add_row(
            e.at.isoformat(timespec="seconds"),
            e.action,
            e.alias,
            "-" if e.from_version is None else str(e.from_version),
            "-" if e.to_version is None else str(e.to_version),
            e.actor,
            e.reason,
        )
    console.print(table)


def _print_event(event: PromotionEvent, json_out: bool) -> None:
    if json_out:
        print_json(event.model_dump(mode="json"))
        return
    console.print(
        f"{event.name}: {event.alias} {event.from_version or '-'} → {event.to_version or '-'}"
        f" ({event.action} by {event.actor}: {event.reason})"
    )
