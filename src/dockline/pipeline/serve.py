"""Serving, wired for the product: the data directory's online store and MLflow registry.

:func:`create_app_from_data_dir` is a uvicorn factory (``uvicorn --factory
dockline.pipeline.serve:create_app_from_data_dir``): it reads ``$DOCKLINE_DATA_DIR`` and its
``dockline.toml``, opens the configured online store and the registry, and builds the app of
:mod:`dockline.serve`. :func:`run_server` runs it with uvicorn, one process per worker.

>>> run_server(Platform.open(".dockline"), "127.0.0.1", 8000, workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from dockline.core.config import COMPANION_PREFIX, DATA_DIR_ENV
from dockline.core.errors import ConfigError, DocklineError
from dockline.core.time import to_micros
from dockline.features.offline import OfflineExecutor
from dockline.features.served import ServedVectors
from dockline.pipeline.decide_api import add_decide_route
from dockline.pipeline.features import load_plan, offline_sources, open_online_store
from dockline.pipeline.platform import Platform
from dockline.pipeline.serve_monitoring import ServingMonitor
from dockline.pipeline.tracing import configure_tracing
from dockline.pipeline.train import model_name_for
from dockline.serve import GuardedHttpProtocol, configure_protocol, create_app, uvicorn_options
from dockline.train.registry import MlflowRegistry

__all__ = [
    "WORKERS_ENV",
    "BackgroundServer",
    "companion_names",
    "create_app_from_data_dir",
    "create_serving_app",
    "model_name",
    "run_server",
]

WORKERS_ENV = "DOCKLINE_SERVE_WORKERS"
DEPLOYMENT_ENV = "DOCKLINE_DEPLOYMENT_ID"
"""Overrides ``serve.deployment_id``. Replicas serving one data dir each set their own: with one
id their metrics windows share monitoring's deduplication key and all but one are dropped."""
"""Set by :func:`run_server` so each worker can tell its metrics windows apart."""


def model_name(platform: Platform, label: str | None = None) -> str:
    """The served model: ``serve.model_name``, else training's name rule (``<project>-<label>``).

    With ``label``, the companion model of that label (``[serve] companions``), which must be
    named apart from the main one.
    """
    serve, train = platform.config.serve, platform.config.train
    if label is None:
        if serve.model_name:
            return serve.model_name
        return model_name_for(train, load_plan(platform).project, train.label)
    plan = load_plan(platform)
    if label not in plan.label_names:
        raise ConfigError(
            f"no label {label!r} in the plan (labels: {', '.join(plan.label_names)})",
            where="serve.companions",
        )
    name = model_name_for(train, plan.project, label)
    if name == model_name(platform):
        raise ConfigError(
            f"the companion {label!r} would serve {name!r}, the main model: with [train]"
            " model_name set every label registers under one name; unset it",
            where="serve.companions",
        )
    return name


def companion_names(platform: Platform) -> tuple[str, ...]:
    """The models ``[serve] companions`` serves beside the main one (their log rows and
    windows are not the main deployment's evidence)."""
    return tuple(model_name(platform, label) for label in platform.config.serve.companions)


