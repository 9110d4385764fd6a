"""dockline.store: the embedded event log, the dead-letter store, the offline Parquet store and
the online stores.

Backends for the ports in :mod:`dockline.core.ports`; each passes the shared contract tests in
``tests/store/contract_*.py``. ``RedisOnlineStore`` needs the ``redis`` extra and is imported on
first access (``dockline.store.RedisOnlineStore`` or ``dockline.store.online.redis``), so this
package imports without redis installed.
"""

from typing import TYPE_CHECKING

from dockline.store.deadletters import SqliteDeadLetterStore
from dockline.store.log.sqlite import SqliteEventLog
from dockline.store.offline import (
    AGGREGATE_1MIN,
    AGGREGATE_1MIN_SCHEMA,
    OfflineSink,
    OfflineStore,
    SinkReport,
)
from dockline.store.online.sqlite import SqliteOnlineStore

if TYPE_CHECKING:
    from dockline.store.online.redis import RedisOnlineStore as RedisOnlineStore
else:

    def __getattr__(name: str) -> object:
        # Lazy, so `pip install dockline` (without the redis extra) can import this package.
        if name == "RedisOnlineStore":
            from dockline.store.online.redis import RedisOnlineStore

            return RedisOnlineStore
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# RedisOnlineStore stays out of __all__: `from dockline.store import *` must not need redis.
__all__ = [
    "AGGREGATE_1MIN",
    "AGGREGATE_1MIN_SCHEMA",
    "OfflineSink",
    "OfflineStore",
    "SinkReport",
    "SqliteDeadLetterStore",
    "SqliteEventLog",
    "SqliteOnlineStore",
]
