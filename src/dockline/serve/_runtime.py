"""The bundle runtime: champion and challenger models loaded from the registry, hot-swapped.

A :class:`LoadedModel` is a verified bundle, its ONNX scorer and the mapping from the online
store's column order to the model's input order, computed once at load. :class:`ModelRuntime`
holds the current pair in one immutable :class:`ModelSet`; a reload builds a new set off the
request path and swaps the reference, so a request that already took the old set finishes on
it and none ever sees half a swap.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import orjson

from dockline.core.bundle import INT8_UNAVAILABLE, Bundle, BundleScorer, load_bundle
from dockline.core.contracts import ModelVersion
from dockline.core.errors import ContractError, DocklineError
from dockline.core.explain import Explainer, Explanation, load_explainer
from dockline.core.ports import ModelRegistry, OnlineValue
from dockline.serve._errors import ServeError

__all__ = [
    "BASELINE_FILE",
    "EXPLAIN_UNAVAILABLE",
    "SCHEMA_MISMATCH",
    "Baseline",
    "LoadedModel",
    "ModelRuntime",
    "ModelSet",
    "ReloadResult",
    "load_model",
]

BASELINE_FILE = "baseline.json"
SCHEMA_MISMATCH = "feature_schema_mismatch"
"""The reason when the online group's layout or plan is not the one a bundle was trained on."""
HOURS_PER_WEEK = 168
EXPLAIN_UNAVAILABLE = "explain_unavailable"
"""The reason when ``explain=true`` reaches a model whose bundle has no explanation dump."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Baseline:
    """The fallback rate a bundle ships for the ``baseline`` stale policy (``baseline.json``)."""

    global_rate: float
    hour_of_week: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Baseline:
        """Validate ``{"global_rate": float, "hour_of_week": [168 floats]}``."""
        try:
            data = orjson.loads(raw)
            rate = float(data["global_rate"])
            how = data.get("hour_of_week")
            hours = None if how is None else tuple(float(v) for v in how)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ContractError(
                f"baseline.json must hold global_rate and hour_of_week; got {exc}",
                reason="bundle_invalid",
                where=where,
            ) from exc
        if hours is not None and len(hours) != HOURS_PER_WEEK:
            raise ContractError(
                f"hour_of_week must have {HOURS_PER_WEEK} values; got {len(hours)}",
                reason="bundle_invalid",
                where=where,
            )
        values = (rate, *(hours or ()))
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ContractError(
                "baseline rates must lie in [0, 1]", reason="bundle_invalid", where=where
            )
        return cls(rate, hours)

    def rate(self, hour_of_day: OnlineValue, day_of_week: OnlineValue) -> float:
        """The hour-of-week rate (Monday 00h = 0), or the global rate when the hour is unknown."""
        if self.hour_of_week is None or hour_of_day is None or day_of_week is None:
            return self.global_rate
        try:
            how = int(day_of_week) * 24 + int(hour_of_day)
        except (TypeError, ValueError):
            return self.global_rate
        if 0 <= how < HOURS_PER_WEEK:
            return self.hour_of_week[how]
        return self.global_rate


class LoadedModel:
    """A verified bundle ready to score vectors read from one online-store group.

    ``index[j]`` is the store column holding the model's feature ``j``; rows are filled into a
    preallocated float32 buffer per thread (``None`` becomes NaN), so the hot path allocates
    nothing but the ONNX output.
    """

    def __init__(
        self,
        version: ModelVersion,
        bundle: Bundle,
        columns: Sequence[str],
        *,
        role: str,
        precision: Literal["fp32", "int8"] = "fp32",
    ) -> None:
        manifest = bundle.manifest
        position = {name: i for i, name in enumerate(columns)}
        missing = [name for name in manifest.features if name not in position]
        if missing:
            raise ContractError(
                f"the online store has no column for model features {', '.join(missing[:5])}",
                reason=SCHEMA_MISMATCH,
                where=str(bundle.path),
            )
        self.role = role
        self.version = version
        self.bundle = bundle
        self.name = version.name
        self.version_number = version.version
        self.bundle_id = bundle.bundle_id
        self.features: tuple[str, ...] = tuple(manifest.features)
        self.threshold = manifest.threshold.threshold
        self.columns = tuple(columns)  # the layout ``index`` was computed for
        self.index: tuple[int, ...] = tuple(position[name] for name in manifest.features)
        self.how_index: tuple[int, int] | None = (
            (position["hour_of_day"], position["day_of_week"])
            if "hour_of_day" in position and "day_of_week" in position
            else None
        )
        self.dataset_name = manifest.lineage.dataset_name
        self.dataset_version = manifest.lineage.dataset_hash
        self.precision = precision
        self.scorer = BundleScorer(bundle, precision=precision)
        baseline_file = bundle.file(BASELINE_FILE)
        self.baseline = (
            Baseline.parse(baseline_file.read_bytes(), str(baseline_file))
            if BASELINE_FILE in manifest.lineage.files
            else None
        )
        # The safe model dump for ?explain=true (None: the bundle ships none). It describes the
        # FP32 model: an INT8 scorer's answers differ (within its parity gate), so its raw
        # score would not be the served one; INT8 serving does not explain.
        self.explainer: Explainer | None = load_explainer(bundle) if precision == "fp32" else None
        self._local = threading.local()
        self.score_matrix(np.zeros((1, len(self.features)), dtype=np.float32))  # warm up ONNX

    def _width_error(self, width: int) -> ServeError:
        # The store's cached layout can lag a re-registration by another process; a vector of
        # another width shows it (a reorder of as many columns cannot be seen here).
        return ServeError(
            f"a feature vector has {width} values; {self.name} v{self.version_number} was loaded"
            f" for {len(self.columns)} columns: the online group's layout changed",
            reason=SCHEMA_MISMATCH,
            where="features",
        )

    def fill(self, values: Sequence[OnlineValue]) -> npt.NDArray[np.float32]:
        """The model's ``[1, k]`` input row for one vector in store column order."""
        if len(values) != len(self.columns):
            raise self._width_error(len(values))
        row: npt.NDArray[np.float32] | None = getattr(self._local, "row", None)
        if row is None:
            row = np.empty((1, len(self.index)), dtype=np.float32)
            self._local.row = row
        try:
            row[0] = [values[i] for i in self.index]  # numpy turns None into NaN
        except (TypeError, ValueError):  # a non-numeric value cannot be a model input
            flat = row[0]
            for j, i in enumerate(self.index):
                value = values[i]
                try:
                    flat[j] = math.nan if value is None else value
                except (TypeError, ValueError):
                    flat[j] = math.nan
        return row

    def fill_matrix(
        self, rows: Sequence[Sequence[OnlineValue]], out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """The ``[n, k]`` input matrix for several vectors (vectorized over the batch)."""
        n = len(rows)
        matrix = out if out is not None else np.empty((n, len(self.index)), dtype=np.float32)
        if n == 0:
            return matrix
        width = len(self.columns)
        for r in rows:
            if len(r) != width:
                raise self._width_error(len(r))
        picked = [[r[i] for i in self.index] for r in rows]
        try:
            matrix[:] = np.array(picked, dtype=np.float64)  # None -> nan via float conversion
        except (TypeError, ValueError):
            for k, values in enumerate(rows):
                matrix[k] = self.fill(values)[0]
        return matrix

    def score_matrix(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Calibrated probabilities for ``matrix`` (one ONNX run)."""
        try:
            return self.scorer.score(matrix)
        except DocklineError:
            raise
        except Exception as exc:  # onnxruntime raises its own hierarchy
            raise ServeError(f"the model failed to score: {exc}", reason="inference_error") from exc

    def explain_matrix(self, matrix: npt.NDArray[np.float32]) -> Explanation:
        """Contributions, base value and raw score for ``matrix`` from the bundle's dump."""
        if self.explainer is None:
            why = (
                "is served at INT8 precision; explanations are exact for the FP32 model only"
                ' (serve.precision = "fp32")'
                if self.precision == "int8"
                else "has no explanation dump (bundle trained before explanations, or a model"
                " kind without one)"
            )
            raise ServeError(
                f"{self.name} v{self.version_number} ({self.role}) {why}",
                reason=EXPLAIN_UNAVAILABLE,
                where="explain",
            )
        return self.explainer.explain(matrix)

    def baseline_rate(self, values: Sequence[OnlineValue]) -> float | None:
        """The baseline probability for a vector, or None when the bundle ships no baseline."""
        if self.baseline is None:
            return None
        if self.how_index is None:
            return self.baseline.global_rate
        hour, day = self.how_index
        return self.baseline.rate(values[hour], values[day])


def load_model(
    version: ModelVersion,
    columns: Sequence[str],
    *,
    role: str,
    loader: Callable[[Path], Bundle],
    plan_hash: str | None = None,
    precision: Literal["fp32", "int8"] = "fp32",
) -> LoadedModel:
    """Load and verify the bundle of ``version``; the registry's bundle id must match its bytes,
    and the bundle must have been trained on the plan ``plan_hash`` (when given) that built the
    online group whose layout is ``columns``. ``precision="int8"`` needs the bundle's INT8
    variant to have passed its parity gate (else reason ``int8_unavailable``)."""
    bundle = loader(Path(version.bundle_path))
    if bundle.bundle_id != version.bundle_id:
        raise ContractError(
            f"bundle id {bundle.bundle_id} does not match the registered {version.bundle_id}",
            reason="bundle_tampered",
            where=version.bundle_path,
        )
    trained_on = bundle.manifest.lineage.plan_hash
    if plan_hash and trained_on and trained_on != plan_hash:  # both known, and they differ
        raise ContractError(
            f"the bundle was trained on feature plan {trained_on[:12]}; the online features"
            f" come from plan {plan_hash[:12]}",
            reason=SCHEMA_MISMATCH,
            where=version.bundle_path,
        )
    return LoadedModel(version, bundle, columns, role=role, precision=precision)


@dataclass(frozen=True, slots=True)
class ModelSet:
    """The models serving right now; replaced as a whole on reload."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: whether the set changed and which loads failed (role -> error)."""

    changed: bool
    models: ModelSet
    errors: dict[str, DocklineError] = field(default_factory=dict)


class ModelRuntime:
    """Resolves ``champion`` and ``challenger`` in the registry and keeps them loaded.

    ``reload`` is safe to call from the poller thread and an admin request at once (a lock
    serializes reloads); a bundle that fails verification is refused and the previous model
    keeps serving.
    """

    ALIASES = ("champion", "challenger")

    def __init__(
        self,
        registry: ModelRegistry,
        columns: Callable[[], Sequence[str]],
        model_name: str,
        *,
        on_load_error: Callable[[str, DocklineError], None] | None = None,
        on_swap: Callable[[ModelSet], None] | None = None,
        plan_hash: str | None = None,
        precision: Literal["fp32", "int8"] = "fp32",
    ) -> None:
        self.registry = registry
        self.precision = precision
        self.columns = columns  # the feature reader's column order, read at each load
        self.model_name = model_name
        self.plan_hash = plan_hash
        self.models = ModelSet()
        self.errors: dict[str, DocklineError] = {}
        """The failed loads of the last reload, by role."""
        self._on_load_error = on_load_error
        self._on_swap = on_swap
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reload(self) -> ReloadResult:
        """Resolve the aliases now; load what changed and swap it in."""
        with self._lock:
            current = self.models
            loaded: dict[str, LoadedModel | None] = {}
            errors: dict[str, DocklineError] = {}
            for role in self.ALIASES:
                previous: LoadedModel | None = getattr(current, role)
                try:
                    loaded[role] = self._resolve(role, previous)
                except DocklineError as exc:
                    errors[role] = exc
                    loaded[role] = previous
                    _log.warning("keeping the current %s: %s", role, exc)
                    if self._on_load_error is not None:
                        self._on_load_error(role, exc)
            fresh = ModelSet(champion=loaded["champion"], challenger=loaded["challenger"])
            changed = fresh.champion is not current.champion or (
                fresh.challenger is not current.challenger
            )
            if changed:
                self.models = fresh  # the swap: one reference assignment
                if self._on_swap is not None:
                    self._on_swap(fresh)
            self.errors = errors
            return ReloadResult(changed=changed, models=self.models, errors=errors)

    def unavailable(self) -> ServeError:
        """Why no champion answers: its layout mismatch or missing INT8 variant when that
        refused it, else no_model."""
        failure = self.errors.get("champion")
        if failure is not None and failure.reason in (SCHEMA_MISMATCH, INT8_UNAVAILABLE):
            return ServeError(failure.message, reason=failure.reason, where="champion")
        return ServeError("no champion model is loaded", reason="no_model", where="champion")

    def layout_error(self, models: ModelSet) -> ServeError | None:
        """A ``feature_schema_mismatch`` error when the feature reader's columns are no longer
        the ones a loaded model maps its inputs from (the group was re-registered since, e.g.
        by another plan: scoring would misalign them).

        Runs per request: the reader's cached tuple and, while nothing changed, an identity
        comparison.
        """
        try:
            columns = tuple(self.columns())
        except DocklineError:
            return None  # the reader's own failure is reported where vectors are read
        for model in (models.champion, models.challenger):
            if model is not None and columns is not model.columns and columns != model.columns:
                return ServeError(
                    "the online features were re-registered with other columns since"
                    f" {model.role} {model.name} v{model.version_number} loaded; rebuild"
                    " them with its plan or promote a model trained on the new one",
                    reason=SCHEMA_MISMATCH,
                    where="features",
                )
        return None

    def _resolve(self, role: str, previous: LoadedModel | None) -> LoadedModel | None:
        # The poller runs on the serving core every few seconds. Reading and hashing an
        # unchanged bundle there (~40 ms for a 36 MB forest) stalled requests, so an alias that
        # has not moved costs one metadata lookup; the loaded copy was verified when it loaded.
        ref = self._registry_call(self.registry.peek, role)
        if ref is None:
            return None
        if previous is not None and (
            previous.version_number == ref.version and previous.bundle_id == ref.bundle_id
        ):
            return previous
        version = self._registry_call(self.registry.resolve, role)
        if version is None:
            return None
        return load_model(
            version,
            self.columns(),
            role=role,
            loader=load_bundle,
            plan_hash=self.plan_hash,
            precision=self.precision,
        )

    def _registry_call(
        self, call: Callable[[str, str], ModelVersion | None], role: str
    ) -> ModelVersion | None:
        try:
            return call(self.model_name, role)
        except DocklineError:
            raise
        except Exception as exc:  # a registry backend's own error: the dependency failed
            raise ServeError(
                f"the registry failed: {exc}", reason="registry_unavailable", where=role
            ) from exc

    def start(self, interval_s: float) -> None:
        """Poll the registry every ``interval_s`` seconds on a daemon thread."""
        if self._thread is not None or interval_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(interval_s,), name="dockline-serve-reload", daemon=True
        )
        self._thread.start()

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.reload()
            except Exception:  # the poller must survive anything and try again next time
                _log.exception("model reload failed")

    def stop(self) -> None:
        """Stop the poller (waits for a reload in progress)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
