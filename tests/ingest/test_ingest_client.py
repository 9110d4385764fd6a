"""GbfsClient against a real HTTP server on 127.0.0.1 serving the GBFS fixtures."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from dockline.core.errors import NotFoundError, SourceError
from dockline.core.time import FixedClock, SystemClock
from dockline.ingest import FeedHTTPError, Fetched, GbfsClient

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "gbfs" / "fixtures"
V23 = FIXTURES / "v2.3" / "mobilitydata-gbfs-json-schema-testFixtures"
V30 = FIXTURES / "v3.0" / "mobilitydata-gbfs-json-schema-testFixtures"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

Body = bytes | Callable[[], bytes]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    at: float
    status: int = 200


@dataclass
class FeedServer:
    """Serves bodies by path with ETag/Last-Modified, and fails on demand."""

    routes: dict[str, Body] = field(default_factory=dict)
    fail_next: list[tuple[int, str | None]] = field(default_factory=list)  # (status, Retry-After)
    always_fail: int | None = None
    clock_header: str | None = None
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hits(self, path: str, status: int | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path and status in (None, r.status)]


def make_handler(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            request = Request(self.path, dict(self.headers.items()), time.monotonic())
            with server.lock:
                server.requests.append(request)
                failure = server.fail_next.pop(0) if server.fail_next else None
                if failure is None and server.always_fail is not None:
                    failure = (server.always_fail, None)
            if failure is not None:
                request.status = failure[0]
                self.send_response(failure[0])
                if failure[1] is not None:
                    self.send_header("Retry-After", failure[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = server.routes.get(self.path)
            if body is None:
                request.status = 404
                self.send_error(404)
                return
            payload = body() if callable(body) else body
            etag = '"' + hashlib.sha256(payload).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                request.status = 304
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", "Wed, 01 May 2024 12:00:00 GMT")
            if server.clock_header:
                self.send_header("X-Dockline-Clock", server.clock_header)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    state = FeedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def local_gbfs(feed: FeedServer, version: str = "2.3") -> None:
    """A discovery document whose feeds point at the fixture files on this server."""
    src = V23 if version == "2.3" else V30
    feeds = [
        {"name": name, "url": f"{feed.url}/{version}/{name}.json"}
        for name in ("station_information", "station_status")
    ]
    data = {"en": {"feeds": feeds}} if version == "2.3" else {"feeds": feeds}
    feed.routes[f"/{version}/gbfs.json"] = orjson.dumps(
        {"last_updated": 1751437263, "ttl": 60, "version": version, "data": data}
    )
    for name in ("station_information", "station_status"):
        feed.routes[f"/{version}/{name}.json"] = (src / f"{name}.json").read_bytes()


def client(feed: FeedServer, path: str, **kwargs: object) -> GbfsClient:
    kwargs.setdefault("clock", FixedClock(T0))
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("timeout", 5.0)
    return GbfsClient(feed.url + path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("source", [V23, V30], ids=["v2.3", "v3.0"])
def test_discovery_over_http_fixtures(feed: FeedServer, source: Path) -> None:
    raw = orjson.loads((source / "gbfs.json").read_bytes())
    feed.routes["/gbfs.json"] = (source / "gbfs.json").read_bytes()
    with client(feed, "/gbfs.json") as gbfs:
        found = gbfs.discover()
    feeds = raw["data"]["en"]["feeds"] if "en" in raw["data"] else raw["data"]["feeds"]
    assert found.feeds == {f["name"]: f["url"] for f in feeds}
    assert found.version == raw["version"]
    assert not found.direct


def test_discovery_prefers_english_else_first_language(feed: FeedServer) -> None:
    doc = {
        "last_updated": 1751437263,
        "ttl": 0,
        "version": "2.3",
        "data": {
            "fr": {"feeds": [{"name": "station_status", "url": "http://x/fr"}]},
            "de": {"feeds": [{"name": "station_status", "url": "http://x/de"}]},
        },
    }
    feed.routes["/gbfs.json"] = orjson.dumps(doc)
    with client(feed, "/gbfs.json") as gbfs:
        found = gbfs.discover()
    assert (found.language, found.feeds["station_status"]) == ("fr", "http://x/fr")


@pytest.mark.parametrize("version", ["2.3", "3.0"])
def test_fetch_and_conditional_requests(feed: FeedServer, version: str) -> None:
    local_gbfs(feed, version)
    with client(feed, f"/{version}/gbfs.json") as gbfs:
        first = gbfs.fetch("station_status")
        assert isinstance(first, Fetched)
        assert first.status == 200 and first.version == version
        assert first.ingested_at == T0
        assert first.last_updated is not None and first.last_updated.tzinfo is not None
        assert first.ttl == orjson.loads(first.payload)["ttl"]
        assert gbfs.fetch("station_status") is None  # 304
        second = feed.hits(f"/{version}/station_status.json")[-1]
        assert second.status == 304 and second.headers["If-None-Match"].startswith('"')
        assert second.headers["If-Modified-Since"] == "Wed, 01 May 2024 12:00:00 GMT"
        feed.routes[f"/{version}/station_status.json"] = first.payload + b" "
        assert gbfs.fetch("station_status") is not None  # changed → 200
        with pytest.raises(NotFoundError, match="vehicle_status"):
            gbfs.fetch("vehicle_status")


def test_direct_station_status_url(feed: FeedServer) -> None:
    feed.routes["/status.json"] = (V30 / "station_status.json").read_bytes()
    with client(feed, "/status.json") as gbfs:
        found = gbfs.discover()
        assert found.direct and found.feeds == {"station_status": feed.url + "/status.json"}
        assert found.version == "3.0"
        got = list(gbfs.poll(until=lambda: len(feed.hits("/status.json")) >= 3))
    assert len(got) == 1  # discovery, one 200, then 304s
    assert [r.status for r in feed.hits("/status.json")] == [200, 200, 304]


def status_doc(ttl: int) -> Callable[[], bytes]:
    def render() -> bytes:
        now = int(time.time())
        station = {
            "station_id": "a",
            "num_bikes_available": 1,
            "num_docks_available": 1,
            "is_installed": True,
            "is_renting": True,
            "is_returning": True,
            "last_reported": now,
        }
        body = {"last_updated": now, "ttl": ttl, "version": "2.3", "data": {"stations": [station]}}
        return orjson.dumps(body)

    return render


def test_poll_respects_ttl_per_feed(feed: FeedServer) -> None:
    local_gbfs(feed)
    feed.routes["/2.3/station_status.json"] = status_doc(ttl=1)
    info = orjson.loads((V23 / "station_information.json").read_bytes())
    info["ttl"], info["last_updated"] = 60, int(time.time())
    feed.routes["/2.3/station_information.json"] = orjson.dumps(info)
    deadline = time.monotonic() + 2.4
    with client(feed, "/2.3/gbfs.json", clock=SystemClock()) as gbfs:
        got = list(gbfs.poll(until=lambda: time.monotonic() > deadline))
    status = feed.hits("/2.3/station_status.json")
    assert len(feed.hits("/2.3/station_information.json")) == 1  # ttl 60: fetched once
    assert 2 <= len(status) <= 4
    assert [f.name for f in got].count("station_information") == 1
    fetched = [f for f in got if f.name == "station_status"]
    assert len(fetched) >= 2
    for before, after in itertools.pairwise(fetched):
        assert before.last_updated is not None and before.ttl == 1
        # the next fetch waits for the data to expire: last_updated + ttl
        assert after.ingested_at >= before.last_updated + timedelta(seconds=1)
        assert after.ingested_at - before.ingested_at < timedelta(seconds=1.5)


def test_ttl_zero_polls_at_min_interval(feed: FeedServer) -> None:
    local_gbfs(feed)  # the fixture documents have ttl 0
    deadline = time.monotonic() + 0.6
    with client(feed, "/2.3/gbfs.json", min_interval=0.1) as gbfs:
        got = list(gbfs.poll(("station_status",), until=lambda: time.monotonic() > deadline))
    hits = feed.hits("/2.3/station_status.json")
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    assert 3 <= len(hits) <= 8 and all(gap >= 0.09 for gap in gaps), gaps
    assert len(got) == 1  # the body never changes: the rest are 304


def test_backoff_on_503_then_recovery(feed: FeedServer) -> None:
    local_gbfs(feed)
    with client(feed, "/2.3/gbfs.json") as gbfs:
        gbfs.discover()
        feed.fail_next = [(503, None), (503, None), (429, "0.3"), (500, None)]
        started = time.monotonic()
        fetched = next(iter(gbfs.poll(("station_status",), until=lambda: False)))
        elapsed = time.monotonic() - started
        assert fetched.status == 200
        assert gbfs.errors == 4
    statuses = [r.status for r in feed.hits("/2.3/station_status.json")]
    assert statuses == [503, 503, 429, 500, 200]
    assert elapsed >= 0.3  # Retry-After honoured


def test_source_error_after_repeated_failures(feed: FeedServer) -> None:
    local_gbfs(feed)
    with client(feed, "/2.3/gbfs.json", max_failures=3) as gbfs:
        gbfs.discover()
        feed.always_fail = 503
        with pytest.raises(SourceError) as info:
            list(gbfs.poll(("station_status",), until=lambda: False))
    message = str(info.value)
    assert "failed 3 times in a row" in message and "503" in message and "\n" not in message
    assert isinstance(info.value.__cause__, FeedHTTPError)


def test_connection_errors_become_source_errors(feed: FeedServer) -> None:
    # a port nobody listens on: take a free one from the OS, then close it
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    gbfs = GbfsClient(
        f"http://127.0.0.1:{port}/gbfs.json",
        clock=FixedClock(T0),
        backoff_base=0.01,
        max_failures=2,
    )
    with gbfs:
        with pytest.raises(SourceError) as info:
            gbfs.discover()
        assert info.value.reason == "connection"
        with pytest.raises(SourceError, match="discovery failed 2 times in a row"):
            list(gbfs.poll(until=lambda: False))


def test_not_found_is_not_retried(feed: FeedServer) -> None:
    local_gbfs(feed)
    del feed.routes["/2.3/station_status.json"]
    with client(feed, "/2.3/gbfs.json") as gbfs, pytest.raises(FeedHTTPError) as info:
        list(gbfs.poll(("station_status",), until=lambda: False))
    assert info.value.status == 404
    assert len(feed.hits("/2.3/station_status.json")) == 1


def test_feed_clock_header_and_date_fallback(feed: FeedServer) -> None:
    local_gbfs(feed)
    feed.clock_header = "2030-01-01T00:00:00.123456Z"
    with client(feed, "/2.3/gbfs.json", clock_source="feed") as gbfs:
        fetched = gbfs.fetch("station_status")
        assert fetched is not None
        assert fetched.ingested_at == datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
        feed.clock_header = None
        feed.routes["/2.3/station_status.json"] = (V23 / "station_status.json").read_bytes() + b"\n"
        fetched = gbfs.fetch("station_status")
        assert fetched is not None  # no header: the HTTP Date header
        assert abs(fetched.ingested_at - datetime.now(UTC)) < timedelta(seconds=5)
    feed.clock_header = "2030-01-01T00:00:00Z"
    with client(feed, "/2.3/gbfs.json", clock_source="local") as gbfs:
        fetched = gbfs.fetch("station_status")
        assert fetched is not None and fetched.ingested_at == T0


def test_feed_clock_mode_counts_ttl_in_real_seconds(feed: FeedServer) -> None:
    # a simulator running 60x: its clock is far from ours, its ttl is in real seconds
    local_gbfs(feed)
    feed.routes["/2.3/station_status.json"] = status_doc(ttl=1)
    feed.clock_header = "2030-01-01T00:00:00Z"
    deadline = time.monotonic() + 1.5
    with client(feed, "/2.3/gbfs.json", clock_source="feed") as gbfs:
        got = list(gbfs.poll(("station_status",), until=lambda: time.monotonic() > deadline))
    hits = feed.hits("/2.3/station_status.json")
    assert len(hits) == 2 and hits[1].at - hits[0].at >= 0.95
    assert all(f.ingested_at == datetime(2030, 1, 1, tzinfo=UTC) for f in got)
