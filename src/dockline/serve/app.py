"""The FastAPI app: ``/v1/predict``, ``/v1/predict/batch``, health, metrics and admin.

:func:`create_app` takes the ports it needs (an :class:`~dockline.core.ports.OnlineStore` and a
:class:`~dockline.core.ports.ModelRegistry`) and a :class:`~dockline.core.config.ServeConfig`;
the wiring layer (``dockline.pipeline.serve``) opens the concrete ones. Bodies are decoded and
encoded with msgspec on the hot path; OpenAPI at ``/docs`` documents the same schemas.

>>> app = create_app(store=store, registry=registry, model_name="m")  # doctest: +SKIP
>>> uvicorn.run(app)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from time import perf_counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dockline.core.config import DataDir, ServeConfig
from dockline.core.errors import DocklineError, NotFoundError
from dockline.core.ports import FeatureReader, ModelRegistry, OnlineStore
from dockline.core.time import Clock, SystemClock
from dockline.serve._errors import ServeError, status_for
from dockline.serve._predlog import PredictionLog
from dockline.serve._runtime import LoadedModel, ModelRuntime, ModelSet
from dockline.serve._schemas import (
    BatchRequest,
    ErrorBody,
    PredictRequest,
    RoutingRequest,
    decode,
    encode,
    openapi_components,
)
from dockline.serve._service import BATCH, PREDICT, Predictor, Routing
from dockline.serve._stored import StoredVectors
from dockline.serve._telemetry import ModelStamp, ServiceIdentity, Telemetry

__all__ = ["ADMIN_TOKEN_ENV", "SERVICE_NAME", "create_app"]

ADMIN_TOKEN_ENV = "DOCKLINE_ADMIN_TOKEN"
SERVICE_NAME = "dockline-serve"
JSON = "application/json"

_log = logging.getLogger(__name__)


def _service_version() -> str:
    try:
        return version("dockline")
    except PackageNotFoundError:
        return "0.0.0"


def _error(exc: DocklineError, request_id: str | None) -> Response:
    body = ErrorBody(reason=exc.reason, message=exc.message, field=exc.where, request_id=request_id)
    return Response(encode(body), status_code=status_for(exc.reason), media_type=JSON)


def _as_serve_error(exc: DocklineError) -> DocklineError:
    """Core errors keep their reason; a NotFoundError without one is an unknown entity."""
    if isinstance(exc, NotFoundError) and exc.reason == "not_found":
        return ServeError(exc.message, reason="unknown_entity", where=exc.where)
    return exc


def _ref(model: LoadedModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {
        "name": model.name,
        "version": model.version_number,
        "bundle_id": model.bundle_id,
        "role": model.role,
    }


def _body(schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"content": {JSON: {"schema": ref}}}


def create_app(
    *,
    store: OnlineStore | None = None,
    registry: ModelRegistry,
    model_name: str,
    config: ServeConfig | None = None,
    data_dir: DataDir | None = None,
    clock: Clock | None = None,
    group: str = "features",
    admin_token: str | None = None,
    deployment_id: str | None = None,
    on_close: Sequence[Callable[[], None]] = (),
    features: FeatureReader | None = None,
) -> FastAPI:
    """The serving app for ``model_name``'s ``champion`` (and ``challenger``) in ``registry``.

    ``features`` gives each request's vectors as of its time (dockline's wiring passes the
    read-time reader of ``dockline.features.served``); without it, the ready-made vectors of
    ``group`` in ``store`` are served as written. ``data_dir`` (None: no files) receives the
    metrics windows and the prediction log; ``clock`` dates vectors' ages and windows. The admin
    token is ``admin_token``, else ``$DOCKLINE_ADMIN_TOKEN``, else ``config.admin_token``; with
    none, admin endpoints always answer 401. ``on_close`` callbacks run at shutdown (e.g. closing
    the store the caller opened).
    """
    cfg = config or ServeConfig()
    clk = clock or SystemClock()
    if features is None:
        if store is None:
            raise TypeError("create_app needs features= (a FeatureReader) or store=")
        features = StoredVectors(store, group)
    reader = features
    token = admin_token or os.environ.get(ADMIN_TOKEN_ENV) or cfg.admin_token
    runtime_box: list[ModelRuntime] = []

    def stamp() -> ModelStamp:
        champion = runtime_box[0].models.champion if runtime_box else None
        if champion is None:
            return ModelStamp(model_name, "", "", "", "")
        return ModelStamp(
            champion.name,
            str(champion.version_number),
            champion.bundle_id,
            champion.dataset_name,
            champion.dataset_version,
        )

    telemetry = Telemetry(
        clock=clk,
        window_s=cfg.metrics_window.total_seconds(),
        identity=ServiceIdentity(
            service_name=SERVICE_NAME,
            service_version=_service_version(),
            environment=cfg.environment,
            deployment_id=deployment_id or cfg.deployment_id,
        ),
        model_stamp=stamp,
        metrics_dir=data_dir.serving_metrics if data_dir is not None else None,
    )

    def swapped(models: ModelSet) -> None:
        telemetry.model_info.clear()
        for model in (models.champion, models.challenger):
            if model is not None:
                telemetry.model_info.labels(
                    model.role, model.name, str(model.version_number), model.bundle_id
                ).set(1)
                telemetry.reloads.labels(model.role, "loaded").inc()

    runtime = ModelRuntime(
        registry,
        reader.columns,
        model_name,
        on_load_error=lambda role, exc: telemetry.model_load_error(role, exc.reason),
        on_swap=swapped,
    )
    runtime_box.append(runtime)
    prediction_log = PredictionLog(
        data_dir.serving_predictions if data_dir is not None else None,
        flush_rows=cfg.prediction_flush_rows,
        flush_interval_s=cfg.prediction_flush_interval.total_seconds(),
        max_queue=max(10 * cfg.prediction_flush_rows, 10_000),
        on_written=telemetry.log_rows.inc,
        on_dropped=telemetry.log_dropped.inc,
    )
    predictor = Predictor(
        runtime=runtime,
        features=reader,
        clock=clk,
        max_feature_age_s=cfg.max_feature_age.total_seconds(),
        stale_policy=cfg.stale_policy,
        max_batch=cfg.max_batch,
        routing=Routing(cfg.routing, cfg.canary_share),
        telemetry=telemetry,
        prediction_log=prediction_log,
    )
    # A batch body holds at most max_batch ids of MAX_ENTITY_LENGTH; beyond this it is refused
    # before decoding.
    max_body = 64 * 1024 + cfg.max_batch * 300

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runtime.reload)
        # Everything loaded so far (MLflow, pandas, ONNX, the bundle: ~300k objects) lives as
        # long as the process. A full collection scanned it all in ~180 ms with the event loop
        # stalled: that was the p99 under load. Frozen objects are never scanned again.
        gc.collect()
        gc.freeze()
        runtime.start(cfg.reload_poll.total_seconds())
        telemetry.start(min(1.0, cfg.metrics_window.total_seconds() / 4))
        prediction_log.start()
        try:
            yield
        finally:
            gc.unfreeze()  # let the interpreter's shutdown free them (DuckDB checks for leaks)
            runtime.stop()
            prediction_log.close()
            telemetry.stop()
            for close in on_close:
                close()

    app = FastAPI(
        title="dockline serve",
        version=_service_version(),
        description="Predictions from fresh online features, with a freshness gate.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.predictor = predictor
    app.state.telemetry = telemetry
    app.state.prediction_log = prediction_log

    async def _read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise ServeError(
                f"the body must be at most {max_body} bytes; got {length}",
                reason="body_too_large",
                where="body",
            )
        body = await request.body()
        if len(body) > max_body:
            raise ServeError(
                f"the body must be at most {max_body} bytes", reason="body_too_large", where="body"
            )
        return body

    def _failed(endpoint: str, exc: Exception, rid: str, now_us: int, t0: float) -> Response:
        if isinstance(exc, DocklineError):
            err = _as_serve_error(exc)
        else:
            _log.exception("unexpected error in %s", endpoint)
            err = ServeError("internal error", reason="internal_error")
        telemetry.record(
            endpoint,
            now_us,
            perf_counter() - t0,
            outcome=err.reason,
            ok=False,
            probabilities=getattr(err, "probabilities", ()),
        )
        return _error(err, rid)

    @app.post(
        PREDICT,
        summary="Predict for one entity from its latest online feature vector",
        openapi_extra={"requestBody": {"required": True, **_body("PredictRequest")}},
        responses={
            200: _body("PredictResponse"),
            404: _body("ErrorBody"),
            422: _body("ErrorBody"),
            503: _body("ErrorBody"),
        },
        response_class=Response,
    )
    async def predict(request: Request) -> Response:
        t0 = perf_counter()
        rid = predictor.ids.next()
        now_us = predictor.now_us()
        try:
            body = decode(await _read_body(request), PredictRequest)
            return Response(predictor.predict(body, rid, now_us, t0), media_type=JSON)
        except Exception as exc:
            return _failed(PREDICT, exc, rid, now_us, t0)

    @app.post(
        BATCH,
        summary="Predict for up to max_batch entities in one vectorized call",
        openapi_extra={"requestBody": {"required": True, **_body("BatchRequest")}},
        responses={
            200: _body("BatchResponse"),
            413: _body("ErrorBody"),
            422: _body("ErrorBody"),
            503: _body("ErrorBody"),
        },
        response_class=Response,
    )
    async def predict_batch(request: Request) -> Response:
        t0 = perf_counter()
        rid = predictor.ids.next()
        now_us = predictor.now_us()
        try:
            body = decode(await _read_body(request), BatchRequest)
            result = predictor.predict_batch(body.entities, rid, now_us, t0)
            return Response(encode(result), media_type=JSON)
        except Exception as exc:
            return _failed(BATCH, exc, rid, now_us, t0)

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: a champion is loaded, the store answers, features fresh")
    async def ready() -> Response:
        models = runtime.models
        checks: dict[str, Any] = {
            "model": {
                "ok": models.champion is not None,
                "champion": _ref(models.champion),
                "challenger": _ref(models.challenger),
            },
        }
        reason = None if models.champion is not None else "no_model"
        try:
            reader.read_at(["__dockline_ready_probe__"], predictor.now_us())
            fresh, age = predictor.freshness()
            checks["store"] = {"ok": True}
            checks["features"] = {
                "ok": fresh is not False,
                "fresh": fresh,
                "age_s": age,
                "entity": predictor.last_entity,
            }
            if fresh is False:
                reason = reason or "stale_features"
        except Exception as exc:
            checks["store"] = {"ok": False, "error": str(exc)}
            reason = reason or "store_unavailable"
        body = {"ready": reason is None, "reason": reason, "checks": checks}
        return Response(encode(body), status_code=200 if reason is None else 503, media_type=JSON)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    def _authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, supplied = header.partition(" ")
        if (
            token is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(supplied.strip().encode(), token.encode())
        ):
            raise ServeError(
                "a valid bearer token is required", reason="unauthorized", where="authorization"
            )

    def _admin_error(exc: DocklineError, rid: str) -> Response:
        response = _error(exc, rid)
        if exc.reason == "unauthorized":
            response.headers["www-authenticate"] = "Bearer"
        return response

    @app.post(
        "/v1/admin/reload",
        summary="Resolve champion/challenger in the registry now and swap in what changed",
        responses={401: _body("ErrorBody"), 409: _body("ErrorBody")},
    )
    async def admin_reload(request: Request) -> Response:
        rid = predictor.ids.next()
        try:
            _authorize(request)
            result = await run_in_threadpool(runtime.reload)
        except DocklineError as exc:
            return _admin_error(exc, rid)
        if result.errors:
            role, failure = next(iter(result.errors.items()))
            err = ServeError(f"{role}: {failure.message}", reason=failure.reason, where=role)
            return _admin_error(err, rid)
        body = {
            "request_id": rid,
            "changed": result.changed,
            "champion": _ref(result.models.champion),
            "challenger": _ref(result.models.challenger),
        }
        return Response(encode(body), media_type=JSON)

    @app.get(
        "/v1/admin/routing", summary="The current routing", responses={401: _body("ErrorBody")}
    )
    async def get_routing(request: Request) -> Response:
        rid = predictor.ids.next()
        try:
            _authorize(request)
        except DocklineError as exc:
            return _admin_error(exc, rid)
        return Response(encode(predictor.routing.state()), media_type=JSON)

    @app.post(
        "/v1/admin/routing",
        summary="Route: champion only, shadow (score both, answer champion) or canary",
        openapi_extra={"requestBody": {"required": True, **_body("RoutingRequest")}},
        responses={200: _body("RoutingState"), 401: _body("ErrorBody"), 422: _body("ErrorBody")},
    )
    async def set_routing(request: Request) -> Response:
        rid = predictor.ids.next()
        try:
            _authorize(request)
            change = decode(await _read_body(request), RoutingRequest)
            share = predictor.routing.canary_share
            if change.canary_share is not None:
                if not 0.0 <= change.canary_share <= 1.0:
                    raise ServeError(
                        f"canary_share must be in [0, 1]; got {change.canary_share}",
                        reason="invalid_value",
                        where="canary_share",
                    )
                share = change.canary_share
            predictor.routing = Routing(change.mode, share)
        except DocklineError as exc:
            return _admin_error(exc, rid)
        return Response(encode(predictor.routing.state()), media_type=JSON)

    _REASONS = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = _REASONS.get(exc.status_code, "internal_error")
        body = ErrorBody(reason=reason, message=str(exc.detail), field=None)
        return Response(encode(body), status_code=exc.status_code, media_type=JSON)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        body = ErrorBody(reason="invalid_type", message=str(first.get("msg", exc)), field=field)
        return Response(encode(body), status_code=422, media_type=JSON)

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                openapi_components()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
