"""The root ``dockline`` app: global options, and every command registered in one place.

Commands live in one module per family (``_ingest``, ``_features``, ``_models``, ``_serve``,
``_sim``, ``_demo``); each exposes command functions or a ``typer.Typer`` sub-app, and this
module is the only place they are attached to the root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dockline.cli import _demo, _features, _ingest, _models, _serve, _sim
from dockline.cli._common import State

app = typer.Typer(
    name="dockline",
    help="Turn a live event stream into decisions: ingest, features, train, serve, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


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
    State.data_dir = data_dir


# Top-level commands, then the command families (sub-apps), in the order `--help` lists them.
app.command("ingest")(_ingest.ingest)
app.command("deadletters")(_ingest.deadletters)
app.command("demo")(_demo.demo)
app.command("init")(_demo.init)
app.command("serve")(_serve.serve)
app.command("train")(_models.train)
app.add_typer(_sim.sim_app, name="sim")
app.add_typer(_features.features_app, name="features")
app.add_typer(_features.dataset_app, name="dataset")
app.add_typer(_models.models_app, name="models")
