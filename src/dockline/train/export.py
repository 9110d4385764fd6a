"""ONNX export, parity against the native model, drift baselines and serving bundles.

A trained candidate (a scikit-learn-API estimator on float32 ``X [n, k]`` with NaN for nulls)
becomes a bundle in four steps: :func:`export_onnx` converts it (skl2onnx, with LightGBM through
onnxmltools' converter), :func:`parity` compares the ONNX model with the native one on the test
rows, :func:`drift_baseline` summarizes the training distributions, and :func:`build_bundle`
writes it all with :func:`dockline.core.bundle.write_bundle` — or refuses when parity fails.

Everything here is deterministic: the ONNX bytes carry no random graph name, doc string or
timestamp, and floats derived from the native model are rounded below their noise, so the same
fitted estimator (or one fitted the same way with the same seed) gives the same ``bundle_id``.

>>> onnx_bytes, spec = export_onnx(model, n_features=12)  # doctest: +SKIP
>>> parity(model, onnx_bytes, spec, x_test, tolerance=1e-5).passed  # doctest: +SKIP
True
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

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
from dockline.core.errors import ContractError, ValidationError
from dockline.train.explain_dump import explanation_files

__all__ = [
    "BASELINE_FILE",
    "INPUT_NAME",
    "ONNX_ML_OPSET",
    "ONNX_OPSET",
    "HourOfWeekRates",
    "build_bundle",
    "drift_baseline",
    "export_onnx",
    "parity",
]

ONNX_OPSET = 17
"""Target opset of the default ONNX domain: supported by every onnxruntime >= 1.14."""
ONNX_ML_OPSET = 3
"""Target opset of ``ai.onnx.ml`` (tree ensembles, imputer, scaler)."""
INPUT_NAME = "input"
GRAPH_NAME = "dockline"
BASELINE_FILE = "baseline.json"
HOURS_PER_WEEK = 168
QUANTILES = 21
BINS = 10
_SIGNIFICANT = 10
"""Digits kept of floats computed from native predictions: threaded native scoring may differ
in the last bits run to run, and those bits must not change the bundle id."""

Matrix = npt.NDArray[np.float32]


class HourOfWeekRates(BaseModel):
    """The hour-of-week historical rate, shipped so serving can answer when features are stale.

    ``hour_of_week[i]`` is the positive rate for hour ``i = weekday * 24 + hour`` (Monday 0, the
    same hour of week the ``hour_of_week`` baseline candidate uses); ``global_rate`` covers
    hours never seen.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    global_rate: float = Field(ge=0, le=1)
    hour_of_week: list[float]

    @field_validator("hour_of_week")
    @classmethod
    def _week(cls, value: list[float]) -> list[float]:
        if len(value) != HOURS_PER_WEEK:
            raise ValueError(f"hour_of_week must have {HOURS_PER_WEEK} rates; got {len(value)}")
        if not all(0.0 <= v <= 1.0 for v in value):
            raise ValueError("hour_of_week rates must be within [0, 1]")
        return value

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, fixed separators): same rates, same bytes."""
        data = {"global_rate": self.global_rate, "hour_of_week": self.hour_of_week}
        return (json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


# -- ONNX export --------------------------------------------------------------------------------


def export_onnx(
    estimator: Any, n_features: int, *, black_op: frozenset[str] = frozenset()
) -> tuple[bytes, OnnxSpec]:
    """Convert a fitted classifier on ``n_features`` float32 columns to ONNX bytes.

    Supported: scikit-learn pipelines and classifiers that skl2onnx converts (imputers with
    ``add_indicator=True`` included), and LightGBM's ``LGBMClassifier``, bare or as a pipeline's
    last step. The model's one input is float32 ``[n, n_features]``; its probability output is
    ``[n, 2]`` (no ZipMap). ``black_op`` names operators skl2onnx must express with others
    (``LinearClassifier`` as ``MatMul``, which the INT8 quantizer can quantize).
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.impute import SimpleImputer

    if n_features < 1:
        raise ValidationError(f"n_features must be >= 1; got {n_features}", reason="bad_value")
    _register_lightgbm()
    estimator = _float32_exact(estimator)
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    try:
        model = convert_sklearn(
            estimator,
            name=GRAPH_NAME,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={id(final): {"zipmap": False}},
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
            custom_shape_calculators={SimpleImputer: _imputer_shape},
            custom_conversion_functions={SimpleImputer: _convert_imputer},
            black_op=set(black_op) or None,
        )
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
        raise ValidationError(
            f"cannot convert {type(estimator).__name__} to ONNX: {exc}",
            reason="onnx_export_failed",
        ) from exc
    outputs = [o.name for o in model.graph.output]
    if len(outputs) != 2:
        raise ValidationError(
            f"expected label and probability outputs; got {outputs}", reason="onnx_export_failed"
        )
    _normalize(model)
    spec = OnnxSpec(input_name=INPUT_NAME, output_name=outputs[1], opset=ONNX_OPSET)
    return bytes(model.SerializeToString()), spec


