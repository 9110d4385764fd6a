"""Hostile clients over real sockets: chunked floods, half-sent requests, hangs-up, bad HTTP,
hostile JSON; the admin token, /ready's answer and the offline /docs."""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from serve_helpers import FRESH, MODEL_FEATURES, T0, ServeFactory, Server, World

from dockline.core.config import DataDir, ServeConfig
from dockline.core.errors import ConfigError
from dockline.core.time import FixedClock
from dockline.serve import ADMIN_TOKEN_ENV, create_app
from dockline.store import SqliteOnlineStore


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (headers + Content-Length body) from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _metric(server: Server, needle: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(re.escape(needle) + r" ([0-9.e+]+)", text)
    return float(match.group(1)) if match else 0.0


def test_an_empty_admin_token_is_refused_at_startup(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(token: str | None, configured: str | None) -> object:
        return create_app(
            store=world.store,
            registry=world.registry,
            model_name="main",
            config=ServeConfig(admin_token=configured),
            data_dir=DataDir(tmp_path),
            admin_token=token,
        )

    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match="must not be empty") as caught:
        build(None, "")
    assert caught.value.where == "serve.admin_token"
    with pytest.raises(ConfigError, match="must not be empty"):
        build("  ", None)
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "")
    with pytest.raises(ConfigError, match=ADMIN_TOKEN_ENV):
        build(None, "configured-secret")
    monkeypatch.delenv(ADMIN_TOKEN_ENV)
    build(None, None)  # no token at all: admin endpoints closed, the app starts


def test_ready_answers_a_reason_never_exception_text(world: World, tmp_path: Path) -> None:
    empty = SqliteOnlineStore(tmp_path / "empty.sqlite")  # the group was never registered
    app = create_app(
        store=empty,
        registry=world.registry,
        model_name="never-registered",
        config=ServeConfig(reload_poll="1h"),
        data_dir=DataDir(tmp_path / "out"),
        clock=FixedClock(T0),
    )
    with Server(app) as server:
        r = httpx.get(f"{server.url}/ready")
    empty.close()
    assert r.status_code == 503
    body = r.json()
    assert body["reason"] == "no_model"
    assert body["checks"]["store"] == {"ok": False, "reason": "store_unavailable"}
    assert "register" not in r.text and "error" not in body["checks"]["store"]


def test_a_chunked_upload_hits_the_size_limit_while_it_streams(serve: ServeFactory) -> None:
    server, _ = serve()
    sock = _connect(server.url)
    sock.sendall(
        b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = 0
    answered = False
    try:
        while sent < 64 * 1024 * 1024:  # 64 MB: a server reading it whole answers only at the end
            sock.sendall(chunk)
            sent += 65536
            if select.select([sock], [], [], 0)[0]:
                answered = True
                break
    except (BrokenPipeError, ConnectionResetError):
        answered = True  # the server answered and closed while we were still sending
    assert answered, "the server waited for the whole chunked body"
    assert sent < 4 * 1024 * 1024, f"answered only after {sent} bytes"
    status, headers, body = _response(sock)
    sock.close()
    assert status == 413
    assert json.loads(body)["reason"] == "body_too_large"
    assert headers["connection"] == "close"


@pytest.mark.slow
def test_half_sent_requests_are_timed_out_and_never_starve_new_ones(serve: ServeFactory) -> None:
    server, _ = serve(request_timeout="1s")
    stuck = []
    for i in range(200):
        sock = _connect(server.url)
        if i % 2:  # half the headers
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-")
        else:  # all the headers, part of the body
            sock.sendall(
                b'POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"ent'
            )
        stuck.append(sock)
    r = httpx.post(f"{server.url}/v1/predict", json={"entity": FRESH[1]}, timeout=5)
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    statuses: list[int] = []
    for sock in stuck:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = sock.recv(65536)  # the server answers 408 and closes, or just closes
        assert time.monotonic() < deadline, "a half-sent request was never timed out"
        if data:
            statuses.append(int(data.split()[1]))
            assert b'"reason":"' in data
        sock.close()
    assert set(statuses) == {408}, statuses
    r = httpx.post(f"{server.url}/v1/predict", json={"entity": FRESH[1]}, timeout=5)
    assert r.status_code == 200

    # A route that answers without reading the body: the connection is still closed when the
    # rest of the body never comes.
    dripping = []
    for _ in range(20):
        sock = _connect(server.url)
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        dripping.append(sock)
    deadline = time.monotonic() + 10
    for sock in dripping:
        received = b""
        while chunk := _recv_until_closed(sock, deadline):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received[:40]
        sock.close()


def _recv_until_closed(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    data = sock.recv(65536)
    assert data or time.monotonic() < deadline, "the connection was never closed"
    return data


def test_hostile_json_answers_4xx_with_a_reason(serve: ServeFactory) -> None:
    server, _ = serve()
    deep = b"[" * 1000 + b"]" * 1000
    bodies = {
        b'{"entity": "s001", "features": {"f0": 1e999}}': ("invalid_value", "features.f0"),
        b'{"entity": "s001", "features": {"f0": 1e300}}': ("invalid_value", "features.f0"),
        b'{"entity": "s001", "features": {"f0": ' + deep + b"}}": ("invalid_type", "features"),
        b'{"entity": "s001", "features": ' + deep + b"}": ("invalid_type", "features"),
        b'{"entity": ' + deep + b"}": ("invalid_type", "entity"),
    }
    with httpx.Client(base_url=server.url) as client:
        for body, (reason, field) in bodies.items():
            r = client.post(
                "/v1/predict", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422, (body[:60], r.text)
            assert r.json()["reason"] == reason and r.json()["field"] == field, r.text
        assert _metric(server, 'outcome="internal_error"}') == 0


def test_a_client_that_hangs_up_mid_body_is_not_an_internal_error(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = serve()
    caplog.set_level(logging.INFO)
    for _ in range(3):
        sock = _connect(server.url)
        sock.sendall(
            b'POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{"entity"'
        )
        time.sleep(0.05)
        sock.close()
    deadline = time.monotonic() + 5
    needle = 'dockline_serve_requests_total{endpoint="/v1/predict",outcome="client_disconnected"}'
    while _metric(server, needle) < 3:
        assert time.monotonic() < deadline, "the hang-ups were not counted"
        time.sleep(0.05)
    assert _metric(server, 'outcome="internal_error"}') == 0
    assert not [r for r in caplog.records if r.exc_info], "a hang-up was logged with a traceback"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    ],
)
def test_protocol_errors_answer_a_json_reason(serve: ServeFactory, raw: bytes) -> None:
    server, _ = serve()
    sock = _connect(server.url)
    sock.sendall(raw)
    status, headers, body = _response(sock)
    sock.close()
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["reason"] == "bad_request"


def test_docs_work_offline_with_examples_and_unknown_features_list_valid_names(
    serve: ServeFactory,
) -> None:
    server, _ = serve()
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and not [a for a in assets if "//" in a], assets  # nothing from a CDN
        for asset in assets:
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 100, asset
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
        redoc = client.get("/redoc")
        assert redoc.status_code == 200 and "fonts.googleapis" not in redoc.text

        spec = client.get("/openapi.json").json()
        media = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
        examples = media["examples"]
        assert examples["stored"]["value"] == {"entity": "station-42"}
        batch = spec["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]
        assert batch["application/json"]["examples"]["stations"]["value"]["entities"]

        r = client.post("/v1/predict", json={"entity": "s001", "features": {"fill_ratio": 1}})
        assert r.status_code == 422 and r.json()["reason"] == "unknown_feature"
        assert all(name in r.json()["message"] for name in MODEL_FEATURES)
