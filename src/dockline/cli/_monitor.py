"""``dockline monitor ...``: health, freshness, checks, drift and live performance (P6).

Registered by the root app with ``app.add_typer(monitor_app, name="monitor")``. Every command
takes ``--json``; the data directory is the root's ``--data-dir`` (or this group's own).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from dockline.cli._common import group_platform
from dockline.cli._output import console, err_console, print_json
from dockline.core.errors import ConfigError

if TYPE_CHECKING:
    pass

__all__ = ["monitor_app"]

monitor_app = typer.Typer(
    help="""Watch the predictions: deployment health, freshness, checks, drift, live performance.

    Examples:
      dockline monitor --data-dir .dockline-demo health
      dockline monitor drift --window 1h --json
    """,
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
AtOpt = Annotated[
    str | None,
    typer.Option("--at", help="Evaluate at this time (ISO-8601; UTC if no zone). Default: now."),
]

_STATUS_STYLE = {
    "healthy": "green",
    "degraded": "yellow",
    "unhealthy": "red",
    "FRESH": "green",
    "STALE": "red",
}


@monitor_app.callback()
def _monitor(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (default: the root's --data-dir)."),
    ] = None,
) -> None:
    """Monitoring over the data directory's serving windows, prediction log and bundles."""
    ctx.obj = data_dir


def parse_at(value: str | None) -> datetime | None:
    """``--at`` as a UTC datetime (naive means UTC); None stays None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--at must be an ISO-8601 time; got {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _styled(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


# ------------------------------------------------------------------------------------ health


@monitor_app.command("health")
def health(
    ctx: typer.Context,
    windows: Annotated[
        Path | None,
        typer.Option("--windows", help="Directory of *.jsonl windows (default serving/metrics)."),
    ] = None,
    at: AtOpt = None,
    deployment: Annotated[
        str | None, typer.Option("--deployment", help="Only this deployment id.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Each deployment's health (healthy / degraded / unhealthy) over the lookback period.

    Bad lines in the window files are reported (file:line: reason) and skipped.

    Example: dockline monitor health --windows .dockline/serving/metrics --json
    """
    from dockline.pipeline import monitor as pipeline

    run = pipeline.health(
        group_platform(ctx), windows_dir=windows, at=parse_at(at), deployment=deployment
    )
    if json_out:
        print_json(
            {
                "deployments": [_dump(s) for s in run.states],
                "bad_lines": [
                    {"file": b.file, "line": b.line, "reason": b.reason} for b in run.bad_lines
                ],
                "duplicates": run.duplicates,
            }
        )
        return
    for bad in run.bad_lines:
        err_console.print(f"bad line {bad}", markup=False)
    if not run.states:
        console.print(f"no deployment has windows in {run.windows_dir} up to {run.at:%F %T}Z")
        return
    table = Table(title=f"deployment health at {run.at:%F %T}Z", title_justify="left")
    for column in ("deployment", "model", "status", "windows", "missing", "requests", "detail"):
        table.add_column(column)
    for s in run.states:
        table.add_row(
            s.deployment_id,
            f"{s.model_name} v{s.model_version}" if s.model_name else "-",
            _styled(s.status),
            str(s.evaluated_windows),
            str(s.missing_window_count),
            str(s.request_count),
            s.detail,
        )
    console.print(table)
    if run.duplicates:
        console.print(f"{run.duplicates} duplicate windows ignored")


# --------------------------------------------------------------------------------- freshness


