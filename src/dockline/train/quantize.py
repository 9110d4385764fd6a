"""The INT8 bundle variant: ONNX Runtime static quantization, and its parity gate (seed 002).

What applies to which candidate (``dockline.train.candidates``):

* ``logistic`` — skl2onnx writes the model as one ``LinearClassifier`` node, which no quantizer
  touches; exported again with it expressed as ``MatMul`` + ``Add`` + ``Sigmoid`` (same
  probabilities), the ``MatMul`` quantizes: weights int8, its input uint8 with a range
  calibrated (min/max) on the training split, in QDQ form (ONNX Runtime runs it as one
  ``QLinearMatMul``). Before quantizing, each input column is divided by a per-column factor
  folded into the weights (:func:`smooth_matmul_inputs`, SmoothQuant), so one column with huge
  standardized values (a near-constant binary feature) no longer sets the one activation range
  for all. Per-channel weight scales would not help: the weight's two output columns are
  ``-w`` and ``w``, one scale either way. Static, not dynamic: dynamic
  quantization takes the input's range from each call's batch, so a station's probability
  would depend on which other stations share its request (measured: |Δp| up to 0.03 between
  a row scored alone and in a batch).
* ``lightgbm``, ``extra_trees`` — ``TreeEnsembleClassifier`` has no quantized kernel in ONNX
  Runtime and its quantizer does not rewrite it (nor quantize thresholds): the variant is
  ``not_applicable`` and says so. Nothing is faked.

The gate compares the INT8 model with the bundle's FP32 model on the test rows, on what serving
answers (calibrated probabilities): per-row ``|Δp|`` at most ``max_tolerance`` and the mean at
most ``mean_tolerance`` (0.04 and 0.01 as seed 002 sets). A failed gate ships no INT8 file; the
measured numbers are recorded either way.

>>> manifest, files = add_int8(manifest, files, model, x_tr, x_te)  # doctest: +SKIP
>>> manifest.int8.status, manifest.int8.max_abs_diff  # doctest: +SKIP
('passed', 0.0312)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dockline.core.bundle import (
    INT8_FILE,
    BundleManifest,
    Calibration,
    Int8Report,
    OnnxSpec,
    apply_calibration,
)
from dockline.core.errors import ValidationError

__all__ = [
    "CALIBRATION_ROWS",
    "MAX_ABS_DIFF",
    "MEAN_ABS_DIFF",
    "QUANTIZED_OPS",
    "SMOOTHING_ALPHA",
    "Quantized",
    "add_int8",
    "int8_parity",
    "quantize_int8",
    "smooth_matmul_inputs",
    "smoothing_factors",
]

MAX_ABS_DIFF = 0.04
"""Seed 002: per-row |Δp| at most this."""
MEAN_ABS_DIFF = 0.01
"""Seed 002: mean |Δp| at most this."""
QUANTIZED_OPS = ("MatMul", "Gemm")
"""The compute operators of a tabular model ONNX Runtime's quantizer has INT8 kernels for."""
CALIBRATION_ROWS = 50_000
"""Training rows (evenly spaced, so deterministic) the activation ranges are calibrated on."""
SMOOTHING_ALPHA = 0.25
"""SmoothQuant's migration strength: how much of each input column's scale moves into the
weights. The paper's 0.5 narrows the shared activation range so far that test values beyond
the training range clip (measured on the demo data: worse than no smoothing); 0.25 keeps
headroom and still stops one column from setting the range (docs/tradeoffs.md)."""
_CHUNK = 4096
_DIGITS = 4
"""Significant digits kept of measured differences: the last bits of float sums must not
change a bundle id."""

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Quantized:
    """The quantizer's result: the INT8 ONNX bytes, or None with the reason."""

    onnx: bytes | None
    method: str
    ops: tuple[str, ...]
    reason: str = ""


def _op_types(onnx_bytes: bytes) -> list[str]:
    import onnx

    return sorted({node.op_type for node in onnx.load_from_string(onnx_bytes).graph.node})


