"""``dockline sim``: the simulated city's feed and archives."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from dockline.cli._common import JsonOpt, parse_cli_duration, parse_start, want_json
from dockline.cli._output import console, err_console, print_json, progress_bar

sim_app = typer.Typer(
    help="""The simulated city: serve its GBFS feed or write an archive.

    Examples:
      dockline sim serve --stations 300 --speed 60 --port 8080 --faults all
      dockline sim archive --stations 50 --days 2 --out ./city-archive
      dockline sim calibrate --archive ../shared/data/divvy --out city.toml
    """,
    no_args_is_help=True,
)


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
    trucks: Annotated[
        int, typer.Option(min=0, help="Rebalancing trucks behind POST /v1/actions.")
    ] = 3,
) -> None:
    """Publish a simulated city as GBFS v2.3 (/gbfs.json) and v3.0 (/v3/gbfs.json), with a
    truck API (POST /v1/actions, GET /v1/trucks) that `dockline decide run` drives.

    Example: dockline sim serve --stations 300 --speed 60 --port 8080 --faults all
    """
    from dockline.sim import City, CityConfig, SimServer, parse_faults
    from dockline.sim.fleet import Fleet

    config_kwargs: dict[str, object] = {
        "stations": stations,
        "seed": seed,
        "faults": parse_faults(faults),
    }
    begin = parse_start(start)
    if begin is not None:
        config_kwargs["start"] = begin
    city = City(CityConfig(**config_kwargs))  # type: ignore[arg-type]
    limit = None if duration is None else parse_cli_duration(duration, "--duration").total_seconds()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimServer(city, port=port, speed=speed, fleet=Fleet(city, trucks=trucks)) as server:
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

    json_out = want_json(json_out)

    config_kwargs: dict[str, object] = {"stations": stations, "seed": seed}
    begin = parse_start(start)
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


@sim_app.command("calibrate")
def sim_calibrate(
    archive: Annotated[Path, typer.Option(help="A Divvy-layout archive directory.")],
    out: Annotated[Path, typer.Option(help="The calibrated city file (TOML) to write.")],
    months: Annotated[
        str, typer.Option(help="Comma-separated YYYY-MM months to fit on.")
    ] = "2013-09,2013-10",
    holdout: Annotated[
        str | None,
        typer.Option(help="A held-out month to check the fit on (simulated; ~15 s a month)."),
    ] = None,
    move_threshold: Annotated[
        int,
        typer.Option(
            min=2, help="A jump of at least this many bikes in one snapshot is an operator move."
        ),
    ] = 4,
    seed: Annotated[int, typer.Option(help="Random seed of the held-out simulation.")] = 0,
    replay_moves: Annotated[
        bool, typer.Option(help="Replay the held-out month's operator moves in the simulation.")
    ] = True,
    reset_daily: Annotated[
        bool,
        typer.Option(help="Reset the simulated counts to the archive's each local midnight."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fit a city to a real archive: stations, capacities, positions and each station's
    departure and arrival rates by hour of week; operator moves (large jumps) are reported.

    Example: dockline sim calibrate --archive ../shared/data/divvy --out city.toml --holdout 2013-11
    """
    from dockline.sim.calibrate import calibrate, save_city

    json_out = want_json(json_out)
    fit_months = tuple(m.strip() for m in months.split(",") if m.strip())
    result = calibrate(archive, fit_months, move_threshold=move_threshold)
    save_city(result.city, out)
    report: dict[str, object] = {
        "out": str(out),
        "stations": result.city.n,
        "months": list(result.months),
        "trips": result.trips,
        "trips_per_hour": round(float(result.city.departures.sum(axis=0).mean()), 1),
        "operator_moves": result.moves.summary(),
    }
    if holdout is not None:
        from dockline.sim.validate import validate_month

        check = validate_month(
            result.city,
            archive,
            holdout,
            seed=seed,
            replay_moves=replay_moves,
            reset_daily=reset_daily,
            move_threshold=move_threshold,
        )
        report["holdout"] = check.as_dict()
    if json_out:
        print_json(report)
        return
    moves = result.moves.summary()
    console.print(
        f"fitted {result.city.n} stations on {', '.join(result.months)}: {result.trips:,} trips"
        f" ({report['trips_per_hour']} per hour on average) → {out}"
    )
    console.print(
        f"operator moves detected: {moves['moves']:,} (removed {moves['bikes_removed']:,} bikes,"
        f" added {moves['bikes_added']:,})"
    )
    if holdout is not None:
        h = report["holdout"]
        assert isinstance(h, dict)
        console.print(
            f"held-out {holdout}: empty share archive {h['archive_empty_share']:.4f} vs sim"
            f" {h['sim_empty_share']:.4f}; full share archive {h['archive_full_share']:.4f} vs"
            f" sim {h['sim_full_share']:.4f}; per-station MAE empty {h['station_empty_mae']:.4f},"
            f" full {h['station_full_mae']:.4f}"
        )
