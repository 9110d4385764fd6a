"""The predict logic without HTTP: lookup, freshness gate, routing, scoring, logging.

:class:`Predictor` turns a decoded request into a response struct and prediction-log rows.
It runs on the event loop's thread: a single prediction is a SQLite (or Redis) lookup and one
ONNX run, tens of microseconds, cheaper than a hand-off to a thread pool; serving scales out
with processes.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import msgspec
import numpy as np

from dockline.core.errors import ConfigError, DocklineError, NotFoundError, StorageError
from dockline.core.ports import FeatureReader, OnlineValue, ServedVector
from dockline.core.time import Clock, from_micros, to_micros
from dockline.serve._errors import ServeError
from dockline.serve._predlog import PredictionLog
from dockline.serve._runtime import LoadedModel, ModelRuntime, ModelSet
from dockline.serve._schemas import (
    MAX_ENTITY_LENGTH,
    BatchItem,
    BatchResponse,
    ExplainedBatchItem,
    ExplainedPredictResponse,
    ModelRef,
    PredictRequest,
    PredictResponse,
    RoutingState,
    encode,
)
from dockline.serve._telemetry import Telemetry

__all__ = ["CANARY_BUCKETS", "Predictor", "Routing", "canary_bucket"]

CANARY_BUCKETS = 10_000
PREDICT = "/v1/predict"
BATCH = "/v1/predict/batch"


def canary_bucket(entity: str) -> int:
    """The entity's stable bucket in ``[0, 10000)``: ``crc32(utf-8 entity) % 10000``."""
    return zlib.crc32(entity.encode("utf-8")) % CANARY_BUCKETS


@dataclass(frozen=True, slots=True)
class Routing:
    """How requests split between champion and challenger (replaced as a whole)."""

    mode: str = "champion"
    canary_share: float = 0.0

    @property
    def cutoff(self) -> int:
        """Entities whose bucket is below this go to the challenger in canary mode."""
        return round(self.canary_share * CANARY_BUCKETS)

    def state(self) -> RoutingState:
        """The routing as a response body."""
        return RoutingState(mode=self.mode, canary_share=self.canary_share)


class _Ids:
    """Request ids: the process id and a counter, unique across the workers of one host."""

    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


def _ref(model: LoadedModel, role: str) -> ModelRef:
    return ModelRef(
        name=model.name, version=model.version_number, bundle_id=model.bundle_id, role=role
    )


def _floats(vector: ServedVector | None) -> list[float | None] | None:
    """The served vector as logged: float64 values (bools as 0/1); nulls, and the odd
    non-numeric column of a ready-made vector, as null."""
    if vector is None:
        return None
    return [float(v) if isinstance(v, int | float) else None for v in vector.values]


def _require_explainer(model: LoadedModel) -> None:
    if model.explainer is None:
        model.explain_matrix(np.zeros((0, len(model.features)), dtype=np.float32))  # raises


def _explanation_fields(model: LoadedModel, inputs: list[float] | None) -> dict[str, Any]:
    """The explanation of one served input row (None: the baseline answered, nothing to
    explain)."""
    if inputs is None:
        return {"contributions": None, "base_value": None, "raw_score": None}
    explained = model.explain_matrix(np.asarray([inputs], dtype=np.float32))
    values = explained.contributions[0].tolist()
    return {
        "contributions": dict(zip(model.features, values, strict=True)),
        "base_value": explained.base_value,
        "raw_score": float(explained.raw[0]),
    }


@dataclass(slots=True)
class _Scored:
    probability: float
    label: bool
    source: str


