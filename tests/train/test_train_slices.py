"""Slice checks: the table, what is judged and what is inconclusive, the gate's policy, and the
whole run (report, verdict, registry history, ``dockline train``'s output) on a dataset where
persistence predicts one region perfectly and the candidate cannot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from train_synth import T0, write_synthetic

from dockline.core.config import TrainConfig, TrainSlicesConfig
from dockline.core.contracts import GateVerdict
from dockline.pipeline.platform import Platform
from dockline.pipeline.train import TrainSummary, open_registry, train_model
from dockline.train.data import TrainingData, load_training_set
from dockline.train.evaluate import average_precision
from dockline.train.gate import evaluate_gate
from dockline.train.report import METRICS_FILE
from dockline.train.slices import (
    compare_slices,
    flagged_slices,
    slice_counts,
    slice_masks,
    slice_table_bytes,
    weighted_average_precision,
)

# -- the table on arrays ------------------------------------------------------------------------


def _scenario(n_per_station: int = 200, seed: int = 0) -> dict[str, Any]:
    """Three slices of four stations each. The candidate ranks well everywhere but slice B,
    where it is noise; persistence is weak everywhere but perfect on B."""
    rng = np.random.default_rng(seed)
    stations = np.repeat([f"s{i:02d}" for i in range(12)], n_per_station)
    group = np.repeat(np.array(list("AAAABBBBCCCC")), n_per_station)
    y = (rng.random(stations.size) < 0.2).astype(np.int8)
    signal = np.where(y == 1, rng.normal(0.7, 0.1, y.size), rng.normal(0.3, 0.1, y.size))
    candidate = np.clip(np.where(group == "B", rng.random(y.size), signal), 0.01, 0.99)
    persistence = np.where(
        group == "B", np.where(y == 1, 0.9, 0.05), 0.2 + 0.05 * rng.random(y.size)
    )
    masks = {"region": {g: group == g for g in "ABC"}}
    return {
        "y": y,
        "stations": stations,
        "masks": masks,
        "candidate": candidate,
        "persistence": persistence,
    }


def _table(s: dict[str, Any], config: TrainSlicesConfig, **models: np.ndarray) -> dict[str, Any]:
    return compare_slices(
        s["y"],
        s["stations"],
        s["masks"],
        {"cand": s["candidate"], "persistence": s["persistence"], **models},
        candidate="cand",
        config=config,
        seed=5,
    )


def test_exactly_the_slice_persistence_predicts_perfectly_is_flagged() -> None:
    s = _scenario()
    table = _table(s, TrainSlicesConfig(bootstrap=100))
    rows = {r["slice"]: r for r in table["families"]["region"]}
    assert [r["status"] for r in rows.values()] == ["ok", "worse", "ok"]
    assert rows["B"]["models"]["persistence"]["pr_auc"] == 1.0
    assert rows["B"]["delta"] < -0.5
    low, high = rows["B"]["interval"]
    assert low <= rows["B"]["delta"] <= high < 0
    assert rows["A"]["interval"] is None  # only a slice that looks worse is bootstrapped
    flags = flagged_slices(table)
    assert [(f.family, f.slice) for f in flags] == [("region", "B")]
    assert flags[0].rows == 800 and flags[0].positives == int(
        s["y"][s["masks"]["region"]["B"]].sum()
    )
    assert slice_counts(table) == (3, 0)


def test_brier_is_judged_too_and_the_tolerance_is_absolute() -> None:
    s = _scenario()
    table = _table(s, TrainSlicesConfig(metric="brier", bootstrap=50))
    assert [f.slice for f in flagged_slices(table)] == ["B"]
    gap = -next(r for r in table["families"]["region"] if r["slice"] == "B")["delta"]
    # a tolerance above the gap: the same slice is no longer worse
    relaxed = _table(s, TrainSlicesConfig(metric="brier", tolerance=gap + 0.01, bootstrap=50))
    assert flagged_slices(relaxed) == []


def test_tiny_slices_are_inconclusive_not_judged() -> None:
    s = _scenario(n_per_station=30)  # slice B: 120 rows, about 24 positives
    table = _table(s, TrainSlicesConfig(min_rows=200))
    assert {r["status"] for r in table["families"]["region"]} == {"inconclusive"}
    assert all(r["delta"] is None for r in table["families"]["region"])
    assert flagged_slices(table) == [] and slice_counts(table) == (0, 3)
    few_positives = _table(s, TrainSlicesConfig(min_rows=10, min_positives=500))
    assert flagged_slices(few_positives) == []
    judged = _table(s, TrainSlicesConfig(min_rows=100, min_positives=5))
    assert [f.slice for f in flagged_slices(judged)] == ["B"]


def test_a_difference_the_interval_does_not_support_is_not_flagged() -> None:
    """Slice B's candidate is far worse on two stations and better on two: the mean trails
    persistence, but resampling stations shows that could be chance."""
    rng = np.random.default_rng(1)
    stations = np.repeat(["a", "b", "c", "d"], 300)
    y = (rng.random(stations.size) < 0.3).astype(np.int8)
    bad = np.isin(stations, ["a", "b"])
    candidate = np.where(bad, 1.0 - y * 0.9, y * 0.8 + 0.1)  # b/a: inverted; c/d: near perfect
    persistence = np.full(y.size, 0.3) + 0.3 * y
    masks = {"all": {"every row": np.ones(y.size, bool)}}
    args = (y, stations, masks, {"cand": candidate, "persistence": persistence})
    with_interval = compare_slices(
        *args, candidate="cand", config=TrainSlicesConfig(metric="brier"), seed=0
    )
    row = with_interval["families"]["all"][0]
    assert row["delta"] < -0.02 and row["interval"][0] < 0 < row["interval"][1]
    assert row["status"] == "ok" and "interval" in row["why"]
    point_only = TrainSlicesConfig(metric="brier", bootstrap=0)
    assert flagged_slices(compare_slices(*args, candidate="cand", config=point_only, seed=0))


def test_the_champion_is_shown_not_judged() -> None:
    s = _scenario()
    table = _table(s, TrainSlicesConfig(), **{"champion v2": s["persistence"]})
    assert table["models"] == ["cand", "persistence", "champion v2"]
    b = next(r for r in table["families"]["region"] if r["slice"] == "B")
    assert b["models"]["champion v2"]["pr_auc"] == 1.0
    assert [f.slice for f in flagged_slices(table)] == ["B"]


def test_same_data_gives_the_same_table_bytes() -> None:
    s = _scenario()
    config = TrainSlicesConfig(bootstrap=100)
    assert slice_table_bytes(_table(s, config)) == slice_table_bytes(_table(_scenario(), config))


def test_weighted_average_precision_is_average_precision_with_repeated_rows() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.3).astype(np.float64)
    p = np.round(rng.random(400), 1)  # many ties
    order = np.argsort(-p, kind="mergesort")
    ends = np.r_[np.flatnonzero(np.diff(p[order]) != 0), p.size - 1]
    ones = np.ones_like(y)
    assert weighted_average_precision(y, ones, order, ends) == pytest.approx(
        average_precision(y, p)
    )
    w = rng.integers(0, 3, 400).astype(np.float64)
    rep = np.repeat(np.arange(400), w.astype(int))
    assert weighted_average_precision(y, w, order, ends) == pytest.approx(
        average_precision(y[rep], p[rep])
    )


# -- the families on a training set ---------------------------------------------------------------

DAYS = 4
SLICE_STATIONS = (0, 3)  # both drift towards empty: the region has empty readings to judge
CUT_US = int(T0.timestamp() * 1e6) + int(0.75 * DAYS * 86_400e6)  # after validation, before test


def _position(s: int) -> tuple[float, float]:
    if s in SLICE_STATIONS:
        return 41.70 + 0.01 * s, -87.55
    return (41.95 + 0.002 * s, -87.66) if s % 2 == 0 else (41.88 + 0.002 * s, -87.63)


def _relabel(s: int, c: dict[str, np.ndarray]) -> np.ndarray:
    """Everywhere: empty within the hour when the noise feature is high, or (half the time)
    when the station is empty now. In the southern region during the test window: exactly
    "empty now" — persistence is perfect there, a model of the usual pattern is not."""
    usual = (c["noise"] > 1.3) | ((c["bikes"] == 0) & (c["u"] < 0.5))
    if s in SLICE_STATIONS:
        return np.where(c["as_of"] >= CUT_US, c["bikes"] == 0, usual)
    out: np.ndarray = usual
    return out


def _regional(root: Path) -> Path:
    return write_synthetic(
        root,
        stations=12,
        days=DAYS,
        positions={s: _position(s) for s in range(12)},
        relabel=_relabel,
        project="bikeshare",
    )


@pytest.fixture(scope="module")
def regional(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    return load_training_set(_regional(tmp_path_factory.mktemp("regional")), None)


def _rows(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    n = data.n_rows
    return np.arange(int(n * 0.6)), np.arange(int(n * 0.8), n)


def test_families_from_positions_capacity_turnover_hours_and_days(regional: TrainingData) -> None:
    history, test = _rows(regional)
    masks = slice_masks(regional, test, history, TrainSlicesConfig(geo_clusters=3))
    assert list(masks) == ["geography", "capacity", "activity", "hour", "day_type"]
    for family, groups in masks.items():
        total = np.sum([m.astype(int) for m in groups.values()], axis=0)
        assert (total == 1).all(), family  # every test row in exactly one slice of each family
    # k-means recovers the three regions, numbered north to south
    ids = regional.station_ids[test]
    clusters = [sorted(set(ids[m])) for m in masks["geography"].values()]
    assert clusters[2] == ["s000", "s003"]
    assert list(masks["geography"])[2].startswith("cluster 3 (41.7")
    assert clusters[0] == sorted(
        f"s{s:03d}" for s in range(12) if s % 2 == 0 and s not in SLICE_STATIONS
    )
    # capacity and activity are station properties: a station sits in one band
    for family in ("capacity", "activity"):
        for mask in masks[family].values():
            assert not set(ids[mask]) & set(ids[~mask])
    assert [n.split(" (")[0] for n in masks["capacity"]] == ["low", "medium", "high"]


def test_activity_from_a_feature_is_the_stations_median_over_the_history(
    regional: TrainingData,
) -> None:
    history, test = _rows(regional)
    config = TrainSlicesConfig(activity_feature="capacity__static", activity_edges=(15.0, 25.0))
    bands = slice_masks(regional, test, history, config)["activity"]
    assert list(bands) == ["low (≤ 15)", "medium (15–25)", "high (> 25)"]
    ids, cap = regional.station_ids[test], regional.column("capacity__static")[test]  # type: ignore[index]
    for name, (a, b) in zip(bands, [(0, 15), (15, 25), (25, 99)], strict=True):
        assert ((cap[bands[name]] > a) & (cap[bands[name]] <= b)).all()
        assert set(ids[bands[name]]) == set(ids[(cap > a) & (cap <= b)])
    missing = TrainSlicesConfig(activity_feature="no_such_feature")
    assert "activity" not in slice_masks(regional, test, history, missing)


def test_hour_bands_follow_the_time_zone(regional: TrainingData) -> None:
    history, test = _rows(regional)
    by_feature = slice_masks(regional, test, history, TrainSlicesConfig())["hour"]
    # the synthetic hour_of_day is the UTC hour: the as-of time in UTC gives the same bands
    by_utc = slice_masks(regional, test, history, TrainSlicesConfig(tz="UTC"))["hour"]
    assert all(np.array_equal(by_feature[k], by_utc[k]) for k in by_feature)
    chicago = slice_masks(regional, test, history, TrainSlicesConfig(tz="America/Chicago"))["hour"]
    night = chicago["night (00–06h)"]
    utc_hours = (regional.as_of_us[test] // 3_600_000_000) % 24
    assert set(utc_hours[night]) == {5, 6, 7, 8, 9, 10}  # CDT is UTC−5 in May


def test_slice_settings_are_checked() -> None:
    for bad in (
        {"hour_bands": (("late", 1), ("early", 5))},
        {"hour_bands": (("a", 0), ("b", 0))},
        {"capacity_edges": (20.0, 10.0)},
        {"tz": "Mars/Olympus"},
        {"on_flag": "panic"},
    ):
        with pytest.raises(pydantic.ValidationError):
            TrainSlicesConfig.model_validate(bad)


# -- the gate ------------------------------------------------------------------------------------


def _gate(table: dict[str, Any], on_flag: str) -> GateVerdict:
    config = TrainConfig(slices=TrainSlicesConfig.model_validate({"on_flag": on_flag}))
    return evaluate_gate(
        "pr_auc", True, 0.6, {"persistence": 0.3}, None, 0.01, config, slices=table
    )


def test_the_gate_warns_by_default_and_fails_when_told() -> None:
    table = _table(_scenario(), TrainSlicesConfig(bootstrap=50))
    warned = _gate(table, "warn")
    assert warned.passed and warned.reasons == []
    assert len(warned.warnings) == 1 and "slice region=B" in warned.warnings[0]
    assert "on_flag = warn" in warned.warnings[0]
    assert [(f.family, f.slice) for f in warned.slice_flags] == [("region", "B")]
    assert (warned.slices_judged, warned.slices_inconclusive) == (3, 0)
    assert warned.slice_note() == "; slices worse than persistence (warn): region=B"
    failed = _gate(table, "fail")
    assert not failed.passed and "slice region=B" in failed.reasons[0] and not failed.warnings
    # the verdict is stored as JSON with the version: it must come back whole
    assert GateVerdict.model_validate_json(failed.model_dump_json()) == failed
    quiet = evaluate_gate("pr_auc", True, 0.6, {"persistence": 0.3}, None, 0.01, TrainConfig())
    assert quiet.slice_flags == [] and quiet.slices_judged == 0 and quiet.slice_note() == ""


def test_a_verdict_with_many_flagged_slices_stays_small_enough_to_store() -> None:
    """The verdict is an MLflow tag (≤ 8,000 characters): the worst 20 flags are kept, the
    count is exact, five are spelled out."""
    rng = np.random.default_rng(3)
    stations = np.repeat([f"s{i:03d}" for i in range(120)], 60)
    y = (rng.random(stations.size) < 0.3).astype(np.int8)
    persistence = y * 0.8 + 0.1
    # station i's candidate is noise, more so for higher i: later slices are worse
    mix = np.repeat(np.linspace(0.5, 1.0, 120), 60)
    candidate = (1 - mix) * persistence + mix * rng.random(y.size)
    masks = {
        "station group": {
            f"group {g:02d}": np.isin(stations, [f"s{i:03d}" for i in range(3 * g, 3 * g + 3)])
            for g in range(40)
        }
    }
    table = compare_slices(
        y,
        stations,
        masks,
        {"cand": candidate, "persistence": persistence},
        candidate="cand",
        config=TrainSlicesConfig(min_rows=100, min_positives=10, bootstrap=20),
        seed=0,
    )
    n_worse = len(flagged_slices(table))
    assert n_worse > 25
    verdict = _gate(table, "warn")
    assert verdict.slices_flagged == n_worse and len(verdict.slice_flags) == 20
    assert verdict.slice_flags[0].slice == "group 39"  # worst first
    assert len(verdict.warnings) == 6 and verdict.warnings[-1].startswith(f"and {n_worse - 5} more")
    assert len(verdict.model_dump_json()) < 8000
    assert verdict.slice_note().endswith(f" and {n_worse - 5} more")


# -- the whole run -------------------------------------------------------------------------------

TOML = """[train]
candidates = ["logistic"]
n_trials = 0
cv_folds = 2
[train.slices]
geo_clusters = 3
min_rows = 50
min_positives = 5
"""


def _train(root: Path, dataset: Path, toml: str) -> tuple[Platform, TrainSummary]:
    root.mkdir(parents=True)
    (root / "dockline.toml").write_text(toml, encoding="utf-8")
    platform = Platform.open(root)
    return platform, train_model(platform, dataset=dataset, actor="test")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Platform, TrainSummary, Path]:
    root = tmp_path_factory.mktemp("slice-run")
    dataset = _regional(root / "ds")
    platform, summary = _train(root / "data", dataset, TOML)
    return platform, summary, dataset


@pytest.mark.slow
def test_the_run_flags_the_region_in_verdict_registry_report_and_output(
    run: tuple[Platform, TrainSummary, Path],
) -> None:
    from test_train_pipeline import render

    platform, summary, _ = run
    gate = summary.gate
    assert [(f.family, f.slice[:12]) for f in gate.slice_flags] == [("geography", "cluster 3 (4")]
    assert gate.slice_policy == "warn" and gate.warnings and gate.slices_judged >= 10
    assert not [r for r in gate.reasons if "slice" in r]
    # the registry holds the verdict with its flags, and the history says so
    registry = open_registry(platform)
    stored = registry.versions(summary.model_name)[0].gate
    assert stored is not None and stored.slice_flags == gate.slice_flags
    events = registry.history(summary.model_name)
    assert "slices worse than persistence (warn): geography=cluster 3" in events[0].reason
    assert summary.alias == "champion"  # only warned: promoted, and the alias move says why
    assert events[-1].action == "promote" and "geography=cluster 3" in events[-1].reason
    # dockline train's output
    text = render(summary)
    assert "1 worse than persistence — a warning" in text
    assert "! slice geography=cluster 3" in text
    # the report: a table and a plot per family, the flagged row marked
    page = Path(summary.report).read_text(encoding="utf-8")
    for family in ("geography", "capacity", "activity", "hour", "day_type"):
        assert f"<h3>{family}</h3>" in page
        assert re.search(rf'<img alt="pr_auc by {family} \(test split\)', page)
    flagged = re.findall(r"<tr class=flag><td>([^<]*)</td>", page)
    assert [f for f in flagged if f.startswith("cluster")] == [gate.slice_flags[0].slice]
    assert "worse than persistence</span>" in page and "Gate warning:" in page
    metrics = json.loads((Path(summary.report).parent / METRICS_FILE).read_text())
    assert metrics["slices"] == json.loads(json.dumps(summary.slices))
    assert metrics["slices"]["models"] == [summary.selected, "persistence"]


@pytest.mark.slow
def test_with_on_flag_fail_the_region_fails_the_gate_and_the_champion_is_shown(
    run: tuple[Platform, TrainSummary, Path],
) -> None:
    """Retrain the same data in the same data dir with ``on_flag = "fail"``: the first run's
    version is champion now, so the table shows it beside the candidate and persistence."""
    first_platform, first, dataset = run
    assert first.alias == "champion"  # a warning does not stop the promotion
    root = first_platform.data.root
    (root / "dockline.toml").write_text(TOML + 'on_flag = "fail"\n', encoding="utf-8")
    platform = Platform.open(root)
    summary = train_model(platform, dataset=dataset, actor="test")
    assert summary.version == first.version + 1  # another config: another bundle
    assert not summary.gate.passed and summary.alias is None
    assert any(r.startswith("slice geography=cluster 3") for r in summary.gate.reasons)
    assert not summary.gate.warnings
    registry = open_registry(platform)
    assert registry.resolve(summary.model_name, "champion").version == first.version  # type: ignore[union-attr]
    champion = f"champion v{first.version}"
    assert summary.slices["models"] == [summary.selected, "persistence", champion]
    # same data and seed: the slice verdicts are the same (the champion's column aside)
    for family, rows in summary.slices["families"].items():
        before = first.slices["families"][family]
        assert [(r["slice"], r["status"], r["delta"]) for r in rows] == [
            (r["slice"], r["status"], r["delta"]) for r in before
        ]
    page = Path(summary.report).read_text(encoding="utf-8")
    assert f"<th>PR-AUC {champion}</th>" in page and "<span class='failed'>failed</span>" in page
    assert "slices worse than persistence (fail)" in registry.history(summary.model_name)[-1].reason


def test_the_documented_slice_settings_load() -> None:
    """docs/training.md's ``[train.slices]`` example is a valid config, as written."""
    import tomllib

    from dockline.core.config import DocklineConfig

    page = (Path(__file__).parents[2] / "docs" / "training.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(\[train\.slices\].*?)```", page, re.DOTALL)
    assert block is not None
    config = DocklineConfig.model_validate({"train": tomllib.loads(block[1])["train"]})
    assert config.train.slices.on_flag == "fail" and config.train.slices.hour_bands[1] == (
        "am peak",
        7,
    )


def test_group_medians_match_numpy() -> None:
    from dockline.train.slices import _group_medians

    rng = np.random.default_rng(4)
    codes = rng.integers(0, 7, 500)
    values = np.round(rng.normal(size=500), 1)
    values[rng.random(500) < 0.1] = np.nan
    got = _group_medians(codes, values, 8)  # code 7 has no rows
    for c in range(7):
        v = values[codes == c]
        assert got[c] == pytest.approx(np.median(v[~np.isnan(v)]))
    assert np.isnan(got[7])
