"""uvicorn's HTTP protocol with deadlines for slow clients and JSON protocol errors.

uvicorn times out idle keep-alive connections but not a request that stops half-way: a client
that sends half its headers (or half its body to a route that answered already) held a socket
forever, and enough of them exhausted the process's file handles. :class:`GuardedHttpProtocol`
gives the headers, and then the body, ``request_timeout`` each to arrive (408), caps open
connections below the file limit (503), and answers malformed HTTP with the same JSON error
body as every other error. The app's own body deadline (:func:`~dockline.serve._http.read_body`)
fires first for the routes that read bodies; the one here is the backstop for the rest.

>>> uvicorn.run(app, **uvicorn_options(ServeConfig()))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dockline.core.config import ServeConfig
from dockline.serve._schemas import ErrorBody, encode

__all__ = ["GuardedHttpProtocol", "configure_protocol", "protocol_for", "uvicorn_options"]

# File handles kept free for what the process itself opens (the store, log files, bundles).
_RESERVED_FILES = 64
# The body backstop waits this much longer than the app's own deadline, so the app answers.
_BODY_GRACE_S = 2.0


def _connection_cap(wanted: int) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _RESERVED_FILES))


class GuardedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus read deadlines, a connection cap and JSON protocol errors."""

    request_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 2000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._body_due: float | None = None  # loop time the body must have arrived by

    # -- deadlines ----------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        due = self._body_due
        if due is not None and due > self.loop.time():  # headers came in time; the body may too
            self._deadline = self.loop.call_at(due, self._timed_out)
            return
        if self.cycle is None or self.cycle.response_complete:  # nothing answered yet: say why
            self._send_json(408, "request_timeout", "the request did not arrive in time")
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse a connection over the cap; give the first request's headers a deadline."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._send_json(503, "too_many_connections", "too many open connections; retry")
            transport.close()
            return
        self._arm(self.request_timeout_s)

    def on_message_begin(self) -> None:
        """A new request on the connection: its headers get a deadline."""
        super().on_message_begin()
        self._body_due = None
        self._arm(self.request_timeout_s)

    def on_headers_complete(self) -> None:
        """Headers arrived: the body gets its own deadline (the backstop of the app's).

        Most requests arrive whole in one read, so the timer is not moved here (that would
        cost a reschedule per request): when it fires during the body, it waits on until
        this deadline.
        """
        super().on_headers_complete()
        self._body_due = self.loop.time() + self.request_timeout_s + _BODY_GRACE_S

    def on_message_complete(self) -> None:
        """The whole request arrived: no deadline while the app answers."""
        super().on_message_complete()
        self._body_due = None
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    # -- errors -------------------------------------------------------------------------------

    def _send_json(self, status: int, reason: str, message: str) -> None:
        body = encode(ErrorBody(reason=reason, message=message))
        phrase = {400: b"Bad Request", 408: b"Request Timeout", 503: b"Service Unavailable"}
        head = [b"HTTP/1.1 %d %s\r\n" % (status, phrase[status])]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP: the JSON error body, then close (as uvicorn does)."""
        self._disarm()
        self._send_json(400, "bad_request", f"{msg.rstrip('.')}: not a valid HTTP/1.1 request")
        self.transport.close()


def protocol_for(config: ServeConfig) -> type[GuardedHttpProtocol]:
    """A protocol class with ``config``'s limits (one per server: several may share a process)."""
    attrs = {
        "request_timeout_s": config.request_timeout.total_seconds(),
        "max_connections": _connection_cap(config.max_connections),
    }
    return type("ConfiguredHttpProtocol", (GuardedHttpProtocol,), attrs)


def configure_protocol(config: ServeConfig) -> None:
    """Set the limits of :class:`GuardedHttpProtocol` itself (for uvicorn's worker processes,
    which import the class by name and run the app factory, which calls this)."""
    GuardedHttpProtocol.request_timeout_s = config.request_timeout.total_seconds()
    GuardedHttpProtocol.max_connections = _connection_cap(config.max_connections)


def uvicorn_options(
    config: ServeConfig, protocol: type[GuardedHttpProtocol] | None = None
) -> dict[str, Any]:
    """The ``uvicorn.Config`` keywords that apply ``config``'s client limits."""
    return {
        "http": protocol or protocol_for(config),
        "timeout_keep_alive": max(1, round(config.keep_alive_timeout.total_seconds())),
    }
