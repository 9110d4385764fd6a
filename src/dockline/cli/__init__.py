"""The ``dockline`` command line: the user's surface over the pipeline.

Every command prints one clear line on error (never a traceback unless ``DOCKLINE_DEBUG=1``)
and exits 0 on success, 1 on a runtime failure (a failed gate under ``--fail-on-gate`` included)
and 2 on a usage error (a bad option, value, config or data dir). With ``--json`` the error is
one JSON object on stdout too: ``{"error": ..., "reason": ..., "where": ...}``.
"""

from __future__ import annotations

import os
import sys

# OpenMP threads (LightGBM) spin while waiting by default, which on two shared cores made
# training 5-27x slower; it must be set before the library is first loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from dockline.cli._app import app
from dockline.core.errors import ConfigError, ContractError, DocklineError, ValidationError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "app", "exit_code", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
"""A runtime failure: a source, a store, a contract, a failed gate."""
EXIT_USAGE = 2
"""A usage error: a bad option or value, an invalid config, a missing data dir or project."""


def exit_code(exc: DocklineError) -> int:
    """Usage errors (what the user typed or configured) exit 2; everything else 1."""
    if isinstance(exc, ContractError):  # an artifact on disk broke its contract: not the user
        return EXIT_FAILURE
    if isinstance(exc, ConfigError | ValidationError):
        return EXIT_USAGE
    return EXIT_FAILURE


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(
    code: int,
    message: str,
    *,
    reason: str,
    where: str | None,
    json_mode: bool,
    line: str | None = None,
) -> None:
    """Exit with ``code`` after one line on stderr, or one JSON object on stdout."""
    if json_mode:
        import orjson

        error = {"error": _one_line(message), "reason": reason, "where": where}
        sys.stdout.write(orjson.dumps(error).decode() + "\n")
    else:
        print(f"error: {_one_line(line or message)}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    """Entry point of the ``dockline`` script."""
    debug = os.environ.get("DOCKLINE_DEBUG") == "1"
    # Decided before parsing: a usage error must come out as JSON too.
    json_mode = "--json" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored) click: parsing and usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `dockline features`: its help
            print(exc.format_message(), file=sys.stderr)
            sys.exit(EXIT_USAGE)
        code = int(getattr(exc, "exit_code", EXIT_USAGE))
        where = ctx.command_path if ctx is not None else None
        hint = f" (see `{where} --help`)" if where and code == EXIT_USAGE else ""
        _fail(code, exc.format_message() + hint, reason="usage", where=where, json_mode=json_mode)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except DocklineError as exc:
        if debug:
            raise
        _fail(
            exit_code(exc),
            exc.message,
            reason=exc.reason,
            where=exc.where,
            json_mode=json_mode,
            line=str(exc),
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        _fail(
            EXIT_FAILURE,
            f"internal error: {type(exc).__name__}: {exc} (set DOCKLINE_DEBUG=1 for the traceback)",
            reason="internal",
            where=None,
            json_mode=json_mode,
        )
    sys.exit(code if isinstance(code, int) else EXIT_OK)
