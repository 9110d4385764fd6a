"""Fixtures for the serving tests: a real online store, real bundles in the real MLflow registry,
and uvicorn servers on 127.0.0.1 driven over HTTP.

One MLflow database serves the whole session (creating its tables takes seconds); tests that move
aliases use their own model names so they cannot disturb each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi import FastAPI
from serve_helpers import (
    FRESH,
    FRESH_AGE,
    GROUP,
    STALE,
    STALE_AGE,
    STORE_COLUMNS,
    T0,
    ServeFactory,
    Server,
    World,
    make_bundle,
    vector,
)

from dockline.core.config import DataDir, ServeConfig
from dockline.core.contracts import TS_TYPE
from dockline.core.time import FixedClock, to_micros
from dockline.serve import create_app
from dockline.store import SqliteOnlineStore
from dockline.train.registry import MlflowRegistry


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("serve-data")
    data = DataDir(root)
    store = SqliteOnlineStore(data.online_sqlite)
    store.register(GROUP, STORE_COLUMNS)
    for entities, age in ((FRESH, FRESH_AGE), (STALE, STALE_AGE)):
        rows = [vector(e) for e in entities]
        table = pa.table(
            {
                "station_id": entities,
                "as_of": pa.array([T0 - age] * len(entities), TS_TYPE),
                **{c: [r[c] for r in rows] for c in STORE_COLUMNS},
            }
        )
        store.write(GROUP, table, key="station_id", as_of="as_of", written_at_us=to_micros(T0))
    staging = tmp_path_factory.mktemp("staging")
    bundles = [make_bundle(staging, seed, baseline=seed == 0) for seed in range(2)]
    registry = MlflowRegistry.for_data_dir(data)
    w = World(data, store, registry, bundles, staging)
    for b in bundles:
        w.register("main", b)
    w.promote("main", 1)
    yield w
    store.close()


@pytest.fixture
def serve(world: World, tmp_path: Path) -> Iterator[ServeFactory]:
    """Start apps over the shared store and registry; each gets its own data dir for outputs."""
    servers: list[Server] = []

    def start(
        *,
        model: str = "main",
        clock: FixedClock | None = None,
        data: DataDir | None = None,
        token: str | None = "secret",
        **config: Any,
    ) -> tuple[Server, FastAPI]:
        settings = {"reload_poll": "1h", **config}
        app = create_app(
            store=world.store,
            registry=world.registry,
            model_name=model,
            config=ServeConfig(**settings),
            data_dir=data or DataDir(tmp_path / f"out{len(servers)}"),
            clock=clock or FixedClock(T0),
            admin_token=token,
        )
        server = Server(app)
        servers.append(server)
        return server, app

    yield start
    for server in servers:
        server.stop()
