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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from time import perf_counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from dockline.core.config import DataDir, ServeConfig
from dockline.core.errors import ConfigError, DocklineError
from dockline.core.ports import FeatureReader, ModelRegistry, OnlineStore
from dockline.core.time import Clock, SystemClock
from dockline.serve._errors import ServeError
from dockline.serve._http import (
    JSON,
    error_response,
    install_error_handlers,
    read_body,
    request_failed,
)
from dockline.serve._monitoring import MonitoringProvider, install_monitoring
from dockline.serve._predlog import PredictionLog
from dockline.serve._protocol import uvicorn_options
from dockline.serve._recovery import CrashCheckpoint, recover
from dockline.serve._runtime import SCHEMA_MISMATCH, LoadedModel, ModelRuntime, ModelSet
from dockline.serve._schemas import (
    EXAMPLES,
    BatchRequest,
    PredictRequest,
    RoutingRequest,
    decode,
    encode,
    explain_flag,
    openapi_components,
)
from dockline.serve._service import BATCH, PREDICT, Predictor, Routing
from dockline.serve._stored import StoredVectors
from dockline.serve._telemetry import (
    PREDICTION_LOG_SINK,
    ModelStamp,
    ServiceIdentity,
    Telemetry,
)

__all__ = ["ADMIN_TOKEN_ENV", "SERVICE_NAME", "create_app"]

ADMIN_TOKEN_ENV = "DOCKLINE_ADMIN_TOKEN"
SERVICE_NAME = "dockline-serve"

_log = logging.getLogger(__name__)


def _service_version() -> str:
    try:
        return version("dockline")
    except PackageNotFoundError:
        return "0.0.0"


def admin_token_from(explicit: str | None, configured: str | None) -> str | None:
    """The admin token: ``explicit``, else ``$DOCKLINE_ADMIN_TOKEN``, else ``configured``.

    The first one set wins; an empty or blank one is refused (``ConfigError``): with it,
    ``Authorization: Bearer `` and nothing else would open the admin endpoints.
    """
    for value, where in (
        (explicit, "admin_token"),
        (os.environ.get(ADMIN_TOKEN_ENV), ADMIN_TOKEN_ENV),
        (configured, "serve.admin_token"),
    ):
        if value is None:
            continue
        if not value.strip():
            raise ConfigError(
                "the admin token must not be empty; set a secret or leave it unset"
                " (admin endpoints then always answer 401)",
                reason="empty_admin_token",
                where=where,
            )
        return value
    return None


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
    media: dict[str, Any] = {"schema": ref}
    if schema in EXAMPLES:
        media["examples"] = EXAMPLES[schema]
    return {"content": {JSON: media}}


EXPLAIN_PARAMETER: dict[str, Any] = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["true", "false", "1", "0"], "default": "false"},
    "description": "Add contributions (feature → value), base_value and raw_score to each"
    " prediction (409 explain_unavailable when the model's bundle has no explanation dump).",
}


