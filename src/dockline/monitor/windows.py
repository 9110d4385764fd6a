"""Reading serving metrics windows: discovery, validation, bad-line reports and deduplication.

Serving appends :class:`ServingMetricsWindow` JSON lines under
``serving/metrics/{date}/{hour}/*.jsonl``. :func:`read_windows` reads every ``*.jsonl`` below a
directory (any layout), validates each line, and reports a bad line with its file, line number
and reason — a bad line never stops the run. Windows are deduplicated on seed 003's key
``(deployment_id, endpoint_name, window_start, window_end)``; the first one read wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError as PydanticValidationError

from dockline.core.contracts import ServingMetricsWindow
from dockline.core.errors import NotFoundError

__all__ = ["BadLine", "WindowKey", "WindowScan", "dedupe_key", "parse_window", "read_windows"]

WindowKey = tuple[str, str, datetime, datetime]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a valid window: where it is and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(slots=True)
class WindowScan:
    """What :func:`read_windows` found."""

    windows: list[ServingMetricsWindow] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    duplicates: int = 0
    files: int = 0


def dedupe_key(window: ServingMetricsWindow) -> WindowKey:
    """Seed 003's deduplication key."""
    return (window.deployment_id, window.endpoint_name, window.window_start, window.window_end)


def _reason(exc: PydanticValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "json_invalid":
        return f"invalid JSON: {first['msg']}"
    return f"{loc}: {first['msg']}{more}" if loc else f"{first['msg']}{more}"


def parse_window(line: bytes) -> ServingMetricsWindow | str:
    """The window on one line, or the reason it is not one."""
    try:
        window = ServingMetricsWindow.model_validate_json(line)
    except PydanticValidationError as exc:
        return _reason(exc)
    except ValueError as exc:  # e.g. a naive timestamp refused by the UTC validator
        return str(exc).splitlines()[0]
    if window.window_end <= window.window_start:
        return (
            f"window_end must be after window_start; got {window.window_end.isoformat()}"
            f" <= {window.window_start.isoformat()}"
        )
    # Model fields may be empty (serving stamps "" before a model loads); the key fields may not.
    for name in ("deployment_id", "endpoint_name"):
        if not getattr(window, name).strip():
            return f"{name} must not be empty"
    return window


def read_windows(root: Path) -> WindowScan:
    """Every valid window in ``root/**/*.jsonl`` (sorted by deployment, start, endpoint).

    Raises :class:`NotFoundError` only if ``root`` itself does not exist; an empty directory
    gives an empty scan.
    """
    if not root.is_dir():
        raise NotFoundError(
            "no serving metrics directory here", reason="no_windows", where=str(root)
        )
    scan = WindowScan()
    seen: set[WindowKey] = set()
    for path in sorted(root.rglob("*.jsonl")):
        scan.files += 1
        try:
            data = path.read_bytes()
        except OSError as exc:
            scan.bad_lines.append(BadLine(str(path), 0, f"cannot read: {exc.strerror or exc}"))
            continue
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            parsed = parse_window(raw)
            if isinstance(parsed, str):
                scan.bad_lines.append(BadLine(str(path), number, parsed))
                continue
            key = dedupe_key(parsed)
            if key in seen:
                scan.duplicates += 1
                continue
            seen.add(key)
            scan.windows.append(parsed)
    scan.windows.sort(key=lambda w: (w.deployment_id, w.window_start, w.endpoint_name))
    return scan
