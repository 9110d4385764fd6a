"""Serve the simulated city as a live GBFS feed (v2.3 and v3.0) on 127.0.0.1.

The city advances lazily: each request first steps it to ``clock.now()``, one publication per
simulated step. ``station_status`` documents carry the faults of the publication; those faults
and records are counted once, the first time the publication's status is served with 200, so
``/_sim/stats`` says exactly what clients received.

>>> from dockline.core.time import FixedClock
>>> city = City(CityConfig(stations=20, seed=1))
>>> with SimServer(city, clock=FixedClock(city.time)) as server:
...     server.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import msgspec
import orjson

from dockline.core.errors import ConfigError, SourceError
from dockline.core.time import UTC, Clock, ScaledClock, ensure_utc
from dockline.sim.city import City, CityConfig, StationStatus
from dockline.sim.faults import FaultCounts, FaultInjector, FaultPlan
from dockline.sim.fleet import Fleet
from dockline.sim.gbfs import (
    FEEDS,
    GbfsVersion,
    dumps,
    render_gbfs,
    render_station_information,
    render_station_status,
    render_system_information,
    render_vehicle_types,
)

__all__ = ["CLOCK_HEADER", "SIMULATED_CLOCK_FIELD", "SimServer", "format_clock"]

CLOCK_HEADER = "X-Dockline-Clock"
"""Response header with the simulator's current time (RFC 3339, microseconds, UTC)."""

SIMULATED_CLOCK_FIELD = "dockline_simulated_clock"
"""Top-level field of our ``gbfs.json``: this feed's clock is simulated (see CLOCK_HEADER)."""

_STATIC_TTL = timedelta(hours=1)  # static feeds are re-fetched once a simulated hour
_PREFIX: dict[str, GbfsVersion] = {"v2": "2.3", "v3": "3.0"}


def format_clock(when: datetime) -> str:
    """``2024-05-06T05:00:00.000000Z``: the :data:`CLOCK_HEADER` format."""
    return ensure_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Publication:
    step_index: int
    time: datetime
    status: StationStatus
    plan: FaultPlan
    docs: dict[GbfsVersion, dict[str, Any]] = field(default_factory=dict)
    counted: bool = False


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    headers: dict[str, str]


class SimServer:
    """A GBFS server over a :class:`City` (stdlib ``ThreadingHTTPServer`` in a thread).

    ``speed`` is simulated seconds per real second; it sets the default clock
    (``ScaledClock(city.time, speed)``) and converts ``ttl`` to real seconds. Tests pass a
    ``FixedClock`` and advance it. Paths: ``/gbfs.json`` and ``/v2/<feed>.json`` (v2.3),
    ``/v3/gbfs.json`` and ``/v3/<feed>.json`` (v3.0), ``/_sim/stats``; the truck API
    ``POST /v1/actions`` and ``GET /v1/trucks`` (:mod:`dockline.sim.fleet`).
    """

    def __init__(
        self,
        city: City,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 60.0,
        clock: Clock | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        if speed <= 0:
            raise ConfigError(f"speed must be > 0; got {speed}")
        self.city = city
        self.host = host
        self.speed = speed
        self.clock: Clock = clock if clock is not None else ScaledClock(city.time, speed)
        self.fleet = fleet if fleet is not None else Fleet(city)
        self.injector = FaultInjector(city.config.faults, seed=city.config.seed, n_stations=city.n)
        self._port = port
        self._lock = threading.Lock()
        self._pub: _Publication | None = None
        self._static: dict[tuple[GbfsVersion, str], bytes] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a background thread; returns ``self``."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"sim": self})
        try:
            httpd = ThreadingHTTPServer((self.host, self._port), handler)
        except OSError as exc:
            raise SourceError(
                f"cannot listen on {self.host}:{self._port}: {exc}", reason="bind_failed"
            ) from exc
        httpd.daemon_threads = True
        self._httpd = httpd
        self._port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the real one once started with ``port=0``)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        return f"http://{self.host}:{self._port}"

    @property
    def counts(self) -> FaultCounts:
        """Faults and records actually served so far."""
        return self.injector.counts

    def stats(self) -> dict[str, Any]:
        """What ``/_sim/stats`` serves: fault counts, city metrics, clocks."""
        with self._lock:
            out: dict[str, Any] = self.counts.to_dict()
            out["metrics"] = self.city.metrics.as_dict()
            out["sim_time"] = format_clock(self.city.time)
            out["step_index"] = self.city.step_index
            out["stations"] = self.city.n
            out["bikes_total"] = self.city.total_bikes()
        return out

    # -- request handling (pure of sockets, so it is easy to reason about) --------------------

    def handle(self, path: str, headers: dict[str, str]) -> _Response:
        """Answer ``GET path`` with request ``headers`` (lower-case names)."""
        now = ensure_utc(self.clock.now())
        clock_header = {"X-Dockline-Clock": format_clock(now)}
        route = path.split("?", 1)[0]
        if route == "/_sim/stats":
            with self._lock:
                self.city.run_until(now)
            return _Response(200, orjson.dumps(self.stats()), clock_header)
        if route == "/v1/trucks":
            with self._lock:
                self.city.run_until(now)
                body = orjson.dumps({"trucks": msgspec.to_builtins(self.fleet.snapshot())})
            return _Response(200, body, clock_header)
        parsed = _parse_route(route)
        if parsed is None:
            body = orjson.dumps({"reason": "not_found", "detail": f"no such feed: {route}"})
            return _Response(404, body, clock_header)
        version, feed = parsed
        with self._lock:
            self.city.run_until(now)
            if feed == "station_status":
                pub = self._publication()
                last_modified = pub.time
                etag = f'"{version}-station_status-{int(pub.time.timestamp())}"'
                next_pub = pub.time + self.city.config.step
                ttl = max(0, math.floor((next_pub - now).total_seconds() / self.speed))
                if _not_modified(headers, etag, last_modified):
                    return _Response(304, b"", _cache_headers(etag, last_modified, clock_header))
                doc = pub.docs.get(version)
                if doc is None:
                    doc = render_station_status(
                        pub.status, self.city.station_ids, version, ttl=ttl, plan=pub.plan
                    )
                    pub.docs[version] = doc
                doc["ttl"] = ttl  # the same publication served later has less time to live
                body = dumps(doc)
                if not pub.counted:
                    self.injector.commit(pub.plan)
                    pub.counted = True
            else:
                last_modified = self.city.config.start
                etag = f'"{version}-{feed}-{self.city.config.seed}"'
                if _not_modified(headers, etag, last_modified):
                    return _Response(304, b"", _cache_headers(etag, last_modified, clock_header))
                body = self._static_body(version, feed)
        return _Response(200, body, _cache_headers(etag, last_modified, clock_header))

    def handle_post(self, path: str, body: bytes) -> _Response:
        """Answer ``POST path``: the truck API (``/v1/actions``) moves trucks at ``clock.now()``."""
        now = ensure_utc(self.clock.now())
        clock_header = {CLOCK_HEADER: format_clock(now)}
        if path.split("?", 1)[0] != "/v1/actions":
            body = orjson.dumps({"reason": "not_found", "detail": f"no such route: {path}"})
            return _Response(404, body, clock_header)
        with self._lock:
            self.city.run_until(now)
            status, answer = self.fleet.handle_actions(body)
        return _Response(status, orjson.dumps(answer), clock_header)

    def _publication(self) -> _Publication:
        city = self.city
        if self._pub is not None and self._pub.step_index == city.step_index:
            return self._pub
        status = self.injector.hold(city.time_s, city.status())
        lag_steps = math.ceil(city.config.faults.out_of_order_lag / city.config.step)
        past = city.past_counts(lag_steps)
        plan = self.injector.plan(
            city.time_s,
            status.last_reported,
            old_bikes=past[0] if past else None,
            old_docks=past[1] if past else None,
        )
        self._pub = _Publication(
            step_index=city.step_index, time=city.time, status=status, plan=plan
        )
        return self._pub

    def _static_ttl(self) -> int:
        return max(0, math.floor(_STATIC_TTL.total_seconds() / self.speed))

    def _static_body(self, version: GbfsVersion, feed: str) -> bytes:
        key = (version, feed)
        cached = self._static.get(key)
        if cached is not None:
            return cached
        config: CityConfig = self.city.config
        ttl = self._static_ttl()
        start = config.start
        if feed == "gbfs":
            base = f"{self.url}/{'v2' if version == '2.3' else 'v3'}"
            doc = render_gbfs(base, version, last_updated=start, ttl=ttl)
            # announce that times here are the simulator's, not the wall clock's: a client
            # stamps ingested_at with our X-Dockline-Clock instead of its own clock
            doc[SIMULATED_CLOCK_FIELD] = True
        elif feed == "system_information":
            doc = render_system_information(config, version, last_updated=start, ttl=ttl)
        elif feed == "vehicle_types":
            doc = render_vehicle_types(version, last_updated=start, ttl=ttl)
        else:
            doc = render_station_information(
                self.city,
                version,
                last_updated=start,
                ttl=ttl,
                numeric_ids=config.faults.numeric_ids > 0,
            )
        body = dumps(doc)
        self._static[key] = body
        return body


