"""Event log backends (:class:`~dockline.core.ports.EventLog`)."""

from dockline.store.log.sqlite import SqliteEventLog

__all__ = ["SqliteEventLog"]
