"""Paths and loaders for the deployment-file tests."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dockline.json"


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    """Every document of a multi-document YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def require_binary(name: str, hint: str) -> str:
    """The path of ``name`` (this virtualenv's bin first); skip with ``hint`` when it is missing,
    fail under CI=true."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{hint}; under CI=true this is a failure", pytrace=False)
        pytest.skip(hint)
    return found


# Grafana's macros and the dashboard's variables, replaced by values Prometheus accepts.
_MACROS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}


def promql(expr: str) -> str:
    """A panel's query as Prometheus receives it: macros replaced, ``$var`` matchers to ``.*``."""
    for macro, value in _MACROS.items():
        expr = expr.replace(macro, value)
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)
