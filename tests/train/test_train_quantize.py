"""The INT8 bundle variant (issue 16 §4): a trained logistic bundle's gate passes with the numbers
it records, a broken quantization fails it, a near-constant binary column no longer breaks it
(per-column smoothing), trees say not applicable, the file is hashed, and bundles built without
quantization keep their ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightgbm
import numpy as np
import onnx
import pytest
from train_synth import write_synthetic

from dockline.core.bundle import INT8_FILE, INT8_UNAVAILABLE, Bundle, BundleScorer, load_bundle
from dockline.core.config import TrainConfig
from dockline.core.errors import ContractError
from dockline.pipeline.train import export_bundle
from dockline.train.calibration import fit_calibration
from dockline.train.candidates import fit_candidate, get_candidate, positive_scores
from dockline.train.data import TrainingData, load_training_set
from dockline.train.export import export_onnx
from dockline.train.quantize import (
    add_int8,
    int8_parity,
    quantize_int8,
    smooth_matmul_inputs,
)
from dockline.train.trainer import TrainOutcome, train_candidates
from dockline.train.tuning import config_hash

pytestmark = pytest.mark.slow  # the module trains once (~6 s)

FAST = TrainConfig(candidates=("logistic",), n_trials=0, cv_folds=2)
INT8 = FAST.model_copy(update={"quantize": "int8"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingData, TrainOutcome]:
    root = tmp_path_factory.mktemp("int8")
    data = load_training_set(write_synthetic(root / "ds", stations=12, days=4), None)
    config = FAST.model_copy(update={"label": data.label})
    outcome = train_candidates(data, config, storage=f"sqlite:///{root / 'o.db'}", out_dir=root)
    return data, outcome


@pytest.fixture(scope="module")
def bundle(
    trained: tuple[TrainingData, TrainOutcome], tmp_path_factory: pytest.TempPathFactory
) -> Bundle:
    data, outcome = trained
    return export_bundle(tmp_path_factory.mktemp("bundles"), data, outcome, INT8)


def test_a_logistic_bundle_passes_the_int8_gate_with_the_numbers_it_records(
    bundle: Bundle, trained: tuple[TrainingData, TrainOutcome]
) -> None:
    _, outcome = trained
    report = bundle.manifest.int8
    assert report is not None and report.status == "passed", report
    assert report.file == INT8_FILE and report.quantized_ops == ["MatMul"]
    assert report.method == "static_qdq"
    # recompute what the gate measured, through the scorer serving uses
    fp32 = BundleScorer(bundle).score(outcome.test_X)
    int8 = BundleScorer(bundle, precision="int8").score(outcome.test_X)
    diff = np.abs(int8 - fp32)
    assert report.rows == outcome.test_X.shape[0]
    assert report.max_abs_diff == pytest.approx(float(diff.max()), rel=1e-3)
    assert report.mean_abs_diff == pytest.approx(float(diff.mean()), rel=1e-3)
    assert 0 < diff.max() <= 0.04 and diff.mean() <= 0.01  # seed 002's gate, and really INT8
    ops = {n.op_type for n in onnx.load(bundle.file(INT8_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul"} <= ops
    assert "LinearClassifier" not in ops


def test_a_broken_quantization_fails_the_gate_and_ships_no_int8_file(
    bundle: Bundle, trained: tuple[TrainingData, TrainOutcome]
) -> None:
    _, outcome = trained
    model = outcome.best.estimator
    fp32 = bundle.file(bundle.manifest.onnx.file).read_bytes()
    spec, calibration = bundle.manifest.onnx, bundle.manifest.calibration
    # a threshold of zero: any INT8 rounding fails
    manifest, files = add_int8(
        bundle.manifest.model_copy(update={"int8": None}),
        {spec.file: fp32},
        model,
        outcome.train_X,
        outcome.test_X,
        (1e-12, 1e-12),
    )
    assert manifest.int8 is not None and manifest.int8.status == "failed"
    assert manifest.int8.file is None and INT8_FILE not in files
    assert "max |Δp|" in manifest.int8.reason and "mean |Δp|" in manifest.int8.reason
    assert manifest.int8.max_abs_diff == bundle.manifest.int8.max_abs_diff  # type: ignore[union-attr]
    # activation ranges calibrated on constant rows: inputs saturate, probabilities move
    flat = np.zeros_like(outcome.train_X[:64])
    broken = quantize_int8(model, fp32, spec, len(bundle.manifest.features), flat)
    assert broken.onnx is not None
    report = int8_parity(fp32, broken.onnx, spec, calibration, outcome.test_X)
    assert report.status == "failed" and not report.servable
    assert report.max_abs_diff is not None and report.max_abs_diff > 0.04
    assert report.reason.startswith("max |Δp|")


def test_a_near_constant_binary_column_no_longer_breaks_the_int8_gate(
    trained: tuple[TrainingData, TrainOutcome],
) -> None:
    # The demo's failure: a binary feature that is 1 except on rare rows standardizes to a huge
    # value (here -17 sigma) and, with one activation range for the MatMul's whole input,
    # coarsens every column's step. Before the per-column smoothing this set failed the gate
    # (max |dp| 0.064, mean 0.0037); with it, it passes.
    data, _ = trained
    x = data.X.copy()
    rare = np.arange(x.shape[0]) % 300 == 0
    x[:, data.features.index("is_renting__last")] = np.where(rare, 0.0, 1.0)
    n = x.shape[0]
    train, calib, test = (
        slice(0, n * 6 // 10),
        slice(n * 6 // 10, n * 8 // 10),
        slice(n * 8 // 10, n),
    )
    model = fit_candidate(get_candidate("logistic").make(None, 0), x[train], data.y[train])
    fp32, spec = export_onnx(model, x.shape[1])
    calibration = fit_calibration(positive_scores(model, x[calib]), data.y[calib]).calibration
    quantized = quantize_int8(model, fp32, spec, x.shape[1], x[train])
    assert quantized.onnx is not None and quantized.ops == ("MatMul",)
    report = int8_parity(fp32, quantized.onnx, spec, calibration, x[test])
    assert report.status == "passed", report.reason
    assert report.max_abs_diff is not None and 0 < report.max_abs_diff <= 0.04
    assert report.mean_abs_diff is not None and report.mean_abs_diff <= 0.01
    graph = onnx.load_from_string(quantized.onnx).graph
    assert any(node.name == "smooth_0" and node.op_type == "Div" for node in graph.node)


def _run(onnx_bytes: bytes, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    model = onnx.load_from_string(onnx_bytes)
    known = {out.name for out in model.graph.output}
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in outputs
        if name not in known
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(outputs, {"input": x})]


def _dominance(x: np.ndarray) -> float:
    """How far the largest column's max |x| stands above the median column's."""
    spread = np.abs(x).max(axis=0)
    return float(spread.max() / np.median(spread[spread > 0]))


def test_the_smoothing_leaves_the_fp32_model_unchanged_and_evens_the_input_range(
    trained: tuple[TrainingData, TrainOutcome],
) -> None:
    data, outcome = trained
    x = outcome.train_X.copy()
    x[:, data.features.index("is_renting__last")] = np.where(
        np.arange(x.shape[0]) % 300 == 0, 0.0, 1.0
    )  # near-constant binary, as in the demo
    y = data.y[outcome.splits.train.rows]
    model = fit_candidate(get_candidate("logistic").make(None, 0), x, y)
    matmul, spec = export_onnx(
        model, x.shape[1], black_op=frozenset({"LinearClassifier", "Scaler"})
    )
    smoothed = smooth_matmul_inputs(matmul, spec.input_name, x)
    assert smooth_matmul_inputs(matmul, spec.input_name, x) == smoothed  # deterministic
    (before,) = _run(matmul, outcome.test_X, [spec.output_name])
    (after,) = _run(smoothed, outcome.test_X, [spec.output_name])
    assert np.max(np.abs(after - before)) <= 1e-6  # powers of two: x / s and W * s are exact
    (div,) = [n for n in onnx.load_from_string(smoothed).graph.node if n.name == "smooth_0"]
    plain, even = _run(smoothed, x, [div.input[0], div.output[0]])
    assert _dominance(plain) > 4  # the binary column sets the shared range...
    assert _dominance(even) < _dominance(plain) / 2  # ...and no longer does


def test_tree_ensembles_are_not_applicable_and_say_why(
    bundle: Bundle, trained: tuple[TrainingData, TrainOutcome], tmp_path: Path
) -> None:
    _, outcome = trained
    x, y = outcome.train_X, trained[0].y[outcome.splits.train.rows]
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=1).fit(x, y)
    onnx_bytes, spec = export_onnx(model, x.shape[1])
    manifest = bundle.manifest.model_copy(update={"onnx": spec, "int8": None})
    manifest, files = add_int8(manifest, {spec.file: onnx_bytes}, model, x, outcome.test_X)
    assert manifest.int8 is not None and manifest.int8.status == "not_applicable"
    assert "TreeEnsembleClassifier" in manifest.int8.reason and INT8_FILE not in files
    copy = tmp_path / "b"
    shutil.copytree(bundle.path, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["int8"] = manifest.int8.model_dump(mode="json")
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ContractError) as err:
        BundleScorer(load_bundle(copy), precision="int8")
    assert err.value.reason == INT8_UNAVAILABLE and "not_applicable" in err.value.message


def test_the_bundle_hash_covers_the_int8_file(bundle: Bundle, tmp_path: Path) -> None:
    import hashlib

    listed = bundle.manifest.lineage.files
    assert listed[INT8_FILE] == hashlib.sha256(bundle.file(INT8_FILE).read_bytes()).hexdigest()
    tampered = tmp_path / bundle.bundle_id
    shutil.copytree(bundle.path, tampered)
    data = bytearray((tampered / INT8_FILE).read_bytes())
    data[-1] ^= 1
    (tampered / INT8_FILE).write_bytes(bytes(data))
    with pytest.raises(ContractError, match=INT8_FILE) as err:
        load_bundle(tampered)
    assert err.value.reason == "bundle_tampered"
    (tampered / INT8_FILE).unlink()
    with pytest.raises(ContractError, match="missing"):
        load_bundle(tampered)
    # a manifest naming an INT8 model it does not hash is refused, not trusted
    unlisted = tmp_path / "unlisted"
    shutil.copytree(bundle.path, unlisted)
    raw = json.loads((unlisted / "manifest.json").read_text())
    del raw["lineage"]["files"][INT8_FILE]
    (unlisted / INT8_FILE).unlink()
    (unlisted / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ContractError, match="INT8 model must be a listed") as err:
        load_bundle(unlisted)
    assert err.value.reason == "bundle_tampered"


def test_without_quantize_bundles_and_config_hashes_are_as_before(
    bundle: Bundle, trained: tuple[TrainingData, TrainOutcome], tmp_path: Path
) -> None:
    data, outcome = trained
    # the values main computed before the INT8 settings existed: existing configs keep them
    assert config_hash(TrainConfig()) == (
        "30414d6488b5cae3bc0e5ff08fd8bc8900ac5115ebf236b147190707f1d91472"
    )
    assert config_hash(FAST) == "ac16fade86e08ec7fe09e137c150658f37f099a082d9f818c43fe9072044c9ec"
    assert config_hash(INT8) != config_hash(FAST)
    plain = export_bundle(tmp_path, data, outcome, FAST)
    assert "int8" not in json.loads((plain.path / "manifest.json").read_text())
    assert INT8_FILE not in plain.manifest.lineage.files and plain.bundle_id != bundle.bundle_id
    with pytest.raises(ContractError, match="without quantization") as err:
        BundleScorer(plain, precision="int8")
    assert err.value.reason == INT8_UNAVAILABLE
    again = export_bundle(tmp_path / "again", data, outcome, INT8)
    assert again.bundle_id == bundle.bundle_id  # INT8 bytes are deterministic too


def test_train_quantize_in_dockline_toml_reaches_the_bundle_and_the_summary(
    tmp_path: Path,
) -> None:
    from dockline.pipeline.platform import Platform
    from dockline.pipeline.train import train_model

    root = tmp_path / "data"
    root.mkdir()
    (root / "dockline.toml").write_text(
        '[train]\ncandidates = ["logistic"]\nn_trials = 0\ncv_folds = 2\nquantize = "int8"\n',
        encoding="utf-8",
    )
    dataset = write_synthetic(tmp_path / "ds", stations=12, days=4, project="bikeshare")
    summary = train_model(Platform.open(root), dataset=dataset, actor="test")
    assert summary.int8 is not None and summary.int8["status"] == "passed"
    bundle = load_bundle(Path(summary.bundle_path))
    assert bundle.manifest.int8 is not None
    assert summary.int8["max_abs_diff"] == bundle.manifest.int8.max_abs_diff
    assert INT8_FILE in bundle.manifest.lineage.files
