"""The GBFS feed client: auto-discovery, conditional GETs and a ttl-aware polling loop.

All I/O of feed ingestion lives here; parsing and validation stay in :mod:`normalize`. httpx
errors are translated into :class:`~dockline.core.errors.SourceError` at this edge.

>>> from dockline.core.time import SystemClock
>>> client = GbfsClient("http://127.0.0.1:8000/gbfs.json", clock=SystemClock())  # doctest: +SKIP
>>> for fetched in client.poll(until=lambda: False):  # doctest: +SKIP
...     print(fetched.name, fetched.status, len(fetched.payload))
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import msgspec
import orjson

from dockline.core.errors import NotFoundError, SourceError
from dockline.core.time import Clock, ensure_utc
from dockline.ingest._time import parse_timestamp_or_none

__all__ = [
    "CLOCK_HEADER",
    "DEFAULT_USER_AGENT",
    "SIMULATED_CLOCK_FIELD",
    "ClockSource",
    "Discovery",
    "FeedHTTPError",
    "Fetched",
    "GbfsClient",
    "parse_discovery",
]

DEFAULT_USER_AGENT = "dockline-ingest/0.1 (+https://github.com/dockline)"
CLOCK_HEADER = "X-Dockline-Clock"
SIMULATED_CLOCK_FIELD = "dockline_simulated_clock"
"""Top-level ``gbfs.json`` field by which a feed announces that its clock is simulated."""

ClockSource = Literal["local", "feed", "auto"]


class FeedHTTPError(SourceError):
    """A feed answered with an error status; ``retryable`` for 5xx and 429."""

    def __init__(self, message: str, *, status: int, retry_after: float | None, where: str):
        super().__init__(message, reason=f"http_{status}", where=where)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """5xx and 429 are worth retrying; other 4xx mean the request itself is wrong."""
        return self.status >= 500 or self.status == 429


@dataclass(frozen=True)
class Discovery:
    """The feeds a system publishes: ``{name: url}``, its GBFS version and language."""

    url: str
    feeds: dict[str, str]
    version: str | None
    language: str | None = None
    direct: bool = False  # the URL pointed at a feed itself, not at gbfs.json
    simulated_clock: bool = False  # gbfs.json says its times are a simulator's, not the wall's


@dataclass(frozen=True)
class Fetched:
    """One successful (200) response of a feed."""

    name: str
    url: str
    payload: bytes
    ingested_at: datetime
    status: int
    last_updated: datetime | None
    ttl: int | None
    version: str | None


class _Head(msgspec.Struct):
    """The top-level fields of a GBFS document; msgspec skips ``data`` without building it."""

    last_updated: Any = None
    ttl: Any = None
    version: Any = None


_HEAD_DECODER = msgspec.json.Decoder(_Head)


def _head(payload: bytes) -> _Head:
    try:
        return _HEAD_DECODER.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        # RecursionError: a hostile, deeply nested document; the normalizer dead-letters it
        return _Head()


@dataclass
class _Validators:
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class _Schedule:
    due: float = 0.0  # time.monotonic() of the next fetch
    failures: int = 0
    ttl: int | None = None  # the feed's last announced ttl


class GbfsClient:
    """Reads a GBFS system over HTTP (any version 1.x–3.0).

    ``clock_source="feed"`` takes ``ingested_at`` from the response header ``X-Dockline-Clock``
    (our simulator's clock) or else the HTTP ``Date`` header, so a simulated city running faster
    than real time keeps consistent times; ``"local"`` uses ``clock.now()``; ``"auto"`` follows
    the feed's clock when the feed says it is simulated (``gbfs.json`` has
    ``"dockline_simulated_clock": true``, or responses carry ``X-Dockline-Clock``), else local.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        clock_source: ClockSource = "local",
        user_agent: str = DEFAULT_USER_AGENT,
        min_interval: float = 0.05,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        max_failures: int = 5,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.clock = clock
        self.clock_source = clock_source
        self.min_interval = min_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_failures = max_failures
        self.errors = 0
        """Failed requests so far (connection errors and error statuses)."""
        self.requests = 0
        """Requests sent so far."""
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._http = httpx.Client(
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            follow_redirects=True,
        )
        self._discovery: Discovery | None = None
        self._simulated = False  # "auto": a response carried the simulator's clock header
        self._validators: dict[str, _Validators] = {}

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> GbfsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- HTTP ---------------------------------------------------------------------------------

    def _get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        self.requests += 1
        try:
            response = self._http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            self.errors += 1
            raise SourceError(
                f"GET failed: {type(exc).__name__}: {exc}", reason="connection", where=url
            ) from exc
        if response.status_code >= 400:
            self.errors += 1
            raise FeedHTTPError(
                f"GET answered {response.status_code} {response.reason_phrase}",
                status=response.status_code,
                retry_after=_retry_after(response.headers.get("Retry-After")),
                where=url,
            )
        return response

    @property
    def follows_feed_clock(self) -> bool:
        """Whether ``ingested_at`` comes from the feed's clock (see ``clock_source``)."""
        if self.clock_source == "auto":
            return self._simulated or (
                self._discovery is not None and self._discovery.simulated_clock
            )
        return self.clock_source == "feed"

    def _ingested_at(self, response: httpx.Response) -> datetime:
        if self.clock_source == "auto" and response.headers.get(CLOCK_HEADER):
            self._simulated = True
        if self.follows_feed_clock:
            header = response.headers.get(CLOCK_HEADER)
            if header:
                parsed = parse_timestamp_or_none(header)
                if parsed is not None:
                    return parsed
            date = response.headers.get("Date")
            if date:
                try:
                    return ensure_utc(parsedate_to_datetime(date))
                except (TypeError, ValueError):
                    pass
        return ensure_utc(self.clock.now())

    # ---- discovery ----------------------------------------------------------------------------

    def discover(self) -> Discovery:
        """Fetch the auto-discovery document (or detect that the URL is a feed itself)."""
        response = self._get(self.url)
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise SourceError(
                f"discovery document is not JSON: {exc}", reason="malformed", where=self.url
            ) from exc
        self._discovery = parse_discovery(doc, self.url)
        return self._discovery

    @property
    def discovery(self) -> Discovery:
        """The discovery result, fetched on first use."""
        return self._discovery if self._discovery is not None else self.discover()

    # ---- fetch --------------------------------------------------------------------------------

    def fetch(self, name: str) -> Fetched | None:
        """GET feed ``name`` conditionally; ``None`` when the server answers 304 Not Modified."""
        feeds = self.discovery.feeds
        if name not in feeds:
            raise NotFoundError(
                f"feed {name!r} is not published; available: {sorted(feeds)}", where=self.url
            )
        url = feeds[name]
        validators = self._validators.setdefault(url, _Validators())
        headers = {}
        if validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        response = self._get(url, headers)
        if response.status_code == 304:
            return None
        validators.etag = response.headers.get("ETag") or validators.etag
        validators.last_modified = response.headers.get("Last-Modified") or validators.last_modified
        payload = response.content
        head = _head(payload)
        ttl = head.ttl if type(head.ttl) is int and head.ttl >= 0 else None
        return Fetched(
            name=name,
            url=url,
            payload=payload,
            ingested_at=self._ingested_at(response),
            status=response.status_code,
            last_updated=parse_timestamp_or_none(head.last_updated),
            ttl=ttl,
            version=None if head.version is None else str(head.version),
        )

    # ---- polling ------------------------------------------------------------------------------

    def poll(
        self,
        names: Sequence[str] = ("station_information", "station_status"),
        *,
        until: Callable[[], bool],
    ) -> Iterator[Fetched]:
        """Fetch each feed whenever its data expires (``last_updated + ttl``) until ``until()``.

        Feeds the system does not publish are skipped (a direct ``station_status`` URL has only
        that one). Connection errors, 5xx and 429 back off exponentially with seeded jitter
        (honouring ``Retry-After``); after ``max_failures`` consecutive failures of a feed,
        :class:`SourceError` is raised.
        """
        discovery = self._discovery or self._with_retries(self.discover, until)
        if discovery is None:
            return
        wanted = [name for name in names if name in discovery.feeds]
        if not wanted:
            raise SourceError(
                f"none of the feeds {list(names)} is published; available:"
                f" {sorted(discovery.feeds)}",
                reason="no_feed",
                where=self.url,
            )
        schedule = {name: _Schedule() for name in wanted}
        while not until():
            name = min(wanted, key=lambda n: schedule[n].due)
            wait = schedule[name].due - time.monotonic()
            if wait > 0:
                self._sleep(min(wait, 0.25))  # wake up regularly to re-check until()
                continue
            slot = schedule[name]
            try:
                fetched = self.fetch(name)
            except SourceError as exc:
                if isinstance(exc, FeedHTTPError) and not exc.retryable:
                    raise
                slot.failures += 1
                if slot.failures >= self.max_failures:
                    raise SourceError(
                        f"feed {name} failed {slot.failures} times in a row; last error: "
                        f"{exc.message}",
                        reason="unavailable",
                        where=exc.where,
                    ) from exc
                retry_after = exc.retry_after if isinstance(exc, FeedHTTPError) else None
                slot.due = time.monotonic() + self._backoff(slot.failures, retry_after)
                continue
            slot.failures = 0
            if fetched is not None:
                slot.ttl = fetched.ttl
            slot.due = time.monotonic() + self._next_delay(fetched, slot.ttl)
            if fetched is not None:
                yield fetched

    def _next_delay(self, fetched: Fetched | None, last_ttl: int | None) -> float:
        """Seconds until the feed's data expires; never less than ``min_interval``."""
        if fetched is None or fetched.ttl is None:
            # 304 (the publication is late) or no ttl: look again soon, but not in a busy loop
            return max(self.min_interval, min(1.0, float(last_ttl if last_ttl is not None else 1)))
        ttl = float(fetched.ttl)
        if fetched.last_updated is None or self.follows_feed_clock:
            # a feed clock may run faster than real time (the simulator): its times cannot be
            # compared with the real seconds we sleep, so count the ttl from the response
            return max(self.min_interval, ttl)
        expires = fetched.last_updated + timedelta(seconds=ttl)
        remaining = (expires - fetched.ingested_at).total_seconds()
        # clock skew cannot push the next fetch beyond one ttl from now
        return max(self.min_interval, min(remaining, ttl))

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        delay: float = min(self.backoff_cap, self.backoff_base * 2.0 ** (failures - 1))
        delay *= self._rng.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _with_retries(
        self, call: Callable[[], Discovery], until: Callable[[], bool]
    ) -> Discovery | None:
        failures = 0
        while not until():
            try:
                return call()
            except SourceError as exc:
                if isinstance(exc, FeedHTTPError) and not exc.retryable:
                    raise
                failures += 1
                if failures >= self.max_failures:
                    raise SourceError(
                        f"discovery failed {failures} times in a row; last error: {exc.message}",
                        reason="unavailable",
                        where=exc.where,
                    ) from exc
                retry_after = exc.retry_after if isinstance(exc, FeedHTTPError) else None
                self._sleep(self._backoff(failures, retry_after))
        return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_FEED_KINDS = {
    "station_status": ("num_bikes_available", "num_vehicles_available", "num_docks_available"),
    "station_information": ("lat", "lon", "name"),
}