def _calibration_rows(x_train: Matrix) -> Matrix:
    x = np.ascontiguousarray(x_train, dtype=np.float32)
    if x.shape[0] <= CALIBRATION_ROWS:
        return x
    picked = np.linspace(0, x.shape[0] - 1, CALIBRATION_ROWS).round().astype(np.int64)
    return np.ascontiguousarray(x[picked])


class _Reader:
    """ONNX Runtime's CalibrationDataReader over fixed chunks of the calibration rows."""

    def __init__(self, input_name: str, x: Matrix) -> None:
        self._input = input_name
        self._chunks: Iterator[Matrix] = iter(
            [x[i : i + _CHUNK] for i in range(0, x.shape[0], _CHUNK)]
        )

    def get_next(self) -> dict[str, Matrix] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {self._input: chunk}

    def __iter__(self) -> Iterator[dict[str, Matrix]]:  # the reader protocol's other half
        while (item := self.get_next()) is not None:
            yield item


class _NoPreprocessingAdvice(logging.Filter):
    """Drops the quantizer's advice to pre-process the graph (shape inference and fusions meant
    for CNNs), which it logs on the root logger at every call; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(
    estimator: Any, fp32_onnx: bytes, spec: OnnxSpec, n_features: int, x_train: Matrix
) -> Quantized:
    """Quantize what ONNX Runtime can of the model; ``onnx`` is None when nothing applies.

    ``fp32_onnx`` is the bundle's model; a ``LinearClassifier`` in it is exported again from
    ``estimator`` as ``MatMul`` first (see the module docstring).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from dockline.train.export import export_onnx

    ops = _op_types(fp32_onnx)
    source = fp32_onnx
    if "LinearClassifier" in ops:
        source, again = export_onnx(
            estimator, n_features, black_op=frozenset({"LinearClassifier", "Scaler"})
        )
        if (again.input_name, again.output_name) != (spec.input_name, spec.output_name):
            return Quantized(None, "none", (), "the MatMul form has other input/output names")
        ops = _op_types(source)
    targets = [op for op in QUANTIZED_OPS if op in ops]
    if not targets:
        return Quantized(
            None,
            "none",
            (),
            f"the graph holds no {' or '.join(QUANTIZED_OPS)} ({', '.join(ops)}): ONNX Runtime"
            " has no INT8 kernel for these operators and its quantizer leaves them in float",
        )
    rows = _calibration_rows(x_train)
    if "MatMul" in targets:
        source = smooth_matmul_inputs(source, spec.input_name, rows)
    # The MatMul's output stays quantized too: without it ONNX Runtime's CPU provider fuses no
    # integer kernel and runs a float Gemm on dequantized weights (checked on its optimized
    # graph), INT8 in name only.
    reader = _Reader(spec.input_name, rows)
    with tempfile.TemporaryDirectory(prefix="dockline-int8-") as tmp:
        source_path, target_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source_path.write_bytes(source)
        quiet = _NoPreprocessingAdvice()
        logging.getLogger().addFilter(quiet)
        try:
            quantize_static(
                source_path,
                target_path,
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=targets,
                per_channel=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        finally:
            logging.getLogger().removeFilter(quiet)
        quantized = target_path.read_bytes()
    return Quantized(_normalized(quantized), "static_qdq", tuple(targets))


def smoothing_factors(
    x_max: npt.NDArray[np.float64], w_max: npt.NDArray[np.float64], alpha: float = SMOOTHING_ALPHA
) -> npt.NDArray[np.float32]:
    """Per input column ``s = max|x| ** alpha / max|W| ** (1 - alpha)`` (SmoothQuant), rounded
    to a power of two; 1 where either maximum is 0 or not finite.

    A power of two makes ``x / s`` and ``W * s`` exact in float32 (only the exponent moves), so
    the FP32 product is unchanged, and the last bits of the calibration maxima cannot move the
    factors (nor the bundle id).
    """
    usable = (x_max > 0) & (w_max > 0) & np.isfinite(x_max) & np.isfinite(w_max)
    x, w = np.where(usable, x_max, 1.0), np.where(usable, w_max, 1.0)
    log_s = alpha * np.log2(x) - (1.0 - alpha) * np.log2(w)
    return np.exp2(np.round(log_s)).astype(np.float32)


def _input_maxima(
    model: Any, input_name: str, tensors: list[str], x: Matrix
) -> dict[str, npt.NDArray[np.float64]]:
    # max |value| per column of each named tensor over the calibration rows (FP32 graph)
    import onnx
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {out.name for out in probe.graph.output}
    for name in tensors:
        if name not in outputs:
            probe.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    session = _session(probe.SerializeToString())
    maxima: dict[str, npt.NDArray[np.float64]] = {}
    for start in range(0, x.shape[0], _CHUNK):
        values = session.run(tensors, {input_name: x[start : start + _CHUNK]})
        for name, value in zip(tensors, values, strict=True):
            v = np.abs(np.asarray(value, dtype=np.float64))
            col = np.where(np.isfinite(v), v, 0.0).max(axis=0)
            maxima[name] = np.maximum(maxima[name], col) if name in maxima else col
    return maxima


def smooth_matmul_inputs(onnx_bytes: bytes, input_name: str, x_calibration: Matrix) -> bytes:
    """Move each ``MatMul``'s per-column input scale into its constant weights (SmoothQuant).

    Static quantization gives a ``MatMul``'s input one range for all its columns, so one
    column with large values (a near-constant binary feature, standardized) makes the step
    coarse for every column. For each ``MatMul`` with a constant ``[k, m]`` weight ``W``, input
    column ``j`` is divided by ``s_j`` (a float32 ``Div`` before the ``MatMul``, which is then
    quantized) and row ``j`` of ``W`` multiplied by it: ``(x / s) @ (s * W) == x @ W``, exactly
    (:func:`smoothing_factors`, from ``max|x_j|`` over ``x_calibration``). The activation range
    is no longer set by one column; the weights, int8, absorb the difference.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    matmuls = [
        node
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[1] in weights
        and weights[node.input[1]].ndim == 2
        and weights[node.input[1]].dtype == np.float32
    ]
    if not matmuls:
        return onnx_bytes
    x_max = _input_maxima(model, input_name, sorted({n.input[0] for n in matmuls}), x_calibration)
    for index, node in enumerate(matmuls):
        w, cols = weights[node.input[1]], x_max[node.input[0]]
        if cols.shape != (w.shape[0],):
            continue
        s = smoothing_factors(cols, np.abs(w.astype(np.float64)).max(axis=1))
        scale, smoothed = f"smooth_scale_{index}", f"smooth_input_{index}"
        weight = f"{node.input[1]}_smoothed_{index}"
        graph.initializer.append(numpy_helper.from_array(s, scale))
        graph.initializer.append(numpy_helper.from_array((w * s[:, None]).astype(w.dtype), weight))
        div = helper.make_node("Div", [node.input[0], scale], [smoothed], name=f"smooth_{index}")
        position = list(graph.node).index(node)
        node.input[0], node.input[1] = smoothed, weight
        graph.node.insert(position, div)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return bytes(model.SerializeToString())


def _normalized(onnx_bytes: bytes) -> bytes:
    # Same normalization as the FP32 export: the bytes depend only on the computation.
    import onnx

    from dockline.train.export import _normalize

    model = onnx.load_from_string(onnx_bytes)
    model.producer_name, model.producer_version = "dockline", ""
    _normalize(model)
    return bytes(model.SerializeToString())


def _session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort

    # Serving's settings (BundleScorer): the gate measures what serving runs.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def _raw(onnx_bytes: bytes, spec: OnnxSpec, x: Matrix) -> npt.NDArray[np.float64]:
    (out,) = _session(onnx_bytes).run([spec.output_name], {spec.input_name: x})
    return np.asarray(out, dtype=np.float64)[:, spec.positive_index]


def _round(value: float) -> float:
    return float(f"{value:.{_DIGITS}g}")


def int8_parity(
    fp32_onnx: bytes,
    int8_onnx: bytes,
    spec: OnnxSpec,
    calibration: Calibration,
    x_test: Matrix,
    *,
    max_tolerance: float = MAX_ABS_DIFF,
    mean_tolerance: float = MEAN_ABS_DIFF,
    method: str = "static_qdq",
    ops: tuple[str, ...] = (),
) -> Int8Report:
    """The gate: INT8 against FP32 on ``x_test``, on calibrated and on raw probabilities.

    Passes when every row's calibrated ``|Δp|`` is at most ``max_tolerance`` and their mean at
    most ``mean_tolerance``; a NaN on either side fails. ``file`` is set only when it passes.
    """
    x = np.ascontiguousarray(x_test, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValidationError(
            f"the INT8 gate needs a non-empty [n, k] test matrix; got shape {x.shape}",
            reason="bad_shape",
        )
    raw32, raw8 = _raw(fp32_onnx, spec, x), _raw(int8_onnx, spec, x)
    p32, p8 = apply_calibration(calibration, raw32), apply_calibration(calibration, raw8)
    diff, raw_diff = np.abs(p8 - p32), np.abs(raw8 - raw32)
    finite = bool(np.all(np.isfinite(diff)) and np.all(np.isfinite(raw_diff)))
    worst = float(diff.max()) if finite else float("inf")
    mean = float(diff.mean()) if finite else float("inf")
    problems = []
    if not finite:
        problems.append("the INT8 model gave a non-finite probability")
    else:
        if worst > max_tolerance:
            row = int(np.argmax(diff))
            problems.append(
                f"max |Δp| {worst:.4g} > {max_tolerance:.4g} (test row {row}: FP32"
                f" {p32[row]:.4f}, INT8 {p8[row]:.4f})"
            )
        if mean > mean_tolerance:
            problems.append(f"mean |Δp| {mean:.4g} > {mean_tolerance:.4g}")
    passed = not problems
    summary = f"max |Δp| {worst:.4g}, mean {mean:.4g} over {x.shape[0]} test rows"
    return Int8Report(
        status="passed" if passed else "failed",
        method=method,
        reason=(f"within {max_tolerance:.4g}/{mean_tolerance:.4g}: " + summary)
        if passed
        else "; ".join(problems),
        file=INT8_FILE if passed else None,
        rows=int(x.shape[0]),
        max_abs_diff=_round(worst) if finite else None,
        mean_abs_diff=_round(mean) if finite else None,
        raw_max_abs_diff=_round(float(raw_diff.max())) if finite else None,
        raw_mean_abs_diff=_round(float(raw_diff.mean())) if finite else None,
        max_tolerance=max_tolerance,
        mean_tolerance=mean_tolerance,
        quantized_ops=list(ops),
    )


def add_int8(
    manifest: BundleManifest,
    files: dict[str, bytes],
    estimator: Any,
    x_train: Matrix,
    x_test: Matrix,
    tolerances: tuple[float, float] = (MAX_ABS_DIFF, MEAN_ABS_DIFF),
) -> tuple[BundleManifest, dict[str, bytes]]:
    """The manifest with its ``int8`` gate and the files with ``model.int8.onnx`` when it passed.

    Never refuses the bundle: the FP32 model serves whatever INT8 gives.
    """
    max_tol, mean_tol = tolerances
    fp32 = files[manifest.onnx.file]
    q = quantize_int8(estimator, fp32, manifest.onnx, len(manifest.features), x_train)
    if q.onnx is None:
        report = Int8Report(
            status="not_applicable",
            method=q.method,
            reason=q.reason,
            max_tolerance=max_tol,
            mean_tolerance=mean_tol,
        )
        return manifest.model_copy(update={"int8": report}), files
    report = int8_parity(
        fp32,
        q.onnx,
        manifest.onnx,
        manifest.calibration,
        x_test,
        max_tolerance=max_tol,
        mean_tolerance=mean_tol,
        method=q.method,
        ops=q.ops,
    )
    out = dict(files)
    if report.servable:
        out[INT8_FILE] = q.onnx
    return manifest.model_copy(update={"int8": report}), out