_THRESHOLD_LINE = re.compile(r"^threshold=(.*)$", re.MULTILINE)


def _float32_thresholds(match: re.Match[str]) -> str:
    t = np.array([float(v) for v in match.group(1).split()], dtype=np.float64)
    t32 = t.astype(np.float32)
    # The largest float32 <= t: for every float32 x, x <= t  <=>  x <= down. ONNX trees
    # compare in float32, and rounding t to the *nearest* float32 flips the split for the
    # one x that lands between t and its rounding (seen on real data: |Δp| = 0.011).
    down = np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)
    return "threshold=" + " ".join(repr(float(v)) for v in down)


def _float32_exact(estimator: Any) -> Any:
    """A LightGBM model whose split thresholds are float32 values, same predictions on float32.

    LightGBM stores thresholds as doubles; the ONNX tree operators hold float32. Moving each
    threshold down to the largest float32 not above it changes no prediction for float32
    inputs (the only inputs a bundle takes) and makes the ONNX model compare exactly as the
    native one does. Other estimators are returned as they are.
    """
    try:
        import lightgbm
    except ImportError:  # pragma: no cover - lightgbm is in the train extra
        return estimator
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if not isinstance(final, lightgbm.LGBMClassifier):
        return estimator
    text = final.booster_.model_to_string()
    if "decision_type=" in text and re.search(r"^threshold=.*\|", text, re.MULTILINE):
        return estimator  # categorical splits hold category sets, not numbers
    clone = copy.copy(final)
    text = _THRESHOLD_LINE.sub(_float32_thresholds, text)
    # tree_sizes holds byte offsets of each tree, which the rewrite changes; without it
    # LightGBM parses the trees in sequence.
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.MULTILINE)
    clone._Booster = lightgbm.Booster(model_str=text)
    if final is estimator:
        return clone
    pipeline = copy.copy(estimator)
    pipeline.steps = [*estimator.steps[:-1], (estimator.steps[-1][0], clone)]
    return pipeline


def _normalize(model: Any) -> None:
    # Strip what is not the computation, so the bytes depend only on the fitted model.
    model.doc_string = ""
    model.graph.doc_string = ""
    model.graph.name = GRAPH_NAME
    # skl2onnx collects opsets in a set: their order follows the process's string hashing
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in opsets:
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version
    for node in model.graph.node:
        node.doc_string = ""
    del model.metadata_props[:]


_lightgbm_registered = False


def _register_lightgbm() -> None:
    """Teach skl2onnx to convert LGBMClassifier (bare or in a pipeline) via onnxmltools."""
    global _lightgbm_registered
    if _lightgbm_registered:
        return
    try:
        from lightgbm import LGBMClassifier
    except ImportError:  # pragma: no cover - lightgbm is in the train extra
        return
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    _lightgbm_registered = True


def _imputer_layout(op: Any) -> tuple[list[int], list[int]]:
    """Columns a fitted SimpleImputer keeps, and the columns its missing indicator reports."""
    stats = np.asarray(op.statistics_, dtype=np.float64)
    if getattr(op, "keep_empty_features", False):
        kept = list(range(stats.size))
    else:  # scikit-learn drops columns that were empty in training
        kept = [i for i in range(stats.size) if not np.isnan(stats[i])]
    indicator = getattr(op, "indicator_", None)
    flagged = [] if indicator is None else [int(i) for i in indicator.features_]
    return kept, flagged


def _imputer_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    kept, flagged = _imputer_layout(operator.raw_operator)
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([n, len(kept) + len(flagged)])


