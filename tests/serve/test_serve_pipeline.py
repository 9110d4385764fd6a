"""The product wiring: ``run_server`` from a data directory, two worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import World


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_run_server_serves_the_data_directory_with_two_workers(world: World) -> None:
    world.data.config_file.write_text('[serve]\nmodel_name = "main"\nreload_poll = "1h"\n')
    port = _free_port()
    code = (
        "from dockline.pipeline.platform import Platform\n"
        "from dockline.pipeline.serve import run_server\n"
        f"run_server(Platform.open({str(world.data.root)!r}), '127.0.0.1', {port}, workers=2)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        ids = set()
        for _ in range(40):
            r = httpx.post(f"{url}/v1/predict", json={"entity": "s001"}, timeout=5)
            assert r.status_code == 200 and r.json()["model"]["name"] == "main"
            ids.add(r.json()["request_id"].split("-")[0])  # the worker's process id
        assert len(ids) >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        world.data.config_file.unlink()
