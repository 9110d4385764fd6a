"""``dockline decide``: the audit log, simulator scoring and live cycles over HTTP.

Registered in the root app with ``app.add_typer(decide_app, name="decide")``.
"""

from __future__ import annotations

import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from dockline.cli._output import console, err_console, print_json, progress_bar
from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc

__all__ = ["decide_app"]

decide_app = typer.Typer(
    help="""Decisions: the audit log, policy scoring in the simulator, live cycles over HTTP.

    Examples:
      dockline decide evaluate --days 1 --seeds 2
      dockline decide log --json
    """,
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="DOCKLINE_DATA_DIR",
        help="Directory holding all state (default: the root option, else ./.dockline).",
        show_default=False,
    ),
]


def _data_dir(value: Path | None) -> Path | None:
    """This command's ``--data-dir``, else the root command's (``dockline --data-dir X decide``)."""
    if value is not None:
        return value
    from dockline.cli._common import State

    return State.data_dir


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since must be an ISO-8601 time; got {value!r}") from None
    return ensure_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


@decide_app.command("log")
def decide_log(
    since: Annotated[
        str | None, typer.Option(help="Only decisions at or after this time (ISO-8601, UTC).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest last (0: all).")] = 0,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the decision audit log.

    Example: dockline decide log --since 2024-05-06T12:00 --json
    """
    import msgspec

    from dockline.pipeline.decide import decision_log

    decisions = decision_log(_data_dir(data_dir)).read(since=_parse_since(since))
    if limit > 0:
        decisions = decisions[-limit:]
    if json_out:
        print_json({"decisions": msgspec.to_builtins(decisions)})
        return
    from rich.table import Table

    table = Table(title=f"{len(decisions)} decisions", title_justify="left")
    for col in ("cycle time", "policy", "gate", "moves", "bikes", "reasons", "id"):
        table.add_column(col)
    for d in decisions:
        table.add_row(
            d.cycle_time.strftime("%Y-%m-%d %H:%M"),
            d.policy,
            d.health_gate,
            str(len(d.actions)),
            str(sum(a.bikes for a in d.actions)),
            ", ".join(d.reasons),
            d.decision_id[:12],
        )
    console.print(table)


@decide_app.command("evaluate")
def decide_evaluate(
    days: Annotated[float, typer.Option(help="Simulated days per run.")] = 7.0,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    seeds: Annotated[int, typer.Option(help="Seeds S … S+n-1 (the same cities per policy).")] = 5,
    trucks: Annotated[int | None, typer.Option(help="Trucks (default: [decide] trucks).")] = None,
    moves_per_day: Annotated[
        int | None, typer.Option(help="Move budget per day (default: [decide] moves_per_day).")
    ] = None,
    stations: Annotated[int, typer.Option(help="Stations in the simulated city.")] = 300,
    city: Annotated[
        Path | None,
        typer.Option(help="A calibrated city file (dockline sim calibrate) instead of --stations."),
    ] = None,
    forecaster: Annotated[
        str,
        typer.Option(
            help="The predictive policy's forecasts: sim-rates (each station's true rates),"
            " zone-rates (zone means by hour of week, fair weather) or model (the data dir's"
            " registered champions, on features computed from the simulated city)."
        ),
    ] = "sim-rates",
    expected_net: Annotated[
        bool,
        typer.Option(
            help="Rate forecasters: give the planner the expected net flow (--no-expected-net:"
            " risks only, as the trained models give them)."
        ),
    ] = True,
    policies: Annotated[
        str, typer.Option(help="Comma-separated policies.")
    ] = "none,reactive,predictive,oracle",
    report: Annotated[
        Path | None,
        typer.Option(help="HTML report path (default <data-dir>/decisions/reports/…html)."),
    ] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score the policies on simulated days at the same budget (common random numbers).

    Example: dockline decide evaluate --days 3 --seeds 5 --trucks 4 --moves-per-day 96 --json

    Example: dockline decide evaluate --city city.toml --days 1 --seeds 5

    Example: dockline --data-dir demo decide evaluate --forecaster model --days 3 --seeds 5
    """
    from dockline.core.config import DataDir, resolve_data_dir
    from dockline.core.decisions import PolicyName
    from dockline.decide import POLICIES
    from dockline.pipeline.decide import eval_config_from, evaluate, write_report
    from dockline.sim.calibrate import load_city

    names = [p.strip() for p in policies.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise ConfigError(f"--policies must be among {', '.join(POLICIES)}; got {policies!r}")
    root = DataDir(resolve_data_dir(_data_dir(data_dir)))
    models = None
    if forecaster == "model":
        from dockline.pipeline.decide_model import ModelSource
        from dockline.pipeline.platform import Platform

        models = ModelSource.from_platform(Platform.open(root.root, existing=True))
    config = eval_config_from(
        root.config().decide,
        days=days,
        seed=seed,
        seeds=seeds,
        trucks=trucks,
        moves_per_day=moves_per_day,
        stations=stations,
        forecaster=forecaster,
        expected_net=expected_net,
        calibrated=None if city is None else load_city(city),
        models=models,
    )
    chosen: list[PolicyName] = [p for p in POLICIES if p in names]
    with progress_bar(quiet=json_out) as progress:
        task = progress.add_task("simulating", total=len(chosen) * seeds, info="")
        result = evaluate(
            config, chosen, progress=lambda done, total: progress.update(task, completed=done)
        )
    command = "dockline decide evaluate " + shlex.join(sys.argv[3:] if len(sys.argv) > 3 else [])
    stamp = f"s{seed}-n{seeds}-d{days:g}-k{config.trucks}-m{config.moves_per_day}"
    path = report or root.root / "decisions" / "reports" / f"evaluate-{stamp}.html"
    write_report(result, path, command)
    payload = result.to_json() | {"report": str(path)}
    if json_out:
        print_json(payload)
        return
    from rich.table import Table

    table = Table(
        title=f"{len(chosen)} policies × {seeds} seeds × {days:g} days "
        f"({config.trucks} trucks, {config.moves_per_day} moves/day)",
        title_justify="left",
    )
    cols = {"empty_minutes": "empty min", "full_minutes": "full min",
            "outage_minutes": "outage min", "outage_cost_usd": "cost $",
            "failed_rentals": "failed", "diverted_returns": "diverted", "truck_km": "truck-km",
            "moves": "moves"}  # fmt: skip
    table.add_column("policy")
    table.add_column("empty+full min [95% CI]", justify="right")
    for label in cols.values():
        table.add_column(label, justify="right")
    summary = payload["policies"]
    for name, m in summary.items():
        both = (
            f"{m['empty_full_minutes']:,.0f} [{m['empty_full_minutes_low']:,.0f},"
            f" {m['empty_full_minutes_high']:,.0f}]"
        )
        table.add_row(name, both, *(f"{m[c]:,.0f}" for c in cols))
    console.print(table)
    p = summary.get("predictive", {})
    if "reduction_vs_none" in p:
        console.print(
            f"predictive: {p['reduction_vs_none']:.1%} fewer empty+full minutes than none (goal"
            f" 50%), {p.get('reduction_vs_reactive', float('nan')):.1%} than reactive (goal 20%),"
            f" {p.get('share_of_oracle_gain', float('nan')):.1%} of the oracle's gain"
        )
    err_console.print(f"report: {path}")


@decide_app.command("run")
def decide_run(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Run a cycle every [decide] cycle of sim time.")
    ] = False,
    cycles: Annotated[int | None, typer.Option(help="With --follow: stop after n cycles.")] = None,
    policy: Annotated[
        str | None, typer.Option(help="none, reactive or predictive (default [decide] policy).")
    ] = None,
    serve_url: Annotated[
        str | None, typer.Option(help="Serving API of the empty_next_hour model.")
    ] = None,
    full_serve_url: Annotated[
        str | None, typer.Option(help="Serving API of the full_next_hour model, if one runs.")
    ] = None,
    sim_url: Annotated[
        str | None, typer.Option(help="The simulated city (default [decide] sim_url).")
    ] = None,
    health: Annotated[
        str | None,
        typer.Option(help="Health verdict to use (healthy/degraded/unhealthy); default /ready."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Decide and log, send no actions.")] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Decision cycles over HTTP: predictions from `dockline serve`, actions to the sim's trucks.

    Example: dockline decide run --once --serve-url http://127.0.0.1:8000 --sim-url http://127.0.0.1:8080
    """
    from dockline.core.config import DataDir, resolve_data_dir
    from dockline.core.decisions import HEALTH_VERDICTS
    from dockline.pipeline.decide_run import CycleResult, run_follow, run_once

    if once == follow:
        raise ConfigError("give exactly one of --once and --follow")
    if policy is not None and policy not in ("none", "reactive", "predictive"):
        raise ConfigError(f"--policy must be none, reactive or predictive; got {policy!r}")
    if health is not None and health not in HEALTH_VERDICTS:
        raise ConfigError(f"--health must be one of {', '.join(HEALTH_VERDICTS)}; got {health!r}")
    root = _data_dir(data_dir)
    settings = DataDir(resolve_data_dir(root)).config()
    cfg = settings.decide
    if settings.tracing.enabled:  # the cycles' spans, parents of serving's request spans
        from dockline.pipeline.platform import Platform
        from dockline.pipeline.tracing import configure_tracing

        configure_tracing(Platform.open(root), "decide")
    kw = {
        "policy": policy,
        "serve_url": serve_url,
        "full_serve_url": full_serve_url,
        "sim_url": sim_url,
        "health": health,
        "dry_run": dry_run,
    }

    def show(result: CycleResult) -> None:
        if json_out:
            print_json(result.to_json())
            return
        d = result.decision
        applied = result.applied or {}
        console.print(
            f"{d.cycle_time:%Y-%m-%d %H:%M} {d.policy} gate={d.health_gate} "
            f"moves={len(d.actions)} accepted={applied.get('accepted', 0)} "
            f"refused={applied.get('refused', 0)} reasons={','.join(d.reasons)} "
            f"id={d.decision_id[:12]}"
        )

    if once:
        show(run_once(root, cfg, **kw))  # type: ignore[arg-type]
    else:
        run_follow(root, cfg, cycles=cycles, on_cycle=show, **kw)
