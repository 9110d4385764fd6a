"""``dockline.toml`` as a whole: every section (:class:`DocklineConfig`), reading the file,
reporting all its errors at once, and recording a project in it.

Import these from :mod:`dockline.core.config`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError as PydanticValidationError

from dockline.core._sections import (
    ClockConfig,
    FeaturesConfig,
    IngestConfig,
    LogConfig,
    OfflineConfig,
    OnlineConfig,
    ServeConfig,
    TrainConfig,
    _Frozen,
)
from dockline.core._sections_ops import (
    CdcConfig,
    DecideConfig,
    LineageConfig,
    MonitorConfig,
    RegistryConfig,
    TracingConfig,
)
from dockline.core.errors import ConfigError

__all__ = ["DocklineConfig", "config_errors", "read_toml", "record_project"]


class DocklineConfig(_Frozen):
    """All of dockline's settings, loaded from ``<data-dir>/dockline.toml`` when present."""

    log: LogConfig = LogConfig()
    ingest: IngestConfig = IngestConfig()
    offline: OfflineConfig = OfflineConfig()
    online: OnlineConfig = OnlineConfig()
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig = TrainConfig()
    serve: ServeConfig = ServeConfig()
    clock: ClockConfig = ClockConfig()
    monitor: MonitorConfig = MonitorConfig()
    decide: DecideConfig = DecideConfig()
    lineage: LineageConfig = LineageConfig()
    tracing: TracingConfig = TracingConfig()
    cdc: CdcConfig = CdcConfig()
    registry: RegistryConfig = RegistryConfig()

    @classmethod
    def load(cls, path: Path | None) -> Self:
        """Read ``path`` (TOML); a missing ``path`` gives the defaults."""
        if path is None or not path.exists():
            return cls()
        raw = read_toml(path)
        try:
            return cls.model_validate(raw)
        except PydanticValidationError as exc:
            problems = "; ".join(f"{loc}: {msg}" for loc, msg in config_errors(exc))
            raise ConfigError(problems, where=str(path)) from exc


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path`` (``{}`` when absent)."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=str(path)) from exc


def config_errors(exc: PydanticValidationError) -> list[tuple[str, str]]:
    """Every problem in a validation error as ``(dotted.key, message)``, not just the first."""
    return [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]


def record_project(config_file: Path, project: Path) -> bool:
    """Write ``[features] project = "<project>"`` into ``config_file`` unless a project is set.

    The data dir then knows its project, so later commands run from any directory find it. The
    file is edited as text (other settings and comments are kept); returns whether it wrote.
    """
    raw = read_toml(config_file)
    features = raw.get("features", {})
    if isinstance(features, dict) and features.get("project"):
        return False
    line = f"project = {json.dumps(str(project))}\n"  # a JSON string is a TOML basic string
    text = config_file.read_text(encoding="utf-8") if config_file.exists() else ""
    lines = text.splitlines(keepends=True)
    for number, existing in enumerate(lines):
        if existing.split("#")[0].strip() == "[features]":
            lines.insert(number + 1, line)
            break
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(("\n" if lines else "") + "[features]\n" + line)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_file.with_suffix(".toml.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(config_file)
    return True
