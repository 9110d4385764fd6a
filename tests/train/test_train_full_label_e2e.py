"""A simulated city end to end through the commands: ``dataset build --label full_next_hour``
past the end of the data, then ``train`` → a registered ``bikeshare-full_next_hour`` model; the
dataset it was trained on can no longer be replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from dockline.cli import _app
from dockline.cli._training import dataset_build, train
from dockline.features.dataset import DatasetExistsError
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.pipeline.train import open_registry
from dockline.sim import CityConfig, write_archive

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 5, 6, 5, tzinfo=UTC)
DAYS = 8


def cli() -> typer.Typer:
    """The root app with these commands registered the way ``cli/_app.py`` registers them."""
    root = typer.Typer(pretty_exceptions_enable=False)
    root.callback()(_app._root)
    datasets = typer.Typer()
    datasets.command("build")(dataset_build)
    root.add_typer(datasets, name="dataset")
    root.command("train")(train)
    return root


def run(data: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli(), ["--data-dir", str(data), *args])
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def iso(t: datetime) -> str:
    return t.isoformat()


def test_full_next_hour_from_dataset_build_to_a_registered_model(tmp_path: Path) -> None:
    write_archive(CityConfig(stations=12, seed=3, start=START), float(DAYS), tmp_path / "archive")
    data = tmp_path / "data"
    data.mkdir()
    (data / "dockline.toml").write_text(
        '[train]\ncandidates = ["logistic"]\nn_trials = 0\ncv_folds = 2\n', encoding="utf-8"
    )
    platform = Platform.open(data)
    ingest_archive(platform, tmp_path / "archive")
    sink_offline(platform)

    out = tmp_path / "datasets" / "full"
    end = START + timedelta(days=DAYS, hours=3)  # three hours past the archive's end
    build = (
        "dataset", "build", "--label", "full_next_hour", "--start",
        iso(START + timedelta(days=1)), "--every", "20m", "--out", str(out),
        "--project", str(REPO / "examples" / "bikeshare"),
    )  # fmt: skip
    built = run(data, *build, "--end", iso(end), "--json")
    assert built["status"] == "written" and built["target"] == "full_next_hour"
    unknown = built["unknown_labels"]
    assert unknown["rows"] > 0 and "newest ingested_at" in unknown["reason"]
    table = pq.read_table(out / "data.parquet")
    assert table.column("full_next_hour").null_count == unknown["rows"]
    assert pc.max(table.column("as_of")).as_py() > datetime.fromisoformat(unknown["known_until"])

    summary = run(data, "train", "--dataset", str(out), "--json")
    assert summary["label"] == "full_next_hour"
    assert summary["model_name"] == "bikeshare-full_next_hour"
    assert summary["unlabeled_rows"] == unknown["rows"]  # left out, not trained as negatives
    versions = open_registry(platform).versions("bikeshare-full_next_hour")
    assert [(v.version, v.bundle_id) for v in versions] == [(1, summary["bundle_id"])]
    assert open_registry(platform).versions("bikeshare-empty_next_hour") == []

    # the dataset a registered model was trained on is never replaced, not even with --force
    with pytest.raises(DatasetExistsError, match="bikeshare-full_next_hour version 1") as info:
        run(data, *build, "--end", iso(end - timedelta(hours=1)), "--force", "--json")
    assert info.value.reason == "dataset_in_use" and "\n" not in str(info.value)
    assert run(data, *build, "--end", iso(end), "--json")["status"] == "unchanged"
    said = CliRunner().invoke(cli(), ["--data-dir", str(data), *build, "--end", iso(end)])
    assert said.exit_code == 0, said.output
    lines = said.stdout.splitlines()
    assert lines[0].startswith("kept (the same dataset is already there)"), lines
    assert lines[2].startswith(
        f"{unknown['rows']:,} rows have an unknown full_next_hour (null; training leaves them"
        " out): their 60 min horizon ends after"
    ), lines
