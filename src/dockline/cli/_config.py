"""``dockline config show|check``: the effective settings, where each came from, every error."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from dockline.cli._common import DataDirOpt, JsonOpt, State, want_json
from dockline.cli._output import console, print_json
from dockline.core.config import (
    DATA_DIR_ENV,
    DataDir,
    DocklineConfig,
    config_errors,
    read_toml,
    resolve_data_dir,
)

config_app = typer.Typer(
    help="""The effective settings and where each came from; check a dockline.toml.

    Examples:
      dockline config show --data-dir .dockline-demo
      dockline config check --data-dir .dockline-demo
    """,
    no_args_is_help=True,
)

# Settings an environment variable overrides (owned by pipeline.features and serve.app).
ENV_OVERRIDES = {
    "features.project": "DOCKLINE_PROJECT",
    "serve.admin_token": "DOCKLINE_ADMIN_TOKEN",
    "serve.deployment_id": "DOCKLINE_DEPLOYMENT_ID",
}
_SECRETS = {"serve.admin_token"}


def format_value(value: Any) -> Any:
    """A setting as a person writes it in dockline.toml (``10m``, not ``0:10:00``)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                return f"{int(seconds // size)}{unit}"
        return f"{seconds:g}s"
    if isinstance(value, tuple):
        return [format_value(v) for v in value]
    return value


def settings(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, Any]]:
    """Every key of ``model`` as ``(section.key, description, default)``, in declaration order.

    Nested sections (``[monitor.drift]``) give dotted keys (``monitor.drift.window``).
    """
    rows: list[tuple[str, str, Any]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            rows += settings(sub, f"{key}.")
        else:
            rows.append((key, info.description or "", info.get_default()))
    return rows


def _lookup(raw: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _data_dir_origin() -> tuple[Path, str]:
    if State.data_dir is not None:
        return State.data_dir, State.data_dir_source
    return resolve_data_dir(None), "env" if os.environ.get(DATA_DIR_ENV) else "default"


def _effective(data_dir: Path | None) -> tuple[DataDir, str, dict[str, Any], list[str]]:
    """The data dir, its origin, the raw file and every problem in it."""
    root, origin = (data_dir, "flag") if data_dir is not None else _data_dir_origin()
    data = DataDir(root)
    raw = read_toml(data.config_file)
    problems: list[str] = []
    try:
        DocklineConfig.model_validate(raw)
    except PydanticValidationError as exc:
        problems = [f"{loc}: {msg}" for loc, msg in config_errors(exc)]
    return data, origin, raw, problems


def _rows(data: DataDir, origin: str, raw: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"key": "data_dir", "value": str(data.root), "source": origin}]
    for key, _, default in settings(DocklineConfig):
        value, source = default, "default"
        found, in_file = _lookup(raw, key)
        if found:
            value, source = in_file, "file"
        env = ENV_OVERRIDES.get(key)
        if env and os.environ.get(env):
            value, source = os.environ[env], "env"
        if key in _SECRETS and value is not None:
            value = "***"
        rows.append({"key": key, "value": format_value(value), "source": source})
    return rows


@config_app.command("show")
def config_show(data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """Every setting's effective value and where it came from: default, file, env or flag.

    Example: dockline config show --data-dir .dockline-demo --json
    """
    data, origin, raw, problems = _effective(data_dir)
    if problems:
        from dockline.core.errors import ConfigError

        raise ConfigError("; ".join(problems), where=str(data.config_file))
    rows = _rows(data, origin, raw)
    if want_json(json_out):
        print_json({"config_file": str(data.config_file), "settings": rows})
        return
    from rich.table import Table

    exists = "" if data.config_file.exists() else " (absent: every setting is a default)"
    table = Table(title=f"{data.config_file}{exists}", title_justify="left")
    for column in ("key", "value", "source"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["key"], str(row["value"]), row["source"])
    console.print(table)


@config_app.command("check")
def config_check(data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """Validate dockline.toml and list every error at once; exit 1 if there is any.

    Example: dockline config check --data-dir .dockline-demo
    """
    data, _, _, problems = _effective(data_dir)
    if want_json(json_out):
        print_json({"config_file": str(data.config_file), "ok": not problems, "errors": problems})
    elif problems:
        console.print(f"{data.config_file}: {len(problems)} error(s)", markup=False)
        for problem in problems:
            console.print(f"  {problem}", markup=False)
    else:
        state = "valid" if data.config_file.exists() else "absent (defaults apply)"
        console.print(f"{data.config_file}: {state}", markup=False)
    if problems:
        raise typer.Exit(1)


__all__ = ["ENV_OVERRIDES", "config_app", "format_value", "settings"]
