"""Seed 003's five checks over a dataset metadata file, in order.

``file_exists`` → ``valid_json`` → ``dataset_name_present`` → ``dataset_version_present`` →
``freshness_computable``. A missing file or bad JSON stops there (the later checks cannot run);
the last three always run together so one report lists every missing field.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from dockline.core.monitoring import CheckReport, CheckResult

__all__ = ["run_checks"]


def _report(path: Path, results: list[CheckResult]) -> CheckReport:
    return CheckReport(
        metadata_path=str(path), all_passed=all(r.passed for r in results), results=results
    )


def _present(data: dict[str, Any], name: str) -> CheckResult:
    value = data.get(name)
    ok = isinstance(value, str) and bool(value.strip())
    return CheckResult(
        check=f"{name}_present", passed=ok, detail="" if ok else f"Missing or empty {name}"
    )


def _freshness_computable(data: dict[str, Any]) -> CheckResult:
    value = data.get("built_at")
    if not isinstance(value, str) or not value.strip():
        return CheckResult(
            check="freshness_computable",
            passed=False,
            detail="Missing built_at — freshness cannot be computed from metadata",
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return CheckResult(
            check="freshness_computable",
            passed=False,
            detail=f"built_at must be an ISO-8601 time; got {value!r}",
        )
    if parsed.tzinfo is None:
        return CheckResult(
            check="freshness_computable",
            passed=False,
            detail=f"built_at must carry a time zone; got {value!r}",
        )
    return CheckResult(check="freshness_computable", passed=True)


def run_checks(path: Path) -> CheckReport:
    """The :class:`CheckReport` of the metadata file at ``path`` (never raises on bad input)."""
    if not path.is_file():
        return _report(
            path, [CheckResult(check="file_exists", passed=False, detail=f"File not found: {path}")]
        )
    results = [CheckResult(check="file_exists", passed=True)]
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        results.append(CheckResult(check="valid_json", passed=False, detail=str(exc)))
        return _report(path, results)
    if not isinstance(data, dict):
        detail = f"must be a JSON object; got {type(data).__name__}"
        results.append(CheckResult(check="valid_json", passed=False, detail=detail))
        return _report(path, results)
    results.append(CheckResult(check="valid_json", passed=True))
    results.append(_present(data, "dataset_name"))
    results.append(_present(data, "dataset_version"))
    results.append(_freshness_computable(data))
    return _report(path, results)
