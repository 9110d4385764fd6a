"""A serving process for a test to kill: the session's store and registry, a fixed clock, and
a prediction log that is never flushed on its own. Prints its URL, then serves until killed.

    python serve_child.py WORLD_DATA_DIR OUTPUT_DATA_DIR
"""

from __future__ import annotations

import sys
import time

from serve_helpers import T0, Server

from dockline.core.config import DataDir, ServeConfig
from dockline.core.time import FixedClock
from dockline.serve import create_app
from dockline.store import SqliteOnlineStore
from dockline.train.registry import MlflowRegistry


def main(world_root: str, out_root: str) -> None:
    world = DataDir(world_root)
    app = create_app(
        store=SqliteOnlineStore(world.online_sqlite),
        registry=MlflowRegistry.for_data_dir(world),
        model_name="main",
        config=ServeConfig(
            reload_poll="1h", prediction_flush_interval="1h", prediction_flush_rows=100_000
        ),
        data_dir=DataDir(out_root),
        clock=FixedClock(T0),
    )
    server = Server(app)
    print(server.url, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