def _convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    """SimpleImputer on float NaNs, including ``add_indicator`` (which skl2onnx ignores)."""
    from onnx import TensorProto

    op = operator.raw_operator
    if op.missing_values is not np.nan and not (
        isinstance(op.missing_values, float) and np.isnan(op.missing_values)
    ):
        raise NotImplementedError("only SimpleImputer(missing_values=nan) is supported")
    kept, flagged = _imputer_layout(op)
    x = operator.inputs[0].full_name
    out = operator.outputs[0].full_name

    def name(base: str) -> str:
        return str(scope.get_unique_variable_name(base))

    def node(kind: str, inputs: list[str], output: str, **attrs: Any) -> None:
        container.add_node(
            kind, inputs, [output], name=scope.get_unique_operator_name(kind), **attrs
        )

    # scikit-learn fills with the float64 statistic cast to X's dtype; so do we.
    fill = np.nan_to_num(np.asarray(op.statistics_, dtype=np.float64)).astype(np.float32)
    fill_name = name("fill")
    container.add_initializer(fill_name, TensorProto.FLOAT, [fill.size], fill.tolist())
    is_nan, filled = name("is_nan"), name("filled")
    node("IsNaN", [x], is_nan)
    node("Where", [is_nan, fill_name, x], filled)
    parts = []
    kept_name, imputed = name("kept"), name("imputed")
    container.add_initializer(kept_name, TensorProto.INT64, [len(kept)], kept)
    node("Gather", [filled, kept_name], imputed, axis=1)
    parts.append(imputed)
    if flagged:
        flagged_name, missing, indicator = name("flagged"), name("missing"), name("indicator")
        container.add_initializer(flagged_name, TensorProto.INT64, [len(flagged)], flagged)
        node("Gather", [is_nan, flagged_name], missing, axis=1)
        node("Cast", [missing], indicator, to=TensorProto.FLOAT)
        parts.append(indicator)
    node("Concat", parts, out, axis=1)


# -- parity -------------------------------------------------------------------------------------


def _onnx_scores(onnx_bytes: bytes, spec: OnnxSpec, x: Matrix) -> npt.NDArray[np.float64]:
    import onnxruntime as ort

    # Same session settings as serving's BundleScorer, so parity measures what serving runs.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )
    (out,) = session.run([spec.output_name], {spec.input_name: x})
    return np.asarray(out, dtype=np.float64)[:, spec.positive_index]


