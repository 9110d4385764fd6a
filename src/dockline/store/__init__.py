"""dockline.store: the embedded event log, the dead-letter store and the offline Parquet store.

Backends for the ports in :mod:`dockline.core.ports`; each passes the shared contract tests in
``tests/store/contract_*.py``.
"""

from dockline.store.deadletters import SqliteDeadLetterStore
from dockline.store.log.sqlite import SqliteEventLog
from dockline.store.offline import (
    AGGREGATE_1MIN,
    AGGREGATE_1MIN_SCHEMA,
    OfflineSink,
    OfflineStore,
    SinkReport,
)

__all__ = [
    "AGGREGATE_1MIN",
    "AGGREGATE_1MIN_SCHEMA",
    "OfflineSink",
    "OfflineStore",
    "SinkReport",
    "SqliteDeadLetterStore",
    "SqliteEventLog",
]
