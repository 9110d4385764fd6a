"""The bundle format: content-addressed, verified at load, calibration applied one way."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from dockline.core.bundle import (
    BundleManifest,
    BundleScorer,
    Calibration,
    DriftBaseline,
    FeatureBaseline,
    Lineage,
    OnnxSpec,
    ParityReport,
    ThresholdChoice,
    apply_calibration,
    load_bundle,
    write_bundle,
)
from dockline.core.errors import ContractError, NotFoundError

FEATURES = ["a", "b", "c"]


def _model() -> tuple[LogisticRegression, np.ndarray, bytes]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=400)) > 0
    model = LogisticRegression().fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    return model, x, onx.SerializeToString()


def _manifest(parity_passed: bool = True) -> BundleManifest:
    return BundleManifest(
        project="test",
        model_name="m",
        label="y",
        candidate="logistic",
        params={"C": 1.0},
        features=FEATURES,
        onnx=OnnxSpec(input_name="X", output_name="probabilities", opset=17),
        calibration=Calibration(method="isotonic", x=[0.0, 0.5, 1.0], y=[0.0, 0.2, 1.0]),
        threshold=ThresholdChoice(
            policy="target_precision",
            threshold=0.3,
            target_precision=0.5,
            precision=0.6,
            recall=0.4,
        ),
        parity=ParityReport(rows=400, max_abs_diff=1e-7, tolerance=1e-5, passed=parity_passed),
        lineage=Lineage(
            dataset_name="d",
            dataset_hash="0" * 64,
            plan_hash="1" * 64,
            config_hash="2" * 64,
            code_version="0.1.0",
            seed=0,
        ),
        train_start=datetime(2024, 1, 1, tzinfo=UTC),
        test_end=datetime(2024, 2, 1, tzinfo=UTC),
    )


def _drift() -> DriftBaseline:
    return DriftBaseline(
        features=[FeatureBaseline(name=n, count=1, null_fraction=0) for n in FEATURES]
    )


def test_same_content_gives_same_id_and_scores_like_the_native_model(tmp_path: Path) -> None:
    model, x, onnx_bytes = _model()
    first = write_bundle(tmp_path / "a", _manifest(), {"model.onnx": onnx_bytes}, _drift())
    second = write_bundle(tmp_path / "b", _manifest(), {"model.onnx": onnx_bytes}, _drift())
    assert first.bundle_id == second.bundle_id
    assert first.path.name == first.bundle_id
    assert set(first.manifest.lineage.files) == {"model.onnx", "drift_baseline.json"}

    scorer = BundleScorer(first)
    raw = scorer.raw(x)
    np.testing.assert_allclose(raw, model.predict_proba(x)[:, 1], atol=1e-5)
    calibrated = scorer.score(x)
    np.testing.assert_allclose(calibrated, np.interp(raw, [0, 0.5, 1], [0, 0.2, 1]))
    assert scorer.decide(np.array([0.29, 0.3])).tolist() == [False, True]


def test_tampered_or_extra_files_are_refused(tmp_path: Path) -> None:
    _, _, onnx_bytes = _model()
    bundle = write_bundle(tmp_path, _manifest(), {"model.onnx": onnx_bytes}, _drift())
    model_file = bundle.file("model.onnx")
    model_file.write_bytes(onnx_bytes[:-1] + bytes([onnx_bytes[-1] ^ 1]))
    with pytest.raises(ContractError, match="SHA-256"):
        load_bundle(bundle.path)
    model_file.write_bytes(onnx_bytes)
    load_bundle(bundle.path)
    (bundle.path / "evil.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(ContractError, match=r"evil\.pkl"):
        load_bundle(bundle.path)
    with pytest.raises(NotFoundError):
        load_bundle(tmp_path / "nope")


def test_a_bundle_that_failed_parity_is_never_written(tmp_path: Path) -> None:
    _, _, onnx_bytes = _model()
    with pytest.raises(ContractError, match="parity"):
        write_bundle(tmp_path, _manifest(False), {"model.onnx": onnx_bytes}, _drift())
    assert not any(tmp_path.iterdir())


def test_isotonic_calibration_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    s = rng.uniform(size=2000)
    y = rng.uniform(size=2000) < s**2
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, y)
    cal = Calibration(method="isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
    probe = np.concatenate([rng.uniform(-0.2, 1.2, size=500), [0.0, 1.0]])
    np.testing.assert_allclose(apply_calibration(cal, probe), iso.predict(probe), atol=1e-12)


def test_platt_calibration_is_a_logistic_of_the_logit() -> None:
    cal = Calibration(method="platt", a=2.0, b=-1.0)
    p = np.array([0.1, 0.5, 0.9])
    logit = np.log(p / (1 - p))
    np.testing.assert_allclose(apply_calibration(cal, p), 1 / (1 + np.exp(-(2 * logit - 1))))
    with pytest.raises(ContractError):
        apply_calibration(Calibration(method="platt"), p)


def _relisted(bundle_path: Path, target: Path, extra: dict[str, bytes]) -> Path:
    """A copy of the bundle at ``target`` whose manifest also lists ``extra`` (name -> bytes)."""
    shutil.copytree(bundle_path, target, symlinks=True)
    manifest = json.loads((target / "manifest.json").read_text())
    for name, data in extra.items():
        manifest["lineage"]["files"][name] = hashlib.sha256(data).hexdigest()
    (target / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    return target


def test_a_manifest_names_only_plain_files_inside_the_bundle(tmp_path: Path) -> None:
    _, _, onnx_bytes = _model()
    bundle = write_bundle(tmp_path / "b", _manifest(), {"model.onnx": onnx_bytes}, _drift())
    outside = tmp_path / "x"
    outside.write_bytes(b"secret")

    escaping = _relisted(bundle.path, tmp_path / "escaping", {"../x": b"secret"})
    with pytest.raises(ContractError, match=r"plain names.*'\.\./x'") as caught:
        load_bundle(escaping)
    assert caught.value.reason == "bundle_tampered"

    absolute = _relisted(bundle.path, tmp_path / "absolute", {str(outside): b"secret"})
    with pytest.raises(ContractError, match="plain names"):
        load_bundle(absolute)

    linked = _relisted(bundle.path, tmp_path / "linked", {"notes.txt": b"secret"})
    (linked / "notes.txt").symlink_to(outside)
    with pytest.raises(ContractError, match=r"notes\.txt must be a plain file"):
        load_bundle(linked)

    # The model itself replaced by a symlink to identical bytes: still refused.
    model_link = tmp_path / "model_link"
    shutil.copytree(bundle.path, model_link)
    (tmp_path / "elsewhere.onnx").write_bytes(onnx_bytes)
    (model_link / "model.onnx").unlink()
    (model_link / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(ContractError, match=r"model\.onnx must be a plain file"):
        load_bundle(model_link)

    with pytest.raises(ContractError, match="plain names"):
        write_bundle(tmp_path / "w", _manifest(), {"model.onnx": onnx_bytes, "../y": b""}, _drift())
    assert not (tmp_path / "y").exists()
    load_bundle(bundle.path)  # the untouched bundle still loads