def parity(
    estimator: Any,
    onnx_bytes: bytes,
    spec: OnnxSpec,
    x_test: Matrix,
    *,
    tolerance: float,
) -> ParityReport:
    """Max ``|ONNX − native predict_proba[:, 1]|`` over the rows of ``x_test``.

    Passes when at most ``tolerance`` (``TrainConfig.parity_tolerance``); a NaN on either side
    fails. ``max_abs_diff`` is kept to 3 significant digits so it cannot make two builds differ.
    """
    x = np.ascontiguousarray(x_test, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValidationError(
            f"parity needs a non-empty [n, k] test matrix; got shape {x.shape}", reason="bad_shape"
        )
    native = np.asarray(estimator.predict_proba(x), dtype=np.float64)[:, spec.positive_index]
    exported = _onnx_scores(onnx_bytes, spec, x)
    diff = np.abs(exported - native)
    worst = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
    rounded = float(f"{worst:.3g}")
    return ParityReport(
        rows=int(x.shape[0]),
        max_abs_diff=rounded,
        tolerance=tolerance,
        passed=bool(worst <= tolerance),
    )


# -- drift baseline -----------------------------------------------------------------------------


def _round(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


def _feature_baseline(
    name: str, column: npt.NDArray[np.float64], edges: npt.NDArray[np.float64] | None = None
) -> FeatureBaseline:
    # Non-finite values count as nulls: they carry no distribution and JSON cannot hold them.
    values = column[np.isfinite(column)]
    count = int(column.size)
    null_fraction = _round(1.0 - values.size / count) if count else 0.0
    if values.size == 0:
        return FeatureBaseline(name=name, count=count, null_fraction=null_fraction)
    quantiles = np.quantile(values, np.linspace(0.0, 1.0, QUANTILES))
    bin_counts, bin_edges = np.histogram(values, bins=BINS if edges is None else edges)
    return FeatureBaseline(
        name=name,
        count=count,
        null_fraction=null_fraction,
        mean=_round(float(np.mean(values))),
        std=_round(float(np.std(values))),
        quantiles=[_round(float(q)) for q in quantiles],
        bin_edges=[_round(float(e)) for e in bin_edges],
        bin_counts=[int(c) for c in bin_counts],
    )


def drift_baseline(
    x_train: Matrix,
    names: Sequence[str],
    train_scores: npt.ArrayLike | None = None,
) -> DriftBaseline:
    """Per-feature training distributions, and the scores' (as serving reports them).

    Per column: ``count`` (rows), the fraction of nulls (NaN or infinite), mean and standard
    deviation, 21 quantiles (0, 0.05, …, 1) and a 10-bin histogram between min and max, over
    non-null values. Scores get a histogram over fixed bins on [0, 1].
    """
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValidationError(
            f"x_train must have one column per name ({len(names)}); got shape {x.shape}",
            reason="bad_shape",
        )
    features = [_feature_baseline(n, x[:, i]) for i, n in enumerate(names)]
    prediction = None
    if train_scores is not None:
        scores = np.asarray(train_scores, dtype=np.float64).ravel()
        prediction = _feature_baseline("prediction", scores, edges=np.linspace(0.0, 1.0, BINS + 1))
    return DriftBaseline(features=features, prediction=prediction)


# -- bundle -------------------------------------------------------------------------------------


def build_bundle(
    root: Path,
    *,
    estimator: Any,
    features: Sequence[str],
    x_test: Matrix,
    x_train: Matrix,
    train_scores: npt.ArrayLike | None,
    project: str,
    model_name: str,
    label: str,
    candidate: str,
    params: Mapping[str, Any],
    calibration: Calibration,
    threshold: ThresholdChoice,
    lineage: Lineage,
    metrics: Mapping[str, float],
    train_start: datetime,
    test_end: datetime,
    tolerance: float,
    hour_of_week: HourOfWeekRates | None = None,
    int8: tuple[float, float] | None = None,
) -> Bundle:
    """Export, check parity, and write the bundle under ``root/<bundle_id>/``.

    Raises :class:`ContractError` (reason ``parity_failed``) instead of writing when the ONNX
    model and the native one differ by more than ``tolerance`` on ``x_test``. ``hour_of_week``,
    when given, is written as ``baseline.json`` so serving can fall back to it. ``int8``
    (max and mean ``|Δp|`` tolerances) adds the INT8 variant and its parity gate
    (:func:`dockline.train.quantize.add_int8`).
    """
    onnx_bytes, spec = export_onnx(estimator, len(features))
    report = parity(estimator, onnx_bytes, spec, x_test, tolerance=tolerance)
    if not report.passed:
        raise ContractError(
            f"ONNX parity failed for {candidate}: max |Δ| {report.max_abs_diff:.3g} >"
            f" {tolerance:.3g} over {report.rows} test rows; refusing to write the bundle",
            reason="parity_failed",
            where=model_name,
        )
    files = {spec.file: onnx_bytes}
    files.update(explanation_files(estimator, features))
    if hour_of_week is not None:
        files[BASELINE_FILE] = hour_of_week.to_bytes()
    manifest = BundleManifest(
        project=project,
        model_name=model_name,
        label=label,
        candidate=candidate,
        params=dict(params),
        features=list(features),
        onnx=spec,
        calibration=calibration,
        threshold=threshold,
        parity=report,
        lineage=lineage,
        # JSON has no NaN: an undefined metric (precision when nothing is flagged) is left out
        metrics={k: float(v) for k, v in metrics.items() if math.isfinite(float(v))},
        train_start=train_start,
        test_end=test_end,
    )
    if int8 is not None:
        manifest, files = _with_int8(manifest, files, estimator, x_train, x_test, int8)
    drift = drift_baseline(x_train, features, train_scores)
    return write_bundle(root, manifest, files, drift)


def _with_int8(
    manifest: BundleManifest,
    files: dict[str, bytes],
    estimator: Any,
    x_train: Matrix,
    x_test: Matrix,
    tolerances: tuple[float, float],
) -> tuple[BundleManifest, dict[str, bytes]]:
    # Kept apart from build_bundle: the INT8 variant is optional and lives in quantize.py.
    from dockline.train.quantize import add_int8

    return add_int8(manifest, files, estimator, x_train, x_test, tolerances)
