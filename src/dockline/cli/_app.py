"""The root ``dockline`` app: global options, and every command registered in one place.

Commands live in one module per family (``_ingest``, ``_features``, ``_training``,
``_models``, ``_serve``, ``_monitor``, ``_decide``, ``_sim``, ``_demo``, ``_config``); each
exposes command functions or a ``typer.Typer`` sub-app, and this module is the only place they
are attached to the root: a new family adds one line to ``_register`` below.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperOption

from dockline.cli import (
    _cdc,
    _config,
    _decide,
    _demo,
    _features,
    _ingest,
    _lineage,
    _loop,
    _models,
    _monitor,
    _serve,
    _sim,
    _training,
    _ui,
)
from dockline.cli._common import State
from dockline.core.config import DATA_DIR_ENV

# Typer shows a flag's type as if it took a value (`--json <bool>`); a flag takes none.
_display_type_rich = TyperOption.display_type_rich


def _flag_shows_no_type(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_shows_no_type  # type: ignore[method-assign]

CONTEXT = {"help_option_names": ["-h", "--help"]}
"""``-h`` as well as ``--help``, inherited by every subcommand's context."""

app = typer.Typer(
    name="dockline",
    help="""Turn a live event stream into decisions: ingest, features, train, serve, monitor.

    Examples:
      dockline demo --data-dir .dockline-demo
      dockline --data-dir .dockline-demo models list
      dockline ingest --archive ./divvy --json
    """,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings=CONTEXT,
)


def version_string() -> str:
    """``dockline <version>`` of the installed distribution."""
    try:
        return f"dockline {metadata.version('dockline')}"
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "dockline (not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_string())
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar=DATA_DIR_ENV,
            help="Directory holding all state (default ./.dockline); also accepted after the"
            " command.",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON instead of tables, errors included; also after the command."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """dockline — see `dockline COMMAND --help` for each command."""
    State.data_dir = data_dir
    source = ctx.get_parameter_source("data_dir")
    State.data_dir_source = "env" if source is not None and source.name == "ENVIRONMENT" else "flag"
    State.json = json_out


def _register() -> None:
    """Top-level commands, then the command families (sub-apps), in the order `--help` lists."""
    app.command("ingest")(_ingest.ingest)
    app.command("deadletters")(_ingest.deadletters)
    app.command("demo")(_demo.demo)
    app.command("init")(_demo.init)
    app.command("serve")(_serve.serve)
    app.command("train")(_training.train)
    app.add_typer(_cdc.cdc_app, name="cdc")
    app.command("ui")(_ui.ui)
    _features.dataset_app.command("build")(_training.dataset_build)
    app.add_typer(_sim.sim_app, name="sim")
    app.add_typer(_features.features_app, name="features")
    app.add_typer(_features.dataset_app, name="dataset")
    app.add_typer(_models.models_app, name="models")
    _monitor.monitor_app.command("run")(_loop.monitor_run)
    app.add_typer(_monitor.monitor_app, name="monitor")
    app.add_typer(_lineage.lineage_app, name="lineage")
    app.add_typer(_decide.decide_app, name="decide")
    app.add_typer(_config.config_app, name="config")


_register()
