"""``dockline dataset build`` and ``dockline train``: the commands and the summaries they print.

Registered by the root app (``cli/_app.py``): ``train`` at the top, ``dataset_build`` as
``dockline dataset build``.

The summaries are built by pure functions (``build_lines``, ``train_tables``) so tests can read
what a user sees without a terminal.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from dockline.cli._common import (
    DataDirOpt,
    JsonOpt,
    ProjectOpt,
    open_platform,
    parse_cli_duration,
    want_json,
)
from dockline.cli._output import console, print_json, spinner
from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc

if TYPE_CHECKING:
    from dockline.features.dataset import Published
    from dockline.pipeline.train import TrainSummary

__all__ = ["build_lines", "dataset_build", "train", "train_tables"]

METRICS = ("pr_auc", "roc_auc", "brier", "log_loss", "ece")
SELECTED = "◀"


def _time(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be an ISO-8601 time; got {value!r}") from None
    return ensure_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


# ---------------------------------------------------------------------------- dataset build


def build_lines(published: Published, label: str) -> list[str]:
    """What ``dataset build`` tells a person: what was written, the label and its unknowns."""
    meta = published.metadata
    extra = meta.extra
    verb = {
        "written": "wrote",
        "unchanged": "kept (the same dataset is already there)",
        "replaced": "replaced the dataset with",
    }[published.status]
    rate = extra.get("label_rate")
    lines = [
        f"{verb} {meta.row_count:,} rows × {meta.feature_count} features at {meta.path}"
        f" (dataset {meta.dataset_version}, plan {str(extra.get('plan_hash'))[:12]})",
        f"label {label}: rate {'-' if rate is None else f'{float(rate):.4f}'} over the rows"
        " whose label is known",
    ]
    unknown = int(extra.get("label_unknown_rows") or 0)
    if unknown:
        lines.append(
            f"{unknown:,} rows have an unknown {label} (null; training leaves them out):"
            f" {extra.get('label_unknown_reason')}"
        )
    return lines


def dataset_build(
    label: Annotated[str, typer.Option(help="The label the dataset is for, e.g. empty_next_hour.")],
    start: Annotated[str, typer.Option(help="First spine time (ISO-8601, UTC).")],
    end: Annotated[str, typer.Option(help="End of the spine (exclusive).")],
    out: Annotated[
        Path, typer.Option(help="Output directory (a new one: datasets are immutable).")
    ],
    every: Annotated[str, typer.Option(help="Spine step, e.g. 5m.")] = "5m",
    name: Annotated[
        str | None, typer.Option(help="Dataset name (default: the directory name).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a different dataset at --out (refused if a registered model was"
            " trained on it).",
        ),
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Offline engine: duckdb (embedded) or spark (pyspark local mode, needs Java);"
            " same rows. Default: features.engine in dockline.toml (duckdb).",
        ),
    ] = None,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a point-in-time training set: every station × every step in [start, end).

    A label whose horizon ends after the newest data known at build time is unknown (null),
    not negative; the summary says how many and why.

    Example:
      dockline dataset build --label empty_next_hour --start 2013-09-01 --end 2013-10-01 \\
        --every 5m --out datasets/sep
      dockline dataset build --label empty_next_hour --start 2013-09-01 --end 2013-09-08 \\
        --out datasets/sep-spark --engine spark
    """
    from dockline.pipeline.features import build_dataset_published

    json_out = want_json(json_out)
    begin, until = _time(start, "--start"), _time(end, "--end")
    step = parse_cli_duration(every, "--every")
    platform = open_platform(data_dir)
    with spinner(f"building {out.name} (every {every})", quiet=json_out):
        published = build_dataset_published(
            platform,
            label=label,
            start=begin,
            end=until,
            every=step,
            out=out,
            name=name,
            project=project,
            force=force,
            engine=engine,
        )
    if json_out:
        extra = published.metadata.extra
        print_json(
            published.metadata.model_dump(mode="json")
            | {
                "status": published.status,
                "unknown_labels": {
                    "rows": int(extra.get("label_unknown_rows") or 0),
                    "known_until": extra.get("label_known_until"),
                    "reason": extra.get("label_unknown_reason") or None,
                },
            }
        )
        return
    for line in build_lines(published, label):
        console.print(line, markup=False, soft_wrap=True)


# ------------------------------------------------------------------------------------ train


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def slice_lines(summary: TrainSummary) -> list[str]:
    """The slice check in words: how many slices were judged, and each flagged one."""
    gate = summary.gate
    if not gate.slices_judged and not gate.slices_inconclusive:
        return []
    flags = gate.slice_flags
    worse = max(gate.slices_flagged, len(flags))
    head = (
        f"slices: {gate.slices_judged} judged against persistence,"
        f" {gate.slices_inconclusive} inconclusive (too few rows or positives);"
        + (
            f" {worse} worse than persistence"
            + (" — fails the gate" if gate.slice_policy == "fail" else " — a warning")
            if flags
            else " none worse than persistence"
        )
    )
    more = [f"  … and {worse - len(flags)} more (report.html)"] if worse > len(flags) else []
    return [head, *(f"  ! {f.describe()}" for f in flags), *more]


