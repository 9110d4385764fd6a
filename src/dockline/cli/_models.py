"""``dockline train`` and ``dockline models``: candidates, the gate, the registry's aliases."""

from __future__ import annotations

from typing import Annotated

import typer

from dockline.cli._common import DataDirOpt, JsonOpt, open_platform, want_json
from dockline.cli._output import console, print_json
from dockline.core.contracts import PromotionEvent

models_app = typer.Typer(
    help="""Registered model versions, aliases (champion, challenger) and their history.

    Examples:
      dockline models list
      dockline models promote bikeshare-empty_next_hour 2 --reason "beats v1 on pr_auc"
    """,
    no_args_is_help=True,
)


ModelArg = Annotated[
    str, typer.Argument(help="Registered model name, e.g. bikeshare-empty_next_hour.")
]
ReasonOpt = Annotated[str, typer.Option(help="Why (recorded in the history).")]


@models_app.command("list")
def models_list(
    name: Annotated[
        str | None, typer.Argument(help="Registered model name (default: every registered model).")
    ] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every version of a model (or of every model) with its bundle, aliases and gate verdict.

    Examples:
      dockline models list
      dockline models list bikeshare-empty_next_hour --json
    """
    from dockline.pipeline.train import open_registry
    from dockline.train.registry import mlflow_client

    platform = open_platform(data_dir)
    if not platform.data.mlflow_db.exists():  # nothing trained here yet: create no registry
        if want_json(json_out):
            print_json({"model": name, "versions": []} if name else {"models": []})
        else:
            console.print("no registered models yet (`dockline train` registers one)")
        return
    registry = open_registry(platform)
    if name is not None:
        names = [name]
    else:
        found = mlflow_client(registry.tracking_uri).search_registered_models()
        names = sorted(str(model.name) for model in found)
    listed = {model: registry.versions(model) for model in names}
    if want_json(json_out):
        dumped = [
            {"model": model, "versions": [v.model_dump(mode="json") for v in versions]}
            for model, versions in listed.items()
        ]
        print_json(dumped[0] if name is not None else {"models": dumped})
        return
    if not listed:
        console.print("no registered models yet (`dockline train` registers one)")
        return
    from rich.table import Table

    for model, versions in listed.items():
        table = Table(title=model, title_justify="left")
        for column in ("version", "aliases", "bundle", "created", "gate", "primary metric"):
            table.add_column(column)
        for v in versions:
            gate = v.gate
            table.add_row(
                str(v.version),
                ", ".join(v.aliases) or "-",
                v.bundle_id,
                v.created_at.isoformat(timespec="seconds"),
                "-"
                if gate is None
                else ("passed" if gate.passed else "failed")
                + (
                    f" ({max(gate.slices_flagged, len(gate.slice_flags))} slices worse)"
                    if gate.slice_flags
                    else ""
                ),
                "-" if gate is None else f"{gate.primary_metric} {gate.value:.4f}",
            )
        console.print(table)


@models_app.command("promote")
def models_promote(
    name: ModelArg,
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    reason: ReasonOpt = "promoted by hand",
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a version champion (refused unless its promotion gate passed).

    Example: dockline models promote bikeshare-empty_next_hour 3 --reason "beats v2"
    """
    from dockline.pipeline.train import current_actor, promote

    # through the pipeline: the move is also an OpenLineage alias_move run
    event = promote(open_platform(data_dir), name, version, actor=current_actor(), reason=reason)
    _print_event(event, want_json(json_out))


@models_app.command("rollback")
def models_rollback(
    name: ModelArg,
    reason: ReasonOpt = "rolled back by hand",
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Point champion back at the version it held before.

    Example: dockline models rollback bikeshare-empty_next_hour --reason "v3 drifted"
    """
    from dockline.pipeline.train import current_actor, rollback

    # through the pipeline: the move is also an OpenLineage alias_move run
    event = rollback(open_platform(data_dir), name, actor=current_actor(), reason=reason)
    _print_event(event, want_json(json_out))


@models_app.command("history")
def models_history(name: ModelArg, data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """The append-only alias history: who moved which alias, when, from which version, why.

    Example: dockline models history bikeshare-empty_next_hour --json
    """
    from dockline.pipeline.train import open_registry

    events = open_registry(open_platform(data_dir)).history(name)
    if want_json(json_out):
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