class Predictor:
    """Answers predict requests from the feature reader and the loaded models.

    Vectors are read as of the request's own time (``now_us``, also logged): the reader
    evaluates windows, ``time_since`` and the calendar at that instant, and the age that the
    freshness gate judges is the time since the feed last confirmed the entity.
    """

    def __init__(
        self,
        *,
        runtime: ModelRuntime,
        features: FeatureReader,
        clock: Clock,
        max_feature_age_s: float,
        stale_policy: str,
        max_batch: int,
        routing: Routing,
        telemetry: Telemetry,
        prediction_log: PredictionLog,
    ) -> None:
        self.runtime = runtime
        self.features = features
        self.clock = clock
        self.max_age_us = round(max_feature_age_s * 1_000_000)
        self.stale_policy = stale_policy
        self.max_batch = max_batch
        self.routing = routing
        self.telemetry = telemetry
        self.log = prediction_log
        self.ids = _Ids()
        self.last_entity: str | None = None

    # -- helpers ------------------------------------------------------------------------------

    def now_us(self) -> int:
        """The injected clock's time in microseconds."""
        return to_micros(self.clock.now())

    def _models(self) -> ModelSet:
        runtime = self.runtime
        models = runtime.models
        if models.champion is None:
            raise runtime.unavailable()
        mismatch = runtime.layout_error(models)
        if mismatch is not None:  # never score columns the model's index no longer fits
            raise mismatch
        return models

    def _route(
        self, entity: str, models: ModelSet, routing: Routing
    ) -> tuple[LoadedModel, str, LoadedModel | None]:
        """(model that answers, its role, shadow model or None)."""
        champion = models.champion
        assert champion is not None
        challenger = models.challenger
        if challenger is None or routing.mode == "champion":
            return champion, "champion", None
        if routing.mode == "shadow":
            return champion, "champion", challenger
        if canary_bucket(entity) < routing.cutoff:
            return challenger, "canary", None
        return champion, "champion", None

    def _read_many(self, entities: list[str], now_us: int) -> list[ServedVector | None]:
        try:
            return self.features.read_at(entities, now_us)
        except NotFoundError as exc:  # the features were never materialized
            raise ServeError(str(exc), reason="store_unavailable", where="store") from exc
        except StorageError as exc:
            raise ServeError(str(exc), reason="store_unavailable", where="store") from exc
        except ConfigError as exc:  # e.g. state built by another plan than the bundle's
            raise ServeError(exc.message, reason=exc.reason, where=exc.where) from exc

    def _read(self, entity: str, now_us: int) -> ServedVector | None:
        return self._read_many([entity], now_us)[0]

    def _overlay(
        self,
        entity: str,
        vector: ServedVector | None,
        features: dict[str, float | None] | None,
        model: LoadedModel,
    ) -> tuple[Sequence[OnlineValue], bool]:
        """Vector values in store column order, with caller features applied; (values, stored)."""
        if not features:
            if vector is None:
                raise NotFoundError(
                    "no feature vector for this entity", reason="unknown_entity", where="entity"
                )
            return vector.values, True
        columns = model.columns
        position = {name: i for i, name in enumerate(columns)}
        for name in features:
            if name not in position or name not in model.features:
                raise ServeError(
                    f"features.{name} is not a feature of the model; valid names:"
                    f" {', '.join(model.features)}",
                    reason="unknown_feature",
                    where=f"features.{name}",
                )
        if vector is None:
            missing = [f for f in model.features if f not in features]
            if missing:
                raise NotFoundError(
                    f"no feature vector for this entity, and features lacks {missing[0]}"
                    f" (+{len(missing) - 1} more)",
                    reason="unknown_entity",
                    where="entity",
                )
            values: list[OnlineValue] = [None] * len(columns)
        else:
            values = list(vector.values)
        for name, value in features.items():
            values[position[name]] = value
        return values, vector is not None

    def _score_one(
        self, model: LoadedModel, values: Sequence[OnlineValue], stale: bool
    ) -> tuple[_Scored, list[float] | None]:
        if stale and self.stale_policy == "baseline":
            rate = model.baseline_rate(values)
            if rate is None:
                raise ServeError(
                    "the feature vector is stale and the bundle has no baseline",
                    reason="stale_features",
                    where="entity",
                )
            return _Scored(rate, rate >= model.threshold, "baseline"), None
        row = model.fill(values)
        probability = float(model.score_matrix(row)[0])
        if not 0.0 <= probability <= 1.0:  # NaN too: a missing value the model cannot handle
            error = ServeError(
                f"the model returned {probability} for this vector",
                reason="invalid_prediction",
                where="features",
            )
            error.probabilities = (probability,)
            raise error
        return _Scored(probability, probability >= model.threshold, "model"), row[0].tolist()

    # -- single -------------------------------------------------------------------------------

    def predict(
        self,
        request: PredictRequest,
        request_id: str,
        now_us: int,
        t0: float,
        explain: bool = False,
    ) -> bytes:
        """Answer one request; raises :class:`ServeError`/:class:`DocklineError` on failure.

        ``explain`` adds the prediction's explanation (:class:`ExplainedPredictResponse`)."""
        entity = request.entity
        if not entity or len(entity) > MAX_ENTITY_LENGTH:
            raise ServeError(
                f"entity must be 1..{MAX_ENTITY_LENGTH} characters; got {len(entity)}",
                reason="invalid_value",
                where="entity",
            )
        models = self._models()
        model, role, shadow = self._route(entity, models, self.routing)
        if explain:
            _require_explainer(model)
        vector = self._read(entity, now_us)
        values, stored = self._overlay(entity, vector, request.features, model)
        as_of_us = vector.confirmed_us if vector is not None else None
        age_us = now_us - as_of_us if as_of_us is not None else None
        stale = age_us is not None and age_us > self.max_age_us
        if age_us is not None and stale and self.stale_policy == "reject":
            raise ServeError(
                f"the feature vector is {age_us / 1e6:.0f} s old; the maximum is"
                f" {self.max_age_us / 1e6:.0f} s",
                reason="stale_features",
                where="entity",
            )
        scored, features = self._score_one(model, values, stale)
        explanation = _explanation_fields(model, features) if explain else None
        status = "degraded" if stale else "ok"
        reason = "stale_features" if stale else None
        age_s = age_us / 1e6 if age_us is not None else None
        latency_ms = (perf_counter() - t0) * 1000.0
        response = PredictResponse(
            request_id=request_id,
            entity=entity,
            probability=scored.probability,
            label=scored.label,
            threshold=model.threshold,
            status=status,
            reason=reason,
            source=scored.source,
            model=_ref(model, role),
            as_of=from_micros(as_of_us).isoformat() if as_of_us is not None else None,
            age_s=age_s,
            latency_ms=round(latency_ms, 4),
        )
        if explanation is not None:
            response = ExplainedPredictResponse(**msgspec.structs.asdict(response), **explanation)
        if stored:
            self.last_entity = entity
        telemetry = self.telemetry
        telemetry.observe_prediction(
            "baseline" if scored.source == "baseline" else role, scored.probability
        )
        if age_s is not None:
            telemetry.feature_age.observe(age_s)
        log = self.log
        if log.root is not None:
            log.append(
                (
                    request_id,
                    now_us,
                    PREDICT,
                    entity,
                    role,
                    True,
                    model.name,
                    model.version_number,
                    model.bundle_id,
                    scored.probability,
                    scored.label,
                    status,
                    reason,
                    scored.source,
                    as_of_us,
                    age_s,
                    latency_ms,
                    features,
                    vector.known_us if vector is not None else None,
                    _floats(vector),
                )
            )
        if shadow is not None:
            self._shadow_one(shadow, values, request_id, now_us, entity, vector, age_s)
        telemetry.record(
            PREDICT,
            now_us,
            perf_counter() - t0,
            outcome=status,
            ok=True,
            probabilities=(scored.probability,),
            fallbacks=scored.source == "baseline",
        )
        return encode(response)

    def _shadow_one(
        self,
        model: LoadedModel,
        values: Sequence[OnlineValue],
        request_id: str,
        now_us: int,
        entity: str,
        vector: ServedVector | None,
        age_s: float | None,
    ) -> None:
        t0 = perf_counter()
        try:
            row = model.fill(values)
            probability = float(model.score_matrix(row)[0])
        except DocklineError:  # the challenger must never fail the champion's answer
            self.telemetry.requests.labels(PREDICT, "shadow_error").inc()
            return
        self.telemetry.observe_prediction("shadow", probability)
        self.log.append(
            (
                request_id,
                now_us,
                PREDICT,
                entity,
                "shadow",
                False,
                model.name,
                model.version_number,
                model.bundle_id,
                probability,
                probability >= model.threshold,
                "ok",
                None,
                "model",
                vector.confirmed_us if vector is not None else None,
                age_s,
                (perf_counter() - t0) * 1000.0,
                row[0].tolist(),
                vector.known_us if vector is not None else None,
                _floats(vector),
            )
        )

    # -- batch --------------------------------------------------------------------------------

    def predict_batch(
        self,
        entities: list[str],
        request_id: str,
        now_us: int,
        t0: float,
        explain: bool = False,
    ) -> BatchResponse:
        """Answer a batch: one ``read_many``, one ONNX run per model that answers.

        ``explain`` adds each model-scored entity's explanation (one vectorized call per model).
        """
        if len(entities) > self.max_batch:
            raise ServeError(
                f"a batch holds at most {self.max_batch} entities; got {len(entities)}",
                reason="batch_too_large",
                where="entities",
            )
        if not entities:
            raise ServeError("entities must not be empty", reason="invalid_value", where="entities")
        for i, entity in enumerate(entities):
            if not entity or len(entity) > MAX_ENTITY_LENGTH:
                raise ServeError(
                    f"entities[{i}] must be 1..{MAX_ENTITY_LENGTH} characters",
                    reason="invalid_value",
                    where=f"entities[{i}]",
                )
        models = self._models()
        routing = self.routing
        vectors = self._read_many(entities, now_us)
        item_type = ExplainedBatchItem if explain else BatchItem
        items: list[BatchItem] = [item_type(entity=e, status="ok") for e in entities]
        # rows to score, per answering model: (item index, values)
        plan: dict[str, tuple[LoadedModel, str, list[int]]] = {}
        shadow_rows: list[int] = []
        shadow_model: LoadedModel | None = None
        max_age = self.max_age_us
        fallbacks = 0
        baseline_models: dict[int, LoadedModel] = {}
        invalid: list[float] = []
        for i, (entity, vector) in enumerate(zip(entities, vectors, strict=True)):
            item = items[i]
            if vector is None:
                item.status, item.reason = "error", "unknown_entity"
                continue
            age_us = now_us - vector.confirmed_us
            item.as_of = from_micros(vector.confirmed_us).isoformat()
            item.age_s = age_us / 1e6
            model, role, shadow = self._route(entity, models, routing)
            if age_us > max_age:
                item.status, item.reason = "degraded", "stale_features"
                if self.stale_policy == "reject":
                    item.status = "error"
                    continue
                if self.stale_policy == "baseline":
                    rate = model.baseline_rate(vector.values)
                    if rate is None:
                        item.status = "error"
                        continue
                    item.probability, item.label = rate, rate >= model.threshold
                    item.source, item.model = "baseline", _ref(model, role)
                    baseline_models[i] = model
                    fallbacks += 1
                    continue
            plan.setdefault(role, (model, role, []))[2].append(i)
            if shadow is not None:
                shadow_model = shadow
                shadow_rows.append(i)
        logged: list[tuple[int, LoadedModel, str, bool, float, list[float] | None]] = []
        logged.extend(
            (i, baseline_models[i], items[i].model.role, True, items[i].probability, None)  # type: ignore[union-attr,misc]
            for i in baseline_models
        )
        if explain:  # refuse before scoring anything
            for model, _, _ in plan.values():
                _require_explainer(model)
        for model, role, rows in plan.values():
            matrix = model.fill_matrix([vectors[i].values for i in rows])  # type: ignore[union-attr]
            probabilities = model.score_matrix(matrix)
            if explain:
                self._explain_rows(model, matrix, rows, probabilities, items)
            labels = probabilities >= model.threshold
            ref = _ref(model, role)
            for k, i in enumerate(rows):
                item = items[i]
                if not 0.0 <= probabilities[k] <= 1.0:
                    item.status, item.reason = "error", "invalid_prediction"
                    invalid.append(float(probabilities[k]))
                    continue
                item.probability = float(probabilities[k])
                item.label = bool(labels[k])
                item.source, item.model = "model", ref
            if self.log.root is not None:
                inputs = matrix.tolist()
                logged.extend(
                    (i, model, role, True, float(probabilities[k]), inputs[k])
                    for k, i in enumerate(rows)
                    if items[i].probability is not None
                )
        if shadow_model is not None and shadow_rows:
            try:
                matrix = shadow_model.fill_matrix(
                    [vectors[i].values for i in shadow_rows]  # type: ignore[union-attr]
                )
                probabilities = shadow_model.score_matrix(matrix)
                inputs = matrix.tolist()
                logged.extend(
                    (i, shadow_model, "shadow", False, float(probabilities[k]), inputs[k])
                    for k, i in enumerate(shadow_rows)
                )
            except DocklineError:
                self.telemetry.requests.labels(BATCH, "shadow_error").inc()
        latency_ms = (perf_counter() - t0) * 1000.0
        served = [it.probability for it in items if it.probability is not None]
        for it in items:
            if it.probability is not None:
                role = it.model.role if it.model is not None else "champion"
                self.telemetry.observe_prediction(
                    "baseline" if it.source == "baseline" else role, it.probability
                )
            if it.age_s is not None:
                self.telemetry.feature_age.observe(it.age_s)
        for i, model, role, is_served, probability, inputs_row in logged:
            item = items[i]
            vector = vectors[i]
            self.log.append(
                (
                    request_id,
                    now_us,
                    BATCH,
                    item.entity,
                    role,
                    is_served,
                    model.name,
                    model.version_number,
                    model.bundle_id,
                    probability,
                    probability >= model.threshold,
                    item.status if is_served else "ok",
                    item.reason if is_served else None,
                    item.source or "model" if is_served else "model",
                    vector.confirmed_us if vector is not None else None,
                    item.age_s,
                    latency_ms,
                    inputs_row,
                    vector.known_us if vector is not None else None,
                    _floats(vector),
                )
            )
        degraded = any(it.status != "ok" for it in items)
        self.telemetry.record(
            BATCH,
            now_us,
            perf_counter() - t0,
            outcome="degraded" if degraded else "ok",
            ok=True,
            probabilities=served + invalid,
            fallbacks=fallbacks,
        )
        return BatchResponse(
            request_id=request_id, predictions=items, latency_ms=round(latency_ms, 4)
        )

    @staticmethod
    def _explain_rows(
        model: LoadedModel,
        matrix: Any,
        rows: list[int],
        probabilities: Any,
        items: list[BatchItem],
    ) -> None:
        explained = model.explain_matrix(matrix)
        contributions = explained.contributions.tolist()
        raw = explained.raw.tolist()
        names = model.features
        for k, i in enumerate(rows):
            item = items[i]
            if isinstance(item, ExplainedBatchItem) and 0.0 <= probabilities[k] <= 1.0:
                item.contributions = dict(zip(names, contributions[k], strict=True))
                item.base_value = explained.base_value
                item.raw_score = raw[k]

    # -- readiness ----------------------------------------------------------------------------

    def freshness(self) -> tuple[bool | None, float | None]:
        """(fresh, age_s) of the last entity served from the store; (None, None) before any."""
        entity = self.last_entity
        if entity is None:
            return None, None
        now_us = self.now_us()
        vector = self._read(entity, now_us)
        if vector is None:
            return None, None
        age_us = now_us - vector.confirmed_us
        return age_us <= self.max_age_us, age_us / 1e6
