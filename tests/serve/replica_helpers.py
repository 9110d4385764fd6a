"""Serving replicas behind nginx, for the replica test and benchmark: a served data dir whose
online store is Redis, ``dockline serve`` processes over it, nginx in a private prefix, and
redis-server on a free port.

Everything runs as real processes on 127.0.0.1; nothing here needs root except that nginx's
workers run as ``root`` when the caller is root (else as the caller).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from dockline.core.contracts import GateVerdict

REPO = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "dockline.conf"
DOCKLINE = Path(sys.executable).parent / "dockline"
MODEL = "main"
PLACEHOLDER = re.compile(r"\$\{(DOCKLINE_[A-Z_]+)\}")
ADMIN_TOKEN = "replica-secret"
START = datetime(2026, 5, 4, tzinfo=UTC)  # the simulated day (any past day)
NGINX_HINT = "nginx is not installed: apt-get install nginx (or `make servers`)"
REDIS_HINT = "redis-server is not installed: apt-get install redis-server (or `make servers`)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout} s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server on a free port (no persistence); yields its URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


def _verdict() -> GateVerdict:
    return GateVerdict(
        passed=True, primary_metric="pr_auc", higher_is_better=True, value=0.5, margin=0.0,
        ece=0.01, max_ece=0.05,
    )  # fmt: skip


@dataclass
class ServedDir:
    """A data dir with Redis as its online store, materialized vectors and a champion."""

    root: Path
    entities: list[str]
    bundles: list[Path]

    def register_and_promote(self, bundle: Path) -> int:
        """Register ``bundle`` as a new version and move ``champion`` to it (as a trainer in
        another process would); returns the version."""
        from dockline.core.config import DataDir
        from dockline.train.registry import MlflowRegistry

        registry = MlflowRegistry.for_data_dir(DataDir(self.root))
        version = registry.register(MODEL, bundle, run_id=None, gate=_verdict()).version
        registry.set_alias(
            MODEL, "champion", version, actor="test", reason="replicas", action="promote"
        )
        return version


def build_served_dir(
    root: Path, redis_url: str, *, stations: int = 20, days: float = 0.1, poll: str = "0.5s"
) -> ServedDir:
    """Simulate a city's archive, ingest, sink and materialize it into Redis, and register
    two bundles on the data's plan (the first is champion)."""
    import pyarrow.parquet as pq
    from serve_helpers import make_bundle

    from dockline.pipeline.features import load_plan, materialize
    from dockline.pipeline.ingest import ingest_archive, sink_offline
    from dockline.pipeline.platform import Platform
    from dockline.sim import CityConfig, write_archive

    write_archive(CityConfig(stations=stations, seed=3, start=START), days, root / "archive")
    data = root / "data"
    data.mkdir(parents=True)
    namespace = f"replicas-{os.getpid()}-{time.monotonic_ns()}"
    (data / "dockline.toml").write_text(
        f'[online]\nkind = "redis"\nurl = "{redis_url}"\nnamespace = "{namespace}"\n'
        f'[serve]\nmodel_name = "{MODEL}"\nreload_poll = "{poll}"\n'
        'prediction_flush_interval = "1s"\n'
        '[clock]\nkind = "data"\n'
    )
    platform = Platform.open(data)
    ingest_archive(platform, root / "archive", source="archive:replicas").check_accounting()
    sink_offline(platform)
    materialize(platform)
    plan = load_plan(platform)
    names = [
        n
        for n in plan.feature_names
        if (n.endswith("__last") and "is_" not in n) or n in ("hour_of_day", "day_of_week")
    ]
    staging = root / "staging"
    bundles = [
        make_bundle(staging, seed, baseline=False, features=names, plan_hash=plan.hash).path
        for seed in range(3)
    ]
    entities = sorted(
        pq.read_table(root / "archive" / "station_information.parquet")
        .column("station_id")
        .to_pylist()
    )
    served = ServedDir(data, entities, bundles)
    served.register_and_promote(bundles[0])
    return served


@dataclass
class Replica:
    """One ``dockline serve`` process."""

    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGTERM: uvicorn finishes the requests in flight, then exits."""
        _stop(self.proc)


@contextmanager
def replicas(served: ServedDir, n: int, logs: Path) -> Iterator[list[Replica]]:
    """``n`` separate ``dockline serve`` processes over ``served`` (started together)."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DOCKLINE_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": str(REPO / "src")}
    started: list[Replica] = []
    try:
        for i in range(n):
            port = free_port()
            # each replica its own deployment id: its own metrics windows
            own = {**env, "DOCKLINE_DEPLOYMENT_ID": f"replica-{i}"}
            with (logs / f"replica{i}.log").open("wb") as log:
                proc = subprocess.Popen(
                    [str(DOCKLINE), "--data-dir", str(served.root), "serve", "--port", str(port)],
                    stdout=log, stderr=subprocess.STDOUT, env=own,
                )  # fmt: skip
            started.append(Replica(f"http://127.0.0.1:{port}", proc))
        for i, r in enumerate(started):
            _wait(f"{r.url}/health", r.proc, f"replica {i} (log {logs}/replica{i}.log)", 180)
        yield started
    finally:
        for r in started:
            r.stop()


def render_nginx(prefix: Path, listen: int, upstreams: list[str]) -> str:
    """``deploy/nginx/dockline.conf`` filled in for a private prefix and these replicas."""
    servers = "\n        ".join(
        f"server {u.removeprefix('http://')} max_fails=2 fail_timeout=2s;" for u in upstreams
    )
    values = {
        "DOCKLINE_NGINX_PREFIX": str(prefix),
        "DOCKLINE_LISTEN": f"127.0.0.1:{listen}",
        "DOCKLINE_UPSTREAMS": servers,
        # as root, nginx would switch its workers to `nobody`, who cannot write the prefix
        "DOCKLINE_USER": "user root;" if os.geteuid() == 0 else "",
    }
    # Only ${DOCKLINE_*}: nginx's own $variables (and the comments) stay as they are.
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], NGINX_TEMPLATE.read_text())


@contextmanager
def nginx(prefix: Path, upstreams: list[str]) -> Iterator[str]:
    """nginx (not a daemon) in ``prefix`` balancing ``upstreams``; yields its URL."""
    binary = nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx(prefix, port, upstreams))
    (prefix / "logs").mkdir(exist_ok=True)  # nginx opens <prefix>/logs/error.log before the conf
    pid = f"daemon off; pid {prefix}/nginx.pid;"
    args = [binary, "-p", str(prefix), "-c", str(conf), "-g", pid]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the config: {check.stderr}")
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}/health", proc, f"nginx (log {prefix}/error.log)", timeout=20)
        yield url
    finally:
        _stop(proc)


def nginx_binary() -> str:
    """nginx on PATH, else Debian's /usr/sbin/nginx (not on a non-root user's PATH)."""
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available() -> bool:
    return Path(nginx_binary()).exists()
