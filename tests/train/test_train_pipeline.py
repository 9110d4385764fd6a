"""``train_model`` on a small synthetic set: the label the dataset was built for, no duplicate
versions of one bundle, and a summary and report that tell the story of the run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console
from train_synth import write_synthetic

from dockline.cli._training import train_tables
from dockline.core.errors import ConfigError
from dockline.pipeline.platform import Platform
from dockline.pipeline.train import TrainSummary, open_registry, train_model

FAST = '[train]\ncandidates = ["logistic"]\nn_trials = 0\ncv_folds = 2\n'


def platform_at(root: Path, toml: str = FAST) -> Platform:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dockline.toml").write_text(toml, encoding="utf-8")
    return Platform.open(root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Platform, Path, TrainSummary]:
    """Six days from a Monday, built for ``full_next_hour``: the test split is the weekend."""
    root = tmp_path_factory.mktemp("pipeline")
    dataset = write_synthetic(
        root / "ds", stations=6, days=6, label="full_next_hour", project="bikeshare"
    )
    platform = platform_at(root / "data")
    return platform, dataset, train_model(platform, dataset=dataset, actor="test")


@pytest.mark.slow
def test_train_trains_the_label_the_dataset_was_built_for(
    trained: tuple[Platform, Path, TrainSummary],
) -> None:
    platform, _, summary = trained
    assert summary.label == "full_next_hour"
    assert summary.model_name == "bikeshare-full_next_hour"
    assert [v.version for v in open_registry(platform).versions(summary.model_name)] == [1]
    assert open_registry(platform).versions("bikeshare-empty_next_hour") == []


@pytest.mark.slow
def test_retraining_identical_data_registers_no_duplicate_version(
    trained: tuple[Platform, Path, TrainSummary],
) -> None:
    platform, dataset, first = trained
    again = train_model(platform, dataset=dataset, actor="test")
    assert again.bundle_id == first.bundle_id
    assert again.already_registered and not first.already_registered
    assert again.version == first.version == 1
    assert again.alias == first.alias
    versions = open_registry(platform).versions(first.model_name)
    assert [v.version for v in versions] == [1]
    history = open_registry(platform).history(first.model_name)
    assert [e.action for e in history].count("register") == 1
    text = render(again)
    assert "already registered" in text and "nothing new registered" in text


def render(summary: TrainSummary) -> str:
    console = Console(record=True, width=200)
    for item in train_tables(summary):
        console.print(item)
    return console.export_text()


@pytest.mark.slow
def test_the_summary_shows_the_selection_metric_split_rows_and_a_legend(
    trained: tuple[Platform, Path, TrainSummary],
) -> None:
    _, _, summary = trained
    text = render(summary)
    primary = summary.primary_metric
    assert f"validation {primary}" in text
    value = summary.validation[summary.selected][primary]
    assert re.search(rf"{summary.selected} ◀\s*│\s*{value:.4f}", text), text
    assert "◀ selected: best validation" in text and "Baselines are never selected" in text
    for name, split in summary.splits.items():
        assert re.search(rf"{name}\s.*\s{int(split['rows']):,}\s", text), (name, text)
    assert sum(int(s["rows"]) for s in summary.splits.values()) <= summary.rows
    # six days from a Monday: the test fifth is Saturday evening to Sunday night
    assert summary.splits["test"]["weekend_share"] > 0.6
    assert any("weekend" in f for f in summary.splits["test"]["flags"])
    assert not summary.splits["train"]["flags"]


@pytest.mark.slow
def test_the_report_tells_which_model_why_the_gate_the_version_and_the_dataset(
    trained: tuple[Platform, Path, TrainSummary],
) -> None:
    _, dataset, summary = trained
    page = Path(summary.report).read_text(encoding="utf-8")
    assert f"<b>Selected:</b> {summary.selected} (this report)" in page
    assert f"best validation {summary.primary_metric}" in page
    verdict = "passed" if summary.gate.passed else "failed"
    assert f"<b>Promotion gate:</b> <span class='{verdict}'>{verdict}</span>" in page
    assert f"{summary.model_name} version {summary.version}" in page
    assert summary.dataset_hash and summary.dataset_hash in page and str(dataset) in page
    # the PR curve carries the baselines and the random line; the threshold plot its target
    alts = re.findall(r'<img alt="([^"]*)"', page)
    pr = next(a for a in alts if a.startswith("Precision-recall"))
    assert "baseline: persistence" in pr and "baseline: hour_of_week" in pr and "random" in pr
    threshold = next(a for a in alts if a.startswith("Threshold"))
    assert "target precision 0.5" in threshold and "chosen" in threshold
    # the splits are a table with their composition; the weekend-heavy test split is flagged
    assert "<th>weekend</th>" in page and "<th>label rate</th>" in page
    assert re.search(r"<tr class=flag><td>test</td>.*?\d+% weekend</td></tr>", page)
    assert "Check the splits" in page


def test_a_config_label_that_disagrees_with_the_dataset_is_refused(tmp_path: Path) -> None:
    dataset = write_synthetic(tmp_path / "ds", stations=2, days=1, label="full_next_hour")
    platform = platform_at(tmp_path / "data", FAST + 'label = "empty_next_hour"\n')
    with pytest.raises(ConfigError, match=r"built for 'full_next_hour'.*pass --label"):
        train_model(platform, dataset=dataset)
