"""A private PostgreSQL cluster for tests: initdb into a temporary directory, logical WAL.

Debian installs the server binaries in ``/usr/lib/postgresql/<major>/bin`` (not on ``PATH``);
they are found by glob. PostgreSQL refuses to run as root, so under root the cluster is owned and
run by the ``postgres`` system user (the Debian package creates it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL with wal2json is not installed: apt-get install postgresql postgresql-15-wal2json"
    " (or `make servers`)"
)


@dataclass(frozen=True)
class PostgresServer:
    """A running test cluster: connect as superuser ``dockline`` (trust auth on 127.0.0.1)."""

    host: str
    port: int
    user: str = "dockline"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq key/value DSN."""
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (MLflow, Optuna)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def find_bindir() -> Path | None:
    """The newest installed server's bin directory with initdb, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def has_wal2json(bindir: Path) -> bool:
    """Whether the wal2json output plugin is installed for this server."""
    return bool(glob.glob(str(bindir.parent / "lib" / "wal2json.so")))


def _major(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except (ValueError, IndexError):
        return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_cluster(bindir: Path) -> Iterator[PostgresServer]:
    """initdb + pg_ctl start a cluster with ``wal_level=logical``; stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix="dockline-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        root.chmod(0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sockets, logfile = root / "data", root / "run", root / "server.log"
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "dockline",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        run("mkdir", "-p", str(sockets))
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets}"
            " -c wal_level=logical -c max_replication_slots=8 -c max_wal_senders=8"
            " -c fsync=off -c synchronous_commit=on -c max_connections=50 -c TimeZone=UTC"
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(logfile),
            "-o",
            options,
            "-w",
            "start",
        )
        server = PostgresServer("127.0.0.1", port)
        _wait(server)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


def _wait(server: PostgresServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((server.host, server.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