@monitor_app.command("freshness")
def freshness(
    ctx: typer.Context,
    metadata: Annotated[
        Path | None,
        typer.Option("--metadata", help="A DatasetMetadata file (default: the data directory)."),
    ] = None,
    at: AtOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """FRESH or STALE: datasets (age < 1800 s by default), served vectors, training data.

    Example: dockline monitor freshness --metadata datasets/week/_manifest.json --json
    """
    from dockline.pipeline import monitor as pipeline

    run = pipeline.freshness(group_platform(ctx), metadata=metadata, at=parse_at(at))
    if json_out:
        print_json({"results": [_dump(r) for r in run.results], "notes": run.notes})
        return
    table = Table(title="freshness", title_justify="left")
    for column in ("kind", "name", "version", "age (s)", "threshold (s)", "status", "stale share"):
        table.add_column(column)
    for r in run.results:
        table.add_row(
            r.kind,
            r.dataset_name,
            r.dataset_version[:24],
            f"{r.freshness_seconds:,.1f}",
            "-" if r.threshold_seconds is None else f"{r.threshold_seconds:,.0f}",
            _styled(r.status),
            "-" if r.share_stale is None else f"{r.share_stale:.1%}",
        )
    console.print(table)
    for note in run.notes:
        console.print(f"[dim]{note}[/dim]")


# ------------------------------------------------------------------------------------- check


@monitor_app.command("check")
def check(
    metadata: Annotated[Path, typer.Option("--metadata", help="The metadata file to check.")],
    json_out: JsonOpt = False,
) -> None:
    """Seed 003's five checks over a metadata file, in order; exit 1 if any failed.

    Example: dockline monitor check --metadata datasets/week/_manifest.json
    """
    from dockline.pipeline import monitor as pipeline

    report = pipeline.check(metadata)
    if json_out:
        print_json(_dump(report))
    else:
        for result in report.results:
            mark = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
            detail = f"  {result.detail}" if result.detail else ""
            console.print(f"{mark}  {result.check}{detail}")
    if not report.all_passed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------- drift


def _drift_table(title: str, result: Any) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("feature", "drift", "method", "score", "threshold", "n", "psi", "W/σ", "JS"):
        table.add_column(column)
    rows = list(result.features.values())
    if result.prediction is not None:
        rows.append(result.prediction)
    for f in rows:
        table.add_row(
            f.name,
            "[red]DRIFT[/]" if f.drift else "[green]ok[/]",
            f.method,
            f"{f.score:.4g}",
            f"{f.threshold:g}",
            f"{f.n:,}",
            f"{f.psi:.3f}",
            f"{f.wasserstein:.3f}",
            f"{f.jensenshannon:.3f}",
        )
    return table


@monitor_app.command("drift")
def drift(
    ctx: typer.Context,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Reference Parquet (with --current).")
    ] = None,
    current: Annotated[
        Path | None, typer.Option("--current", help="Current Parquet (with --reference).")
    ] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Live window, e.g. 1h (default [monitor.drift]).")
    ] = None,
    at: AtOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Feature and prediction drift, by effect size, against each bundle's baseline.

    The prediction log's last --window per bundle against the bundle's drift baseline, or
    --current against --reference (Parquet; their shared numeric columns).

    Example: dockline monitor drift --reference train.parquet --current today.parquet --json
    """
    from dockline.core.time import parse_duration
    from dockline.pipeline import monitor as pipeline

    if (reference is None) != (current is None):
        raise ConfigError("--reference and --current go together; give both or neither")
    platform = group_platform(ctx)
    if reference is not None and current is not None:
        result = pipeline.drift_tables(platform, reference, current)
        if json_out:
            print_json(result.to_dict())
        else:
            verdict = "[red]DRIFT[/]" if result.drift else "[green]no drift[/]"
            console.print(_drift_table(f"{current} vs {reference}: {verdict}", result))
        return
    span = None if window is None else parse_duration(window)
    runs = pipeline.drift_live(platform, window=span, at=parse_at(at))
    if json_out:
        top: dict[str, Any] = runs[0].to_dict() if runs else {"drift": False, "features": {}}
        print_json({**top, "bundles": [r.to_dict() for r in runs]})
        return
    if not runs:
        console.print("no predictions logged in the window; nothing to compare")
        return
    for run in runs:
        verdict = "[red]DRIFT[/]" if run.dataset.drift else "[green]no drift[/]"
        title = (
            f"{run.model_name} v{run.model_version} ({run.bundle_id}): dataset {verdict}"
            f" ({run.dataset.share:.0%} of features over {run.dataset_rows:,} rows since"
            f" {run.dataset_start:%F %H:%M}Z); features over {run.rows:,} rows"
            f" {run.window_start:%F %H:%M}–{run.window_end:%H:%M}Z"
        )
        console.print(_drift_table(title, run.result))


# ------------------------------------------------------------------------------- performance


@monitor_app.command("performance")
def performance(
    ctx: typer.Context,
    window: Annotated[
        str | None, typer.Option("--window", help="Window, e.g. 1h (default [monitor.drift]).")
    ] = None,
    lookback: Annotated[
        str, typer.Option("--lookback", help="Predictions of this last period, e.g. 1d.")
    ] = "1d",
    at: AtOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Live PR-AUC, Brier, ECE, precision and recall per bundle and window.

    From the prediction log and the labels known so far (the plan's label, once its
    label_available_at has passed), with bootstrap intervals and a label-free (CBPE) estimate.

    Example: dockline monitor performance --window 1h --lookback 1d --json
    """
    from dockline.core.time import parse_duration
    from dockline.pipeline import monitor as pipeline

    run = pipeline.performance(
        group_platform(ctx),
        window=None if window is None else parse_duration(window),
        lookback=parse_duration(lookback),
        at=parse_at(at),
    )
    if json_out:
        print_json(
            {
                "start": run.start.isoformat(),
                "end": run.end.isoformat(),
                "rows": run.rows,
                "windows": [{"bundle_id": b, **w.to_dict()} for b, w in run.windows],
                "reference": run.reference,
            }
        )
        return
    if not run.windows:
        console.print("no model predictions logged in the period")
        return
    table = Table(title=f"live performance {run.start:%F %H:%M}–{run.end:%F %H:%M}Z")
    for column in (
        "bundle",
        "v",
        "window",
        "n",
        "labelled",
        "metric",
        "live [95% CI]",
        "estimate",
        "test",
    ):
        table.add_column(column)
    from dockline.core.time import from_micros

    for bundle_id, w in run.windows:
        for name, estimate in w.estimate.items():
            m = w.metrics.get(name)
            live = (
                "-"
                if m is None or m.value is None
                else f"{m.value:.3f} [{m.low or 0:.3f}, {m.high or 0:.3f}]"
            )
            test = run.reference.get(bundle_id, {}).get(name)
            table.add_row(
                bundle_id,
                str(w.model_version),
                f"{from_micros(w.window_start_us):%m-%d %H:%M}",
                f"{w.predictions:,}",
                f"{w.labelled:,}",
                name,
                live,
                "-" if estimate is None else f"{estimate:.3f}",
                "-" if test is None else f"{test:.3f}",
            )
    console.print(table)
