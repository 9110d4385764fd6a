"""Online store backends (:class:`~dockline.core.ports.OnlineStore`).

:class:`SqliteOnlineStore` is the embedded default. ``RedisOnlineStore`` needs the ``redis``
extra (``pip install 'dockline[redis]'``); it is imported on first access, so this package
imports without redis installed: ``from dockline.store.online.redis import RedisOnlineStore``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dockline.store.online.sqlite import SqliteOnlineStore

if TYPE_CHECKING:
    from dockline.store.online.redis import RedisOnlineStore as RedisOnlineStore
else:

    def __getattr__(name: str) -> object:
        # Lazy, so `import dockline.store` never needs the optional redis package.
        if name == "RedisOnlineStore":
            from dockline.store.online.redis import RedisOnlineStore

            return RedisOnlineStore
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# RedisOnlineStore is left out of __all__ so `from dockline.store.online import *` never
# imports the optional redis package.
__all__ = ["SqliteOnlineStore"]