def _explained_body(plain: str, explained: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in (plain, explained)]
    return {"content": {JSON: {"schema": {"oneOf": refs}}}}


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
    plan_hash: str | None = None,
    on_close: Sequence[Callable[[], None]] = (),
    features: FeatureReader | None = None,
    monitoring: Mapping[str, MonitoringProvider] | None = None,
    collectors: Sequence[Collector] = (),
) -> FastAPI:
    """The serving app for ``model_name``'s ``champion`` (and ``challenger``) in ``registry``.

    ``features`` gives each request's vectors as of its time (dockline's wiring passes the
    read-time reader of ``dockline.features.served``); without it, the ready-made vectors of
    ``group`` in ``store`` are served as written. ``data_dir`` (None: no files) receives the
    metrics windows and the prediction log; ``clock`` dates vectors' ages and windows. The admin
    token is ``admin_token``, else ``$DOCKLINE_ADMIN_TOKEN``, else ``config.admin_token``; with
    none, admin endpoints always answer 401, and an empty one is a ``ConfigError``.
    ``plan_hash`` (the plan that built ``group``) refuses bundles trained on another plan.
    ``on_close`` callbacks run at shutdown (e.g. closing the store the caller opened).
    ``monitoring`` serves ``GET /v1/monitoring/{health,drift,retraining_trigger}`` from the
    wiring's callables; ``collectors`` add Prometheus metrics to ``/metrics`` (the monitor's
    gauges: serving itself computes no verdict).
    """
    cfg = config or ServeConfig()
    clk = clock or SystemClock()
    if features is None:
        if store is None:
            raise TypeError("create_app needs features= (a FeatureReader) or store=")
        features = StoredVectors(store, group)
    reader = features
    token = admin_token_from(admin_token, cfg.admin_token)
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
        plan_hash=plan_hash,
        precision=cfg.precision,
    )
    runtime_box.append(runtime)
    prediction_log = PredictionLog(
        data_dir.serving_predictions if data_dir is not None else None,
        flush_rows=cfg.prediction_flush_rows,
        flush_interval_s=cfg.prediction_flush_interval.total_seconds(),
        max_queue=max(cfg.write_buffer_rows, 2 * cfg.prediction_flush_rows),
        on_written=telemetry.log_rows.inc,
        on_dropped=lambda n: telemetry.rows_dropped.labels(PREDICTION_LOG_SINK).inc(n),
        on_write_failed=telemetry.write_failures.labels(PREDICTION_LOG_SINK).inc,
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

    # Crash checkpoints of the in-memory telemetry (see _recovery): serving/state/.
    state_dir = data_dir.serving_metrics.parent / "state" if data_dir is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runtime.reload)
        checkpoint = None
        if state_dir is not None:
            try:
                # Before our own checkpoint exists: take over what killed predecessors left.
                app.state.recovery = await run_in_threadpool(
                    recover, state_dir, telemetry, prediction_log.root
                )
                checkpoint = CrashCheckpoint(state_dir, telemetry, prediction_log)
                telemetry.after_tick = checkpoint.save
            except OSError as exc:  # serve without crash recovery rather than not at all
                _log.warning("no crash checkpoint (a kill will lose more than a tick): %s", exc)
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
            if checkpoint is not None:
                checkpoint.close()
            for close in on_close:
                close()

    # Swagger UI and ReDoc from files shipped in the fastapi-offline package: /docs works
    # without internet.
    app = FastAPIOffline(
        title="dockline serve",
        version=_service_version(),
        description="Predictions from fresh online features, with a freshness gate.",
        lifespan=lifespan,
        static_url="/docs/static",
    )
    app.state.runtime = runtime
    app.state.predictor = predictor
    app.state.telemetry = telemetry
    app.state.prediction_log = prediction_log
    app.state.uvicorn_options = uvicorn_options(cfg)
    body_timeout_s = cfg.request_timeout.total_seconds()
    app.state.body_timeout_s = body_timeout_s  # routes the wiring adds read bodies alike

    async def _read_body(request: Request) -> bytes:
        return await read_body(request, max_body, body_timeout_s)

    def _failed(endpoint: str, exc: Exception, rid: str, now_us: int, t0: float) -> Response:
        return request_failed(telemetry, endpoint, exc, rid, now_us, t0)

    @app.post(
        PREDICT,
        summary="Predict for one entity from its latest online feature vector",
        openapi_extra={
            "requestBody": {"required": True, **_body("PredictRequest")},
            "parameters": [EXPLAIN_PARAMETER],
        },
        responses={
            200: _explained_body("PredictResponse", "ExplainedPredictResponse"),
            404: _body("ErrorBody"),
            409: _body("ErrorBody"),
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
            explain = explain_flag(request.scope["query_string"])
            body = decode(await _read_body(request), PredictRequest)
            if explain:  # milliseconds of TreeSHAP: off the event loop, plain requests go on
                payload = await run_in_threadpool(predictor.predict, body, rid, now_us, t0, True)
                return Response(payload, media_type=JSON)
            return Response(predictor.predict(body, rid, now_us, t0), media_type=JSON)
        except Exception as exc:
            return _failed(PREDICT, exc, rid, now_us, t0)

    @app.post(
        BATCH,
        summary="Predict for up to max_batch entities in one vectorized call",
        openapi_extra={
            "requestBody": {"required": True, **_body("BatchRequest")},
            "parameters": [EXPLAIN_PARAMETER],
        },
        responses={
            200: _body("BatchResponse"),
            409: _body("ErrorBody"),
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
            explain = explain_flag(request.scope["query_string"])
            body = decode(await _read_body(request), BatchRequest)
            if explain:
                result = await run_in_threadpool(
                    predictor.predict_batch, body.entities, rid, now_us, t0, True
                )
            else:
                result = predictor.predict_batch(body.entities, rid, now_us, t0)
            return Response(encode(result), media_type=JSON)
        except Exception as exc:
            return _failed(BATCH, exc, rid, now_us, t0)

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    ready_failures: list[str] = [""]  # the last store failure logged (log each kind once)

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
        reason = None if models.champion is not None else runtime.unavailable().reason
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
        except Exception as exc:  # the text goes to the log, never to the (public) answer
            failure = exc.reason if isinstance(exc, DocklineError) else type(exc).__name__
            if failure != ready_failures[-1]:
                ready_failures.append(failure)
                _log.warning("readiness: the online store failed: %s", exc)
            if failure != SCHEMA_MISMATCH:
                failure = "store_unavailable"
            checks["store"] = {"ok": False, "reason": failure}
            reason = reason or failure
        mismatch = runtime.layout_error(models)
        checks["layout"] = {"ok": mismatch is None}
        if mismatch is not None:
            checks["layout"]["reason"] = mismatch.reason
            reason = reason or mismatch.reason
        body = {"ready": reason is None, "reason": reason, "checks": checks}
        return Response(encode(body), status_code=200 if reason is None else 503, media_type=JSON)

    # -- monitoring (seed 002 endpoints, the monitor's metrics) --
    install_monitoring(app, monitoring or {}, predictor.ids.next)
    for collector in collectors:
        telemetry.registry.register(collector)
    # -- end monitoring --

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
        response = error_response(exc, rid)
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

    install_error_handlers(app, predictor.ids.next)

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
