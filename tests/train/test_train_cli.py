"""``dockline train`` and ``dockline models`` end to end, as a user runs them (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from train_synth import write_synthetic

pytestmark = pytest.mark.slow


def dockline(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockline", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def one_line_error(
    result: subprocess.CompletedProcess[str], fragment: str, *, code: int = 2
) -> None:
    """One line on stderr; exit 2 for a usage error, 1 for a refusal at run time."""
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0], lines[0]


def test_train_registers_a_reproducible_champion_and_the_gate_guards_promotion(
    tmp_path: Path,
) -> None:
    dataset = write_synthetic(tmp_path / "ds", stations=12, days=4)
    data = tmp_path / "data"

    first = json_of(
        dockline(
            data,
            "train",
            "--dataset",
            str(dataset),
            "--trials",
            "1",
            "--check-reproducible",
            "--json",
        )
    )
    assert first["version"] == 1 and first["alias"] == "champion"
    assert first["reproducible"] is True
    assert first["gate"]["passed"] and set(first["gate"]["baselines"]) == {
        "persistence",
        "hour_of_week",
    }
    assert first["parity_max_abs_diff"] <= 1e-5
    assert Path(first["report"]).is_file()
    name = first["model_name"]
    bundle = Path(first["bundle_path"])
    assert bundle.name == first["bundle_id"] and (bundle / "model.onnx").is_file()
    assert list((data / "lineage" / "training").glob("*.json"))

    # The same data again: the same bundle, so its version comes back; nothing is registered.
    again = json_of(dockline(data, "train", "--dataset", str(dataset), "--trials", "1", "--json"))
    assert again["version"] == 1 and again["already_registered"]
    assert again["bundle_id"] == first["bundle_id"]  # same data, config, seed: same bytes

    # A stricter calibration bound: another bundle (another config), which fails the gate.
    (data / "dockline.toml").write_text("[train]\nmax_ece = 1e-9\n", encoding="utf-8")
    second = json_of(dockline(data, "train", "--dataset", str(dataset), "--trials", "1", "--json"))
    assert second["version"] == 2 and second["alias"] is None
    assert not second["already_registered"] and second["bundle_id"] != first["bundle_id"]
    assert not second["gate"]["passed"]
    assert any("calibration" in reason for reason in second["gate"]["reasons"])

    one_line_error(  # a failed gate is a run-time refusal: exit 1
        dockline(data, "models", "promote", name, "2"), "failed the promotion gate", code=1
    )
    one_line_error(dockline(data, "models", "rollback", name), "no previous champion", code=1)

    listed = json_of(dockline(data, "models", "list", name, "--json"))
    assert [(v["version"], v["aliases"]) for v in listed["versions"]] == [
        (1, ["champion"]),
        (2, []),
    ]
    history = json_of(dockline(data, "models", "history", name, "--json"))["history"]
    assert [(e["action"], e["alias"], e["to_version"]) for e in history] == [
        ("register", "", 1),
        ("promote", "champion", 1),
        ("register", "", 2),
    ]
    assert history[1]["reason"] and history[1]["actor"]


def test_train_rejects_a_missing_dataset_and_an_unknown_label(tmp_path: Path) -> None:
    one_line_error(
        dockline(tmp_path, "train", "--dataset", str(tmp_path / "nope")), "DatasetMetadata"
    )
    dataset = write_synthetic(tmp_path / "ds", stations=4, days=2)
    one_line_error(
        dockline(tmp_path, "train", "--dataset", str(dataset), "--label", "bikes_gone"),
        "label must be one of",
    )
