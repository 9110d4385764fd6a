"""The ``dockline`` command line: the user's surface over the pipeline.

Every command prints one clear line and exits non-zero on error (never a traceback unless
``DOCKLINE_DEBUG=1``), shows progress on long work, and takes ``--json`` where a script would read
its output.
"""

from __future__ import annotations

import os
import sys

# OpenMP threads (LightGBM) spin while waiting by default, which on two shared cores made
# training 5-27x slower; it must be set before the library is first loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dockline.cli._app import app
from dockline.core.errors import DocklineError

__all__ = ["app", "main"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main() -> None:
    """Entry point of the ``dockline`` script."""
    debug = os.environ.get("DOCKLINE_DEBUG") == "1"
    try:
        app()
    except DocklineError as exc:
        if debug:
            raise
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {_one_line(str(exc))}"
            " (set DOCKLINE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
