"""The HTTP edge of the app: reading bodies under limits, and every error as a JSON body.

Bodies are read as a stream so the size limit applies while they arrive (a chunked upload has
no Content-Length to check first) and within a deadline (a client that stops sending is
answered 408, not waited for). A client that goes away mid-request is counted, never logged as
a server fault. Every error, including the framework's own 404/405/500, answers
``{"reason", "message", "field", "request_id"}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dockline.core.errors import DocklineError, NotFoundError
from dockline.serve._errors import ServeError, status_for
from dockline.serve._schemas import ErrorBody, encode
from dockline.serve._telemetry import Telemetry

__all__ = [
    "CLIENT_DISCONNECTED",
    "JSON",
    "as_serve_error",
    "error_response",
    "install_error_handlers",
    "read_body",
    "request_failed",
]

JSON = "application/json"
CLIENT_DISCONNECTED = "client_disconnected"
"""Outcome counted when the client left before its request was read or answered."""

# After these the rest of the request is not read: close the connection rather than leave the
# client streaming into a socket nobody reads.
_CLOSE_AFTER = frozenset({"body_too_large", "body_timeout"})

_log = logging.getLogger(__name__)


def as_serve_error(exc: DocklineError) -> DocklineError:
    """Core errors keep their reason; a NotFoundError without one is an unknown entity."""
    if isinstance(exc, NotFoundError) and exc.reason == "not_found":
        return ServeError(exc.message, reason="unknown_entity", where=exc.where)
    return exc


def error_response(exc: DocklineError, request_id: str | None) -> Response:
    """The JSON error body for ``exc``, with the status of its reason."""
    body = ErrorBody(reason=exc.reason, message=exc.message, field=exc.where, request_id=request_id)
    response = Response(encode(body), status_code=status_for(exc.reason), media_type=JSON)
    if exc.reason in _CLOSE_AFTER:
        response.headers["connection"] = "close"
    return response


async def read_body(request: Request, max_body: int, timeout_s: float) -> bytes:
    """The request body, refused (413) as soon as it passes ``max_body`` bytes and (408) when it
    has not all arrived within ``timeout_s``; raises ``ClientDisconnect`` if the client left."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise ServeError(
            f"the body must be at most {max_body} bytes; got {length}",
            reason="body_too_large",
            where="body",
        )
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    raise ServeError(
                        f"the body must be at most {max_body} bytes",
                        reason="body_too_large",
                        where="body",
                    )
    except TimeoutError:
        raise ServeError(
            f"the body did not arrive within {timeout_s:g} s",
            reason="body_timeout",
            where="body",
        ) from None
    return bytes(body)


def request_failed(
    telemetry: Telemetry, endpoint: str, exc: Exception, rid: str, now_us: int, t0: float
) -> Response:
    """Count a failed predict request and answer its error (never a traceback to the client)."""
    if isinstance(exc, ClientDisconnect):
        # The client left: nothing to answer and nothing wrong with the service. Counted in
        # Prometheus only, so an impatient client cannot push the windows' failure rate up.
        telemetry.requests.labels(endpoint, CLIENT_DISCONNECTED).inc()
        return Response(status_code=400)
    if isinstance(exc, DocklineError):
        err = as_serve_error(exc)
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
    return error_response(err, rid)


_STATUS_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def install_error_handlers(app: FastAPI, next_id: Callable[[], str]) -> None:
    """Answer the framework's own errors (unknown route, wrong method, crash) as JSON too."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = _STATUS_REASONS.get(exc.status_code, "internal_error")
        body = ErrorBody(reason=reason, message=str(exc.detail), field=None, request_id=next_id())
        return Response(encode(body), status_code=exc.status_code, media_type=JSON)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        body = ErrorBody(
            reason="invalid_type",
            message=str(first.get("msg", "invalid request")),
            field=field,
            request_id=next_id(),
        )
        return Response(encode(body), status_code=422, media_type=JSON)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        _log.exception("unexpected error in %s %s", request.method, request.url.path)
        body = ErrorBody(
            reason="internal_error", message="internal error", field=None, request_id=next_id()
        )
        return Response(encode(body), status_code=500, media_type=JSON)