def train_tables(summary: TrainSummary) -> list[Table | str]:
    """The ``train`` summary: candidates with the validation metric the selection used and
    their test metrics, a legend, the splits with their row counts, and the verdict."""
    primary = summary.primary_metric
    models = Table(title=f"candidates and baselines ({summary.label})", title_justify="left")
    models.add_column("model")
    models.add_column(f"validation {primary}", justify="right")
    for name in METRICS:
        models.add_column(f"test {name}", justify="right")
    rows: dict[str, tuple[float | None, dict[str, float]]] = {
        n: (summary.validation.get(n, {}).get(primary), m) for n, m in summary.candidates.items()
    }
    rows |= {f"baseline: {n}": (None, m) for n, m in summary.baselines.items()}
    for name, (val, test) in rows.items():
        mark = f" {SELECTED}" if name == summary.selected else ""
        models.add_row(name + mark, _cell(val), *(_cell(test.get(m)) for m in METRICS))
    legend = (
        f"{SELECTED} selected: {summary.why_selected}. Baselines are never selected; they are"
        f" what the gate requires beating. '-': not scored on validation."
    )
    splits = Table(title="splits (time order, embargoed)", title_justify="left")
    for column in ("split", "first as_of", "last as_of", "rows", "stations", "label rate"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    splits.add_column("weekend", justify="right")
    splits.add_column("flags")
    for name, part in summary.splits.items():
        splits.add_row(
            name,
            str(part.get("first_as_of", ""))[:16],
            str(part.get("last_as_of", ""))[:16],
            f"{int(part.get('rows', 0)):,}",
            str(part.get("stations", "")),
            f"{float(part.get('label_rate', 0.0)):.1%}",
            f"{float(part.get('weekend_share', 0.0)):.0%}",
            "; ".join(part.get("flags", [])) or "-",
        )
    used = sum(int(p.get("rows", 0)) for p in summary.splits.values())
    out: list[Table | str] = [models, legend, splits]
    out.append(
        f"{summary.rows:,} rows with a known label; {used:,} in the splits, the rest fall in"
        f" the embargo gaps"
        + (
            f"; {summary.unlabeled_rows:,} rows left out (label unknown at build time)"
            if summary.unlabeled_rows
            else ""
        )
    )
    gate = summary.gate
    verdict = "passed" if gate.passed else "failed: " + "; ".join(gate.reasons)
    if summary.already_registered:
        out.append(
            f"already registered: {summary.model_name} version {summary.version} is this very"
            f" bundle ({summary.bundle_id}); nothing new registered; gate {verdict};"
            f" alias: {summary.alias or '-'}"
        )
    else:
        out.append(
            f"registered {summary.model_name} version {summary.version}"
            f" (bundle {summary.bundle_id}, ONNX parity {summary.parity_max_abs_diff:.1e});"
            f" gate {verdict}; alias: {summary.alias or '-'}"
        )
    out.extend(slice_lines(summary))
    if summary.reproducible:
        out.append("reproducible: a second run gave the same bundle id")
    out.append(f"report: {summary.report}")
    return out


def train(
    dataset: Annotated[
        Path, typer.Option(help="Training set directory (from `dockline dataset build`).")
    ],
    label: Annotated[
        str | None,
        typer.Option(help="Label to train for (default: the label the dataset was built for)."),
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
    fail_on_gate: Annotated[
        bool,
        typer.Option("--fail-on-gate", help="Exit 1 when the new version fails the gate (CI)."),
    ] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train candidates and baselines, calibrate, threshold, report, export, gate and register.

    The model is named after the label (``<project>-<label>``); training the same data again
    registers nothing new and names the version that holds that bundle.

    Examples:
      dockline train --dataset .dockline/datasets/sep --trials 20
      dockline train --dataset datasets/week --promote --fail-on-gate --json
    """
    from dockline.pipeline.train import train_model

    json_out = want_json(json_out)
    summary = train_model(
        open_platform(data_dir, existing=False),
        dataset=dataset,
        label=label,
        n_trials=trials,
        progress=not json_out,
        check_reproducible=check_reproducible,
        promote=promote,
    )
    if json_out:
        payload: dict[str, Any] = dataclasses.asdict(summary)
        print_json(payload | {"gate": summary.gate.model_dump(mode="json")})
    else:
        for item in train_tables(summary):
            if isinstance(item, str):
                console.print(item, markup=False, soft_wrap=True)
            else:
                console.print(item)
    if fail_on_gate and not summary.gate.passed:
        raise typer.Exit(1)