def create_serving_app(platform: Platform) -> FastAPI:
    """The serving app over ``platform``'s online store and registry (closed at shutdown).

    Vectors are evaluated at each request's time from the entities' state in the online store
    (:class:`~dockline.features.served.ServedVectors`); batch features (profiles,
    neighbourhoods) come from the offline store's runs, computed once per run and cached.
    """
    plan = load_plan(platform)
    configure_tracing(platform, "serve")
    offline = OfflineExecutor(
        plan, offline_sources(platform, plan), memory_limit=platform.config.features.memory_limit
    )
    store = open_online_store(platform)
    features = ServedVectors(plan, store, batch_provider=offline.batch_run)
    clock = platform.clock
    features.prefetch(lambda: to_micros(clock.now()))
    registry = MlflowRegistry.for_data_dir(
        platform.data, platform.clock, tracking_uri=platform.config.registry.tracking_uri
    )
    config = platform.config.serve
    configure_protocol(config)  # this process's uvicorn protocol (see run_server)
    deployment = os.environ.get(DEPLOYMENT_ENV) or config.deployment_id
    if int(os.environ.get(WORKERS_ENV, "1")) > 1:
        # Each worker counts its own requests: one window series per process, not one
        # deployment-wide series that P6's deduplication would collapse.
        deployment = f"{deployment}-{os.getpid()}"
    monitor = ServingMonitor(platform)  # seed 002's /v1/monitoring/* and the ml_* metrics
    app = create_app(
        features=features,
        registry=registry,
        model_name=model_name(platform),
        config=config,
        data_dir=platform.data,
        clock=platform.clock,
        deployment_id=deployment,
        plan_hash=plan.hash,  # the plan evaluating the features: bundles of another are refused
        on_close=[features.close, offline.close],
        monitoring=monitor.providers(),
        collectors=[monitor.collector()],
    )
    companions = {
        label: create_app(
            features=features,  # one reader: the companions score the same vectors
            registry=registry,
            model_name=model_name(platform, label),
            config=config,
            data_dir=platform.data,
            clock=platform.clock,
            deployment_id=f"{deployment}-{label}",
            plan_hash=plan.hash,
        )
        for label in config.companions
    }
    for label, companion in companions.items():
        app.mount(f"{COMPANION_PREFIX}{label}", companion)
    if companions:
        _run_lifespans(app, list(companions.values()))
    full = companions.get(platform.config.decide.full_label)
    add_decide_route(  # POST /v1/decide (P7)
        app, platform.config.decide, full=full.state.predictor if full is not None else None
    )
    # -- ui: the dashboard's read-only JSON and its static files at /ui --
    from dockline.pipeline.ui_api import add_ui_routes
    from dockline.ui import UI_PATH, ui_files

    add_ui_routes(app, platform)
    app.mount(UI_PATH, ui_files(), name="ui")
    # -- end ui --
    # -- lineage: a serving deployment run (never fails the start) --
    from dockline.pipeline.lineage import record_serving

    try:
        champion = registry.resolve(model_name(platform), "champion")
    except DocklineError:  # the app starts without a registry and says so in /ready
        champion = None
    record_serving(
        platform,
        deployment_id=deployment,
        model_name=model_name(platform),
        bundle_id=champion.bundle_id if champion is not None else None,
    )
    # -- end lineage --
    return app


def _run_lifespans(app: FastAPI, mounted: list[FastAPI]) -> None:
    """Run the mounted apps' lifespans inside ``app``'s (Starlette runs only the outer one):
    they start after it and stop before it, which closes the reader they share."""
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(main: FastAPI) -> AsyncIterator[None]:
        async with outer(main), AsyncExitStack() as stack:
            for sub in mounted:
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield

    app.router.lifespan_context = lifespan


def create_app_from_data_dir() -> FastAPI:
    """Uvicorn factory: the app for ``$DOCKLINE_DATA_DIR`` (default ``./.dockline``)."""
    return create_serving_app(Platform.open(os.environ.get(DATA_DIR_ENV)))


def run_server(
    platform: Platform, host: str, port: int, workers: int = 1, *, access_log: bool = False
) -> None:
    """Serve ``platform`` on ``host:port``; ``workers > 1`` runs separate processes.

    ``access_log`` logs every request (uvicorn's access log, at INFO) on stderr.
    """
    import uvicorn

    os.environ[DATA_DIR_ENV] = str(Path(platform.data.root).resolve())
    os.environ[WORKERS_ENV] = str(workers)
    uvicorn.run(
        "dockline.pipeline.serve:create_app_from_data_dir",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        # The guarded protocol class and keep-alive timeout; workers import the class by name
        # and the app factory sets its limits (configure_protocol).
        **uvicorn_options(platform.config.serve, GuardedHttpProtocol),
    )


class BackgroundServer:
    """Run an app with uvicorn on 127.0.0.1 (a free port) in a thread: for the demo and tests."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = app
        # The app's client limits (create_app puts them in app.state): read deadlines, JSON
        # protocol errors, keep-alive timeout.
        options = getattr(app.state, "uvicorn_options", {})
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="on", **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dockline-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        bound = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound}"

    def stop(self) -> None:
        """Stop, running the app's shutdown (flushes the prediction log and metrics windows)."""
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
