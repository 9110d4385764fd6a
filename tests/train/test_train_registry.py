"""The MLflow registry: versions carry their bundle and verdict; alias moves leave a history."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from dockline.core.bundle import (
    Bundle,
    BundleManifest,
    Calibration,
    DriftBaseline,
    FeatureBaseline,
    Lineage,
    OnnxSpec,
    ParityReport,
    ThresholdChoice,
    write_bundle,
)
from dockline.core.config import DataDir
from dockline.core.contracts import GateVerdict
from dockline.core.errors import ContractError, NotFoundError, ValidationError
from dockline.core.ports import ModelRegistry
from dockline.core.time import FixedClock
from dockline.train.mlflow_log import default_artifact_root, log_candidate_run, run_name
from dockline.train.registry import MlflowRegistry

FEATURES = ["a", "b"]
T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def _bundle(root: Path, seed: int) -> Bundle:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = x[:, 0] + rng.normal(scale=0.5, size=200) > 0
    model = LogisticRegression().fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    manifest = BundleManifest(
        project="test",
        model_name="m",
        label="y",
        candidate="logistic",
        features=FEATURES,
        onnx=OnnxSpec(input_name="X", output_name="probabilities", opset=17),
        calibration=Calibration(method="none"),
        threshold=ThresholdChoice(policy="target_precision", threshold=0.5, precision=1, recall=1),
        parity=ParityReport(rows=200, max_abs_diff=0.0, tolerance=1e-5, passed=True),
        lineage=Lineage(
            dataset_name="d",
            dataset_hash="0" * 64,
            plan_hash="1" * 64,
            config_hash="2" * 64,
            code_version="0.1.0",
            seed=seed,
        ),
        train_start=T0,
        test_end=T0 + timedelta(days=1),
    )
    drift = DriftBaseline(
        features=[FeatureBaseline(name=n, count=200, null_fraction=0) for n in FEATURES]
    )
    return write_bundle(root, manifest, {"model.onnx": onx.SerializeToString()}, drift)


def _verdict(passed: bool, value: float = 0.4) -> GateVerdict:
    return GateVerdict(
        passed=passed,
        primary_metric="pr_auc",
        higher_is_better=True,
        value=value,
        margin=0.0,
        baselines={"persistence": 0.2, "hour_of_week": 0.3},
        ece=0.01,
        max_ece=0.05,
        reasons=[] if passed else ["pr_auc 0.1 does not beat persistence 0.2"],
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> DataDir:
    # One MLflow database for the module: creating its tables takes seconds.
    return DataDir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[Bundle]:
    # Built outside the data directory, as a trainer's staging area would.
    staging = tmp_path_factory.mktemp("staging")
    return [_bundle(staging, seed) for seed in range(3)]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def registry(data_dir: DataDir, clock: FixedClock) -> Iterator[MlflowRegistry]:
    yield MlflowRegistry.for_data_dir(data_dir, clock)


def test_implements_the_port(registry: MlflowRegistry) -> None:
    assert isinstance(registry, ModelRegistry)


def test_register_and_resolve_copies_a_verified_bundle(
    registry: MlflowRegistry, data_dir: DataDir, bundles: list[Bundle], clock: FixedClock
) -> None:
    name = "reg-resolve"
    assert registry.versions(name) == []
    assert registry.resolve(name, "champion") is None
    v1 = registry.register(name, bundles[0].path, run_id=None, gate=_verdict(True))
    v2 = registry.register(name, bundles[1].path, run_id=None, gate=None)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.bundle_id == bundles[0].bundle_id
    assert v1.gate == _verdict(True)
    assert v2.gate is None
    assert v1.created_at == T0
    assert [v.version for v in registry.versions(name)] == [1, 2]

    registry.set_alias(name, "champion", 1, actor="ana", reason="first", action="promote")
    resolved = registry.resolve(name, "champion")
    assert resolved is not None
    assert resolved.version == 1
    assert resolved.aliases == ["champion"]
    local = Path(resolved.bundle_path)
    assert local == data_dir.bundles / bundles[0].bundle_id
    assert (local / "model.onnx").read_bytes() == bundles[0].file("model.onnx").read_bytes()
    assert sorted(p.name for p in local.iterdir()) == sorted(
        p.name for p in bundles[0].path.iterdir()
    )
    assert registry.resolve(name, "challenger") is None
    # peek answers from metadata alone: the same version, and no local copy is made or read.
    shutil.rmtree(local)
    peeked = registry.peek(name, "champion")
    assert peeked == resolved
    assert registry.peek(name, "challenger") is None
    assert not local.exists()
    # The local copy is reused, and rebuilt from MLflow's artifacts when it is gone.
    again = registry.resolve(name, "champion")
    assert again is not None
    assert (local / "manifest.json").exists()
    assert registry.get(name, 2).bundle_id == bundles[1].bundle_id


def test_resolve_refuses_a_tampered_local_bundle(
    registry: MlflowRegistry, bundles: list[Bundle]
) -> None:
    name = "reg-tamper"
    v = registry.register(name, bundles[2].path, run_id=None, gate=_verdict(True))
    registry.set_alias(name, "champion", v.version, actor="ana", reason="r", action="promote")
    resolved = registry.resolve(name, "champion")
    assert resolved is not None
    model = Path(resolved.bundle_path) / "model.onnx"
    try:
        model.write_bytes(model.read_bytes() + b"\0")
        with pytest.raises(ContractError) as err:
            registry.resolve(name, "champion")
        assert err.value.reason == "bundle_tampered"
    finally:
        shutil.rmtree(resolved.bundle_path)


def test_register_refuses_a_bundle_that_does_not_verify(
    registry: MlflowRegistry, tmp_path: Path, bundles: list[Bundle]
) -> None:
    broken = tmp_path / bundles[0].bundle_id
    shutil.copytree(bundles[0].path, broken)
    (broken / "extra.bin").write_bytes(b"x")
    with pytest.raises(ContractError):
        registry.register("reg-broken", broken, run_id=None, gate=None)
    assert registry.versions("reg-broken") == []


def test_register_into_an_existing_run(
    registry: MlflowRegistry, data_dir: DataDir, bundles: list[Bundle]
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data_dir.mlflow_db.resolve()}")
    experiment = client.create_experiment(
        "reg-run-exp", artifact_location=(data_dir.mlruns / "artifacts" / "x").resolve().as_uri()
    )
    run_id = client.create_run(experiment).info.run_id
    v = registry.register("reg-run", bundles[0].path, run_id=run_id, gate=None)
    assert v.run_id == run_id
    listed = client.list_artifacts(run_id, f"bundles/{bundles[0].bundle_id}")
    assert {Path(a.path).name for a in listed} >= {"manifest.json", "model.onnx"}


def test_promote_needs_a_passing_gate(registry: MlflowRegistry, bundles: list[Bundle]) -> None:
    name = "reg-promote"
    good = registry.register(name, bundles[0].path, run_id=None, gate=_verdict(True))
    bad = registry.register(name, bundles[1].path, run_id=None, gate=_verdict(False))
    ungated = registry.register(name, bundles[2].path, run_id=None, gate=None)
    with pytest.raises(ContractError, match=r"failed the promotion gate: pr_auc 0\.1") as err:
        registry.promote(name, bad.version, actor="ana", reason="try")
    assert err.value.reason == "gate_failed"
    with pytest.raises(ContractError) as err:
        registry.promote(name, ungated.version, actor="ana", reason="try")
    assert err.value.reason == "gate_missing"
    with pytest.raises(NotFoundError):
        registry.promote(name, 99, actor="ana", reason="try")
    assert registry.resolve(name, "champion") is None

    event = registry.promote(name, good.version, actor="ana", reason="best")
    assert (event.action, event.from_version, event.to_version) == ("promote", None, 1)
    with pytest.raises(ValidationError, match="already champion"):
        registry.promote(name, good.version, actor="ana", reason="again")
    resolved = registry.resolve(name, "champion")
    assert resolved is not None and resolved.version == good.version


def test_rollback_walks_back_through_champions(
    registry: MlflowRegistry, bundles: list[Bundle], clock: FixedClock
) -> None:
    name = "reg-rollback"
    for b in bundles:
        registry.register(name, b.path, run_id=None, gate=_verdict(True))
    with pytest.raises(NotFoundError, match="no previous champion"):
        registry.rollback(name, actor="ana", reason="nothing yet")
    for version in (1, 2, 3):
        clock.advance(timedelta(minutes=1))
        registry.promote(name, version, actor="ana", reason=f"v{version}")
    event = registry.rollback(name, actor="bo", reason="v3 misbehaves")
    assert (event.action, event.from_version, event.to_version) == ("rollback", 3, 2)
    event = registry.rollback(name, actor="bo", reason="v2 too")
    assert (event.from_version, event.to_version) == (2, 1)
    with pytest.raises(NotFoundError):
        registry.rollback(name, actor="bo", reason="v1 too")
    resolved = registry.resolve(name, "champion")
    assert resolved is not None and resolved.version == 1
    # A challenger alias has its own history and does not disturb the champion's.
    registry.set_alias(name, "challenger", 3, actor="ci", reason="shadow", action="promote")
    registry.set_alias(name, "challenger", None, actor="ci", reason="done", action="demote")
    assert registry.resolve(name, "challenger") is None
    registry.promote(name, 3, actor="ana", reason="fixed")
    assert registry.rollback(name, actor="bo", reason="no").to_version == 1


def test_rollback_refuses_when_the_alias_moved_outside_dockline(
    registry: MlflowRegistry, data_dir: DataDir, bundles: list[Bundle]
) -> None:
    from mlflow import MlflowClient

    name = "reg-outside"
    for b in bundles[:2]:
        registry.register(name, b.path, run_id=None, gate=_verdict(True))
    registry.promote(name, 1, actor="ana", reason="r")
    registry.promote(name, 2, actor="ana", reason="r")
    MlflowClient(f"sqlite:///{data_dir.mlflow_db.resolve()}").set_registered_model_alias(
        name, "champion", "1"
    )
    with pytest.raises(ContractError) as err:
        registry.rollback(name, actor="bo", reason="r")
    assert err.value.reason == "history_mismatch"


def test_history_is_append_only_and_survives_a_new_instance(
    registry: MlflowRegistry, data_dir: DataDir, bundles: list[Bundle], clock: FixedClock
) -> None:
    name = "reg-history"
    registry.register(name, bundles[0].path, run_id=None, gate=_verdict(True))
    registry.register(name, bundles[1].path, run_id=None, gate=_verdict(True))
    before = data_dir.registry_history.read_bytes()
    clock.advance(timedelta(hours=1))
    registry.promote(name, 1, actor="ana", reason="first champion")
    registry.promote(name, 2, actor="bo", reason="better")
    registry.rollback(name, actor="ana", reason="regression")
    after = data_dir.registry_history.read_bytes()
    assert after.startswith(before)  # appended, never rewritten

    fresh = MlflowRegistry.for_data_dir(data_dir, FixedClock(T0))
    events = fresh.history(name)
    assert [(e.action, e.alias, e.from_version, e.to_version) for e in events] == [
        ("register", "", None, 1),
        ("register", "", None, 2),
        ("promote", "champion", None, 1),
        ("promote", "champion", 1, 2),
        ("rollback", "champion", 2, 1),
    ]
    assert [e.actor for e in events[2:]] == ["ana", "bo", "ana"]
    assert events[3].reason == "better"
    assert events[2].at == T0 + timedelta(hours=1)
    assert all(e.name == name for e in events)
    lines = [json.loads(x) for x in after.decode().splitlines()]
    assert all(set(x) >= {"name", "alias", "action", "actor", "reason", "at"} for x in lines)
    assert fresh.history("no-such-model") == []


def test_history_refuses_a_corrupt_line(tmp_path: Path, data_dir: DataDir) -> None:
    history = tmp_path / "mlruns" / "h.jsonl"
    history.parent.mkdir()
    history.write_text('{"not": "an event"}\n')
    registry = MlflowRegistry(
        f"sqlite:///{data_dir.mlflow_db.resolve()}", tmp_path / "artifacts", history
    )
    with pytest.raises(ContractError, match="line 1"):
        registry.history("m")


def test_set_alias_validates(registry: MlflowRegistry, bundles: list[Bundle]) -> None:
    name = "reg-validate"
    registry.register(name, bundles[0].path, run_id=None, gate=None)
    with pytest.raises(ValidationError, match="action must be one of"):
        registry.set_alias(name, "champion", 1, actor="a", reason="r", action="bump")
    with pytest.raises(NotFoundError):
        registry.set_alias(name, "champion", 7, actor="a", reason="r", action="promote")
    with pytest.raises(NotFoundError):
        registry.get(name, 7)
    assert registry.history(name)[-1].action == "register"


def test_log_candidate_run_records_params_metrics_report_and_dataset(
    data_dir: DataDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text('{"pr_auc": 0.4}')
    (report / "report.html").write_text("<html></html>")
    dataset = data_dir.datasets / "train.parquet"
    uri = f"sqlite:///{data_dir.mlflow_db.resolve()}"
    run_id = log_candidate_run(
        uri,
        "bikeshare",
        "lightgbm",
        {"num_leaves": 31, "learning_rate": 0.05, "features": ["a", "b"]},
        {"pr_auc": 0.4, "brier": 0.1},
        report,
        dataset,
        "f" * 64,
        {"project": "bikeshare"},
    )
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.run_name == run_name("lightgbm", "f" * 64) == "lightgbm-ffffffffffff"
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "num_leaves": "31",
        "learning_rate": "0.05",
        "features": '["a", "b"]',
    }
    assert run.data.metrics == {"pr_auc": 0.4, "brier": 0.1}
    assert run.data.tags["dataset_hash"] == "f" * 64
    assert run.data.tags["project"] == "bikeshare"
    assert run.inputs is not None
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.digest == "f" * 32
    assert logged.dataset.name == "train.parquet"
    assert json.loads(str(logged.dataset.profile)) == {"sha256": "f" * 64}
    assert dataset.resolve().as_uri() in logged.dataset.source
    artifacts = {Path(a.path).name for a in client.list_artifacts(run_id, "report")}
    assert artifacts == {"metrics.json", "report.html"}
    assert run.info.artifact_uri.startswith((data_dir.mlruns / "artifacts").resolve().as_uri())
    assert list(tmp_path.iterdir()) == [report]
    # A second candidate lands in the same experiment.
    second = log_candidate_run(uri, "bikeshare", "logistic", {}, {}, None, dataset, "e" * 64, {})
    assert client.get_run(second).info.experiment_id == run.info.experiment_id
    assert default_artifact_root(uri) == data_dir.mlruns.resolve() / "artifacts"
    assert default_artifact_root("http://127.0.0.1:5000") is None