def _parse_route(route: str) -> tuple[GbfsVersion, str] | None:
    if route == "/gbfs.json":
        return "2.3", "gbfs"
    parts = route.strip("/").split("/")
    if len(parts) != 2 or parts[0] not in _PREFIX or not parts[1].endswith(".json"):
        return None
    feed = parts[1][: -len(".json")]
    if feed != "gbfs" and feed not in FEEDS:
        return None
    return _PREFIX[parts[0]], feed


def _http_date(when: datetime) -> str:
    return format_datetime(ensure_utc(when).replace(microsecond=0), usegmt=True)


def _cache_headers(etag: str, last_modified: datetime, extra: dict[str, str]) -> dict[str, str]:
    return {"ETag": etag, "Last-Modified": _http_date(last_modified), **extra}


def _not_modified(headers: dict[str, str], etag: str, last_modified: datetime) -> bool:
    """RFC 9110 §13.2.2: If-None-Match wins; If-Modified-Since only without it."""
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = headers.get("if-modified-since")
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return last_modified.replace(microsecond=0) <= since
    return False


class _Handler(BaseHTTPRequestHandler):
    sim: SimServer
    protocol_version = "HTTP/1.1"  # keep-alive: pollers reuse their connection
    # Send headers and body as one segment: with an unbuffered stream the two small writes meet
    # delayed ACKs and cost ~40 ms per response.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server_version = "dockline-sim"

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            response = self.sim.handle(self.path, headers)
        except Exception as exc:  # a bug must not kill the server thread; report it as 500
            body = orjson.dumps({"reason": "internal_error", "detail": str(exc)})
            response = _Response(500, body, {})
        self.send_response(response.status)
        if response.status != 304:  # a 304 has no body, so no length or type
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        try:
            if length < 0:
                detail = "Content-Length must be a whole number >= 0"
                response = _Response(
                    400, orjson.dumps({"reason": "bad_request", "detail": detail}), {}
                )
            else:
                body = self.rfile.read(length) if length else b""
                response = self.sim.handle_post(self.path, body)
        except Exception as exc:  # a bug must not kill the server thread; report it as 500
            response = _Response(
                500, orjson.dumps({"reason": "internal_error", "detail": str(exc)}), {}
            )
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (a poller makes many requests)."""
