"""dockline: turn a live event stream into decisions.

ingest → point-in-time-correct features → training → low-latency serving → monitoring →
decisions, on one laptop with embedded defaults (DuckDB, Parquet, SQLite); of the distributed
engines, only a Redis online store exists so far.

The packages by pipeline stage are ``dockline.sim``, ``dockline.ingest``, ``dockline.store``,
``features``, ``train``, ``serve``, ``monitor`` and ``decide``; ``dockline.core``
holds what they share; ``dockline.pipeline`` and the ``dockline`` CLI wire them together.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dockline")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
