"""Shared helpers of the monitor tests: a root app like dockline's, and a real bundle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.testing import CliRunner

from dockline.cli._monitor import monitor_app

T0 = datetime(2026, 4, 7, 10, 0, tzinfo=UTC)

root = typer.Typer()


@root.callback()
def _root(data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None) -> None:
    """The root app's --data-dir, as dockline's root callback declares it."""


root.add_typer(monitor_app, name="monitor")
runner = CliRunner()


def make_bundle(directory: Path, features: list[str], train: Any, scores: Any) -> str:
    from dockline.core.bundle import (
        BundleManifest,
        Calibration,
        Lineage,
        OnnxSpec,
        ParityReport,
        ThresholdChoice,
        write_bundle,
    )
    from dockline.train.export import drift_baseline

    manifest = BundleManifest(
        project="bikeshare",
        model_name="bikeshare-empty_next_hour",
        label="empty_next_hour",
        candidate="logistic",
        features=features,
        onnx=OnnxSpec(input_name="x", output_name="p", opset=17),
        calibration=Calibration(method="none"),
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.5, recall=0.5
        ),
        parity=ParityReport(rows=1, max_abs_diff=0.0, tolerance=1e-5, passed=True),
        lineage=Lineage(
            dataset_name="week",
            dataset_hash="h",
            plan_hash="p",
            config_hash="c",
            code_version="0",
            seed=0,
        ),
        train_start=T0 - timedelta(days=7),
        test_end=T0 - timedelta(days=1),
    )
    # The model bytes are not read by drift; the drift baseline is training's own.
    bundle = write_bundle(
        directory, manifest, {"model.onnx": b"onnx"}, drift_baseline(train, features, scores)
    )
    return bundle.bundle_id
