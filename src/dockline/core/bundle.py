"""Serving bundles: the one artifact training writes and serving loads.

A bundle is a directory ``bundles/<bundle_id>/``::

    manifest.json          BundleManifest: feature schema, calibration, threshold, parity, lineage
    model.onnx             the model as ONNX (never a pickle: loading it cannot run code)
    drift_baseline.json    DriftBaseline: per-feature quantiles and histograms of the training data
    model.int8.onnx        optional: the INT8 variant, present when its parity gate passed
    explain.json           optional: the model as JSON for explanations (dockline.core.explain)

The manifest records the SHA-256 of every other file, and ``bundle_id`` is the SHA-256 of the
manifest's bytes, so the id addresses the whole content: two bundles with the same id hold the
same bytes, and :func:`load_bundle` refuses a bundle whose files do not match. Nothing in a bundle
depends on wall-clock time, so the same dataset, config and seed give the same ``bundle_id``.

Calibration is applied here (:func:`apply_calibration`), by training when it evaluates and by
serving when it scores, so the two cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from dockline.core.contracts import Contract, UtcDatetime
from dockline.core.errors import ContractError, NotFoundError

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "DRIFT_BASELINE_FILE",
    "INT8_FILE",
    "INT8_UNAVAILABLE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "Bundle",
    "BundleManifest",
    "BundleScorer",
    "Calibration",
    "DriftBaseline",
    "FeatureBaseline",
    "Int8Report",
    "Lineage",
    "OnnxSpec",
    "ParityReport",
    "ThresholdChoice",
    "apply_calibration",
    "load_bundle",
    "write_bundle",
]

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
DRIFT_BASELINE_FILE = "drift_baseline.json"
BUNDLE_ID_LENGTH = 16
INT8_FILE = "model.int8.onnx"
INT8_UNAVAILABLE = "int8_unavailable"
"""The reason when INT8 scoring is asked of a bundle without a passing INT8 variant."""


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Calibration(_Part):
    """Maps the model's raw score to a calibrated probability.

    ``isotonic``: piecewise-linear through (``x``, ``y``), clipped at the ends — exactly what
    scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` predicts from its thresholds.
    ``platt``: ``1 / (1 + exp(-(a · logit(s) + b)))``. ``none``: the raw score.
    """

    method: Literal["isotonic", "platt", "none"]
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)
    a: float | None = None
    b: float | None = None
    brier: float | None = None
    """Brier score of the calibrated probabilities on the calibration split."""


class ThresholdChoice(_Part):
    """The decision threshold, and the policy and operating point it came from."""

    policy: Literal["target_precision", "expected_cost"]
    threshold: float
    target_precision: float | None = None
    cost_false_alarm: float | None = None
    cost_miss: float | None = None
    precision: float
    recall: float
    achieved: bool = True
    """False when no threshold met the target; the threshold is then the best precision found."""


class OnnxSpec(_Part):
    """How to call the ONNX model: one float32 input ``[n, k]``, a ``[n, 2]`` probability output."""

    file: str = MODEL_FILE
    input_name: str
    output_name: str
    positive_index: int = 1
    opset: int


class ParityReport(_Part):
    """ONNX against the native model on the test split; a bundle exists only if ``passed``."""

    rows: int = Field(ge=1)
    max_abs_diff: float
    tolerance: float
    passed: bool


class Int8Report(_Part):
    """The INT8 variant's parity gate against the bundle's FP32 model (issue 16, seed 002).

    ``status`` ``passed``: ``file`` holds the quantized model, and per-row and mean
    ``|Δp|`` of the served (calibrated) probability on the test rows are within the
    tolerances. ``failed``: measured, too far, no file shipped. ``not_applicable``: ONNX
    Runtime's quantizer has nothing to quantize in this model (tree ensembles); ``reason`` says
    why. ``raw_*`` are the same differences before calibration, for diagnosis.
    """

    status: Literal["passed", "failed", "not_applicable"]
    method: str
    """How it was quantized (``static_qdq``: MatMul weights int8, activations uint8 with
    ranges calibrated on the training split), or ``none``."""
    reason: str = ""
    file: str | None = None
    rows: int = Field(default=0, ge=0)
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    raw_max_abs_diff: float | None = None
    raw_mean_abs_diff: float | None = None
    max_tolerance: float
    mean_tolerance: float
    quantized_ops: list[str] = Field(default_factory=list)
    """The operators of the FP32 graph the quantizer turned into INT8 ones."""

    @property
    def servable(self) -> bool:
        """Whether serving may score with the INT8 file."""
        return self.status == "passed" and self.file is not None


class Lineage(_Part):
    """Where the model came from; ``files`` holds the SHA-256 of every other bundle file."""

    dataset_name: str
    dataset_hash: str
    plan_hash: str
    config_hash: str
    code_version: str
    seed: int
    files: dict[str, str] = Field(default_factory=dict)


class BundleManifest(Contract):
    """What serving needs to score a feature vector exactly as training evaluated it."""

    project: str
    model_name: str
    label: str
    candidate: str
    params: dict[str, Any] = Field(default_factory=dict)
    features: list[str]
    """Model input columns, in order (names from the feature plan)."""
    onnx: OnnxSpec
    calibration: Calibration
    threshold: ThresholdChoice
    parity: ParityReport
    lineage: Lineage
    metrics: dict[str, float] = Field(default_factory=dict)
    """Test-split metrics of the calibrated model (undefined ones, e.g. precision when nothing
    is flagged, are absent)."""
    train_start: UtcDatetime
    test_end: UtcDatetime
    drift_baseline: str = DRIFT_BASELINE_FILE
    # -- INT8 variant (issue 16 §4) --
    int8: Int8Report | None = None
    """The INT8 variant's parity gate; absent (not even null in the JSON) when training was
    not asked to quantize, so bundles built without it keep their ids."""
    # -- end INT8 variant --


class FeatureBaseline(_Part):
    """One feature's training distribution, for drift checks."""

    name: str
    count: int
    null_fraction: float
    mean: float | None = None
    std: float | None = None
    quantiles: list[float] = Field(default_factory=list)
    """Values at probabilities 0, 0.05, …, 1 (21 points) over non-null values."""
    bin_edges: list[float] = Field(default_factory=list)
    bin_counts: list[int] = Field(default_factory=list)


class DriftBaseline(Contract):
    """Per-feature and prediction distributions of the training data."""

    features: list[FeatureBaseline]
    prediction: FeatureBaseline | None = None


def apply_calibration(calibration: Calibration, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Calibrated probabilities for raw model ``scores`` (any shape), in [0, 1]."""
    s = np.asarray(scores, dtype=np.float64)
    if calibration.method == "none":
        return np.clip(s, 0.0, 1.0)
    if calibration.method == "isotonic":
        if not calibration.x:
            raise ContractError("isotonic calibration has no points", where="calibration")
        iso: npt.NDArray[np.float64] = np.interp(
            s, np.asarray(calibration.x), np.asarray(calibration.y)
        )
        return iso
    if calibration.a is None or calibration.b is None:
        raise ContractError("platt calibration needs a and b", where="calibration")
    eps = 1e-12
    clipped = np.clip(s, eps, 1.0 - eps)
    logit = np.log(clipped) - np.log1p(-clipped)
    with np.errstate(over="ignore"):  # exp overflows to inf for scores near 0 or 1: p → 0
        out: npt.NDArray[np.float64] = 1.0 / (
            1.0 + np.exp(-(calibration.a * logit + calibration.b))
        )
    return out


def _canonical_json(model: BaseModel) -> bytes:
    # Sorted keys and fixed separators: the manifest's bytes (and so the bundle id) depend only
    # on its content, not on dict insertion order.
    data = model.model_dump(mode="json")
    if isinstance(model, BundleManifest) and model.int8 is None:
        del data["int8"]  # a field added later must not change the ids of bundles without it
    return (json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_name(name: str, where: str) -> None:
    """A bundle file name is one plain path component: no directories, no ``..``, not absolute."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or Path(name).is_absolute()
    ):
        raise ContractError(
            f"bundle file names must be plain names inside the bundle; got {name!r}",
            reason="bundle_tampered",
            where=where,
        )


def write_bundle(
    root: Path,
    manifest: BundleManifest,
    files: Mapping[str, bytes],
    drift: DriftBaseline,
) -> Bundle:
    """Write a bundle under ``root/<bundle_id>/`` and return it (loaded and verified).

    ``files`` holds every file but the manifest and drift baseline (at least ``model.onnx``);
    their digests are filled into ``manifest.lineage.files``. Writing the same content twice is a
    no-op that returns the existing bundle.
    """
    contents = dict(files)
    for name in (*contents, manifest.onnx.file, manifest.drift_baseline):
        _check_name(name, str(root))
    if manifest.onnx.file not in contents:
        raise ContractError(f"bundle has no {manifest.onnx.file}", where=str(root))
    if not manifest.parity.passed:
        raise ContractError(
            f"ONNX parity failed: max |Δ| {manifest.parity.max_abs_diff:.3g}"
            f" > {manifest.parity.tolerance:.3g}; refusing to write the bundle",
            reason="parity_failed",
            where=manifest.model_name,
        )
    contents[manifest.drift_baseline] = _canonical_json(drift)
    digests = {name: _sha256(data) for name, data in sorted(contents.items())}
    lineage = manifest.lineage.model_copy(update={"files": digests})
    final = manifest.model_copy(update={"lineage": lineage})
    manifest_bytes = _canonical_json(final)
    bundle_id = _sha256(manifest_bytes)[:BUNDLE_ID_LENGTH]
    target = root / bundle_id
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{bundle_id}-", dir=root))
        try:
            for name, data in contents.items():
                (staging / name).write_bytes(data)
            (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
            os.replace(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.exists():
                raise
    return load_bundle(target)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle verified on disk: every file's SHA-256 matched its manifest."""

    path: Path
    bundle_id: str
    manifest: BundleManifest

    def file(self, name: str) -> Path:
        """Path of one of the bundle's files."""
        return self.path / name

    def drift_baseline(self) -> DriftBaseline:
        """The training distributions stored with the bundle."""
        return DriftBaseline.read(self.file(self.manifest.drift_baseline))


def load_bundle(path: Path) -> Bundle:
    """Load and verify a bundle directory; raise :class:`ContractError` on any mismatch.

    Verified: the manifest's contract, its digest against the directory name when that looks
    like a bundle id, that every name it lists is a plain file inside the bundle (no ``../x``,
    no absolute name, no symlink), every listed file's SHA-256, that no unlisted file is
    present, and that the model is ONNX. Nothing is deserialized beyond JSON.
    """
    if not path.is_dir():
        raise NotFoundError("no bundle here", reason="unknown_bundle", where=str(path))
    manifest_path = path / MANIFEST_FILE
    if manifest_path.is_symlink():
        raise ContractError(
            f"{MANIFEST_FILE} must be a plain file, not a symlink",
            reason="bundle_tampered",
            where=str(path),
        )
    manifest = BundleManifest.read(manifest_path)
    raw = manifest_path.read_bytes()
    bundle_id = _sha256(raw)[:BUNDLE_ID_LENGTH]
    if len(path.name) == BUNDLE_ID_LENGTH and path.name != bundle_id:
        raise ContractError(
            f"manifest digest {bundle_id} does not match the bundle id",
            reason="bundle_tampered",
            where=str(path),
        )
    listed = manifest.lineage.files
    for name in (*listed, manifest.onnx.file, manifest.drift_baseline):
        _check_name(name, str(path))
    if not manifest.onnx.file.endswith(".onnx") or manifest.onnx.file not in listed:
        raise ContractError("the model must be a listed .onnx file", where=str(path))
    int8 = manifest.int8.file if manifest.int8 is not None else None
    if int8 is not None and (not int8.endswith(".onnx") or int8 not in listed):
        raise ContractError(
            "the INT8 model must be a listed .onnx file", reason="bundle_tampered", where=str(path)
        )
    present = {p.name for p in path.iterdir()} - {MANIFEST_FILE}
    extra = present - listed.keys()
    if extra:
        raise ContractError(
            f"files not in the manifest: {', '.join(sorted(extra))}",
            reason="bundle_tampered",
            where=str(path),
        )
    for name, digest in listed.items():
        file = path / name
        if file.is_symlink():  # it could point anywhere, and its target could change after this
            raise ContractError(
                f"{name} must be a plain file, not a symlink",
                reason="bundle_tampered",
                where=str(path),
            )
        if not file.is_file():
            raise ContractError(f"{name} is missing", reason="bundle_tampered", where=str(path))
        if _sha256(file.read_bytes()) != digest:
            raise ContractError(
                f"{name}: SHA-256 does not match the manifest",
                reason="bundle_tampered",
                where=str(path),
            )
    return Bundle(path=path, bundle_id=bundle_id, manifest=manifest)


def _model_file(bundle: Bundle, precision: str) -> str:
    """The ONNX file scoring at ``precision`` uses; INT8 only from a passing variant."""
    if precision == "fp32":
        return bundle.manifest.onnx.file
    report = bundle.manifest.int8
    if precision != "int8":
        raise ContractError(f"precision must be fp32 or int8; got {precision!r}", where="precision")
    if report is None:
        why = 'it was trained without quantization (train.quantize = "off")'
    elif not report.servable:
        why = f"its INT8 parity gate is {report.status}: {report.reason}"
    else:
        return str(report.file)
    raise ContractError(
        f"precision int8 needs a bundle with a passing INT8 variant; {why}",
        reason=INT8_UNAVAILABLE,
        where=str(bundle.path),
    )


class BundleScorer:
    """Scores float32 feature matrices with a bundle's ONNX model, then its calibration.

    One thread per session: serving scales by processes, and a single-row request must not pay
    for thread hand-offs. ``precision="int8"`` scores with the bundle's INT8 variant, and is
    refused (:class:`ContractError`, reason ``int8_unavailable``) unless its parity gate passed.
    """

    def __init__(
        self, bundle: Bundle, *, threads: int = 1, precision: Literal["fp32", "int8"] = "fp32"
    ) -> None:
        import onnxruntime as ort  # heavy; only scoring processes load it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.precision = precision
        model = bundle.file(_model_file(bundle, precision)).read_bytes()
        self.bundle = bundle
        self.n_features = len(bundle.manifest.features)
        self._spec = bundle.manifest.onnx
        self._session: onnxruntime.InferenceSession = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def raw(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The model's uncalibrated positive-class score per row of ``matrix`` (``[n, k]``)."""
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ContractError(
                f"expected a matrix of {self.n_features} features, got shape {matrix.shape}",
                reason="bad_shape",
            )
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        (out,) = self._session.run([self._spec.output_name], {self._spec.input_name: x})
        return np.asarray(out, dtype=np.float64)[:, self._spec.positive_index]

    def score(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Calibrated probability per row."""
        return apply_calibration(self.bundle.manifest.calibration, self.raw(matrix))

    def decide(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """The label at the bundle's threshold (``p >= threshold``)."""
        return probabilities >= self.bundle.manifest.threshold.threshold
