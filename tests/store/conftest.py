"""Fixtures for the store tests: a real redis-server on 127.0.0.1, started by pytest-redis, and
a Tansu broker (Kafka wire protocol, in memory) on a free port.

Without ``redis-server`` (or Tansu) installed their tests skip and say how to install it —
except under ``CI=true``, where a missing server is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from pytest_redis import factories

INSTALL_HINT = "redis-server is not installed: apt-get install redis-server (or `make servers`)"

# A session-wide server on a random free port, bound to 127.0.0.1, stopped at session end.
online_redis_proc = factories.redis_proc(host="127.0.0.1", port=None)


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of the test redis-server (skips without one; fails instead under ``CI=true``)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{INSTALL_HINT}; under CI=true this is a failure", pytrace=False)
        pytest.skip(INSTALL_HINT)
    proc = request.getfixturevalue("online_redis_proc")
    return f"redis://{proc.host}:{proc.port}/0"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Tansu broker for the session (skips without the binary; fails
    instead under ``CI=true``)."""
    from tansu_broker import INSTALL_HINT as TANSU_HINT
    from tansu_broker import tansu, tansu_binary

    binary = tansu_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{TANSU_HINT}; under CI=true this is a failure", pytrace=False)
        pytest.skip(TANSU_HINT)
    with tansu(binary, tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
        yield bootstrap
