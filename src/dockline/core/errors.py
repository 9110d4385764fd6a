"""The dockline error tree.

Every error dockline raises on purpose derives from :class:`DocklineError` and also from the
builtin a caller would expect, so ``except ValueError`` keeps working::

    DocklineError
    ├── ConfigError (ValueError)           invalid configuration or project definition
    ├── ValidationError (ValueError)       a record or document breaks its contract
    │   └── ContractError                  an artifact on disk fails its typed contract on read
    ├── NotFoundError (KeyError)           an entity, topic, artifact or version does not exist
    ├── SourceError (ConnectionError)      an upstream source (feed, archive) cannot be read
    ├── StorageError (OSError)             a storage backend failed (log, stores, files)
    └── UserCodeError (RuntimeError)       code from the user's project raised; names the definition

Errors carry structured fields (``reason``, ``where``) so the CLI can print one line and the HTTP
layer can map them to a status and a machine-readable reason without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContractError",
    "DocklineError",
    "NotFoundError",
    "SourceError",
    "StorageError",
    "UserCodeError",
    "ValidationError",
]


class DocklineError(Exception):
    """Root of every error dockline raises on purpose.

    ``reason`` is a short machine-readable code (``missing_field``, ``unknown_entity``, …);
    ``where`` names the place (a file, URL, definition or field) the error is about.
    """

    default_reason = "error"

    def __init__(self, message: str, *, reason: str | None = None, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.where = where

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(DocklineError, ValueError):
    """Configuration or a project definition is invalid."""

    default_reason = "invalid_config"


class ValidationError(DocklineError, ValueError):
    """A record or document does not satisfy its contract."""

    default_reason = "invalid_input"


class ContractError(ValidationError):
    """An artifact written by another layer fails its typed, versioned contract on read."""

    default_reason = "contract_violation"


class NotFoundError(DocklineError, KeyError):
    """Something looked up by name or id does not exist."""

    default_reason = "not_found"


class SourceError(DocklineError, ConnectionError):
    """An upstream source (a GBFS feed, an archive) could not be read."""

    default_reason = "source_unavailable"


class StorageError(DocklineError, OSError):
    """A storage backend (event log, dead letters, offline or online store) failed."""

    default_reason = "storage_error"


class UserCodeError(DocklineError, RuntimeError):
    """Code from the user's project raised; ``where`` names the definition that failed."""

    default_reason = "user_code_error"