def parse_discovery(doc: Any, url: str) -> Discovery:
    """Interpret a ``gbfs.json`` (v1.x/v2.x per-language or v3.0 flat), or a feed document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise SourceError("not a GBFS document: no data object", reason="malformed", where=url)
    data = doc["data"]
    version = None if doc.get("version") is None else str(doc["version"])
    simulated = doc.get(SIMULATED_CLOCK_FIELD) is True
    stations = data.get("stations")
    if isinstance(stations, list):
        first = next((s for s in stations if isinstance(s, dict)), {})
        for kind, keys in _FEED_KINDS.items():
            if any(k in first for k in keys):
                return Discovery(url=url, feeds={kind: url}, version=version, direct=True)
        raise SourceError(
            "a feed document that is neither station_status nor station_information",
            reason="malformed",
            where=url,
        )
    language: str | None = None
    if isinstance(data.get("feeds"), list):
        feeds_list = data["feeds"]
    else:
        languages = [k for k, v in data.items() if isinstance(v, dict) and "feeds" in v]
        if not languages:
            raise SourceError(
                "discovery document has no feeds (data.feeds or data.<language>.feeds)",
                reason="malformed",
                where=url,
            )
        language = "en" if "en" in languages else languages[0]
        feeds_list = data[language]["feeds"]
    feeds: dict[str, str] = {}
    for item in feeds_list if isinstance(feeds_list, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            feed_url = item.get("url")
            if isinstance(feed_url, str):
                # the spec wants absolute URLs; relative ones resolve against gbfs.json
                feeds[item["name"]] = str(httpx.URL(url).join(feed_url))
    return Discovery(
        url=url, feeds=feeds, version=version, language=language, simulated_clock=simulated
    )
