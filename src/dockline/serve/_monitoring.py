"""Seed 002's monitoring endpoints: ``GET /v1/monitoring/{health,drift,retraining_trigger}``.

Serving does not compute verdicts (that is ``dockline.monitor``'s job, and stages never import
each other): the wiring passes one callable per endpoint returning a JSON-ready mapping, and
this module only exposes them. A callable is run off the event loop; one that raises a
``DocklineError`` answers with its reason's status, anything else ``monitoring_unavailable``
(503) — the predict path is never affected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dockline.core.errors import DocklineError
from dockline.serve._errors import ServeError
from dockline.serve._http import JSON, error_response
from dockline.serve._schemas import encode

__all__ = ["MONITORING_ENDPOINTS", "MonitoringProvider", "install_monitoring"]

MONITORING_ENDPOINTS = ("health", "drift", "retraining_trigger")

MonitoringProvider = Callable[[], Mapping[str, Any]]
"""Returns the endpoint's JSON body."""

_log = logging.getLogger(__name__)


def install_monitoring(
    app: FastAPI, providers: Mapping[str, MonitoringProvider], next_id: Callable[[], str]
) -> None:
    """Add ``GET /v1/monitoring/<name>`` for each endpoint; one without a provider answers
    404 ``not_configured``."""
    unknown = set(providers) - set(MONITORING_ENDPOINTS)
    if unknown:
        raise ValueError(f"monitoring providers must be in {MONITORING_ENDPOINTS}; got {unknown}")

    def route(name: str) -> Callable[[], Any]:
        provider = providers.get(name)

        async def endpoint() -> Response:
            rid = next_id()
            if provider is None:
                err = ServeError(
                    f"no {name} monitoring is configured for this app",
                    reason="not_configured",
                    where=name,
                )
                return error_response(err, rid)
            try:
                body = await run_in_threadpool(provider)
            except DocklineError as exc:
                return error_response(exc, rid)
            except Exception as exc:  # the text goes to the log, never to the answer
                _log.warning("monitoring %s failed: %s", name, exc)
                err = ServeError(
                    f"{name} could not be computed", reason="monitoring_unavailable", where=name
                )
                return error_response(err, rid)
            return Response(encode(dict(body)), media_type=JSON)

        endpoint.__name__ = f"monitoring_{name}"
        return endpoint

    for name in MONITORING_ENDPOINTS:
        app.get(
            f"/v1/monitoring/{name}",
            summary=f"Monitoring: {name.replace('_', ' ')} (seed 002)",
            response_class=Response,
        )(route(name))
