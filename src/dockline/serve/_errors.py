"""HTTP errors: one table from machine-readable reason to status, and the error body.

Every error the serving app returns has a JSON body ``{"reason", "message", "field",
"request_id"}``; ``reason`` is stable (clients and the metrics windows count by it), ``field`` names
the offending request field for 422s.
"""

from __future__ import annotations

from dockline.core.errors import DocklineError

__all__ = ["REASON_STATUS", "ServeError", "status_for"]

REASON_STATUS: dict[str, int] = {
    # the request is wrong
    "invalid_json": 422,
    "missing_field": 422,
    "invalid_type": 422,
    "unknown_field": 422,
    "unknown_feature": 422,
    "invalid_value": 422,
    "unauthorized": 401,
    "unknown_entity": 404,
    "not_found": 404,
    "not_configured": 404,
    "method_not_allowed": 405,
    "batch_too_large": 413,
    "body_too_large": 413,
    "body_timeout": 408,
    # answered by the HTTP protocol itself (GuardedHttpProtocol), listed for completeness
    "request_timeout": 408,
    "bad_request": 400,
    "too_many_connections": 503,
    # the service cannot answer well enough
    "stale_features": 503,
    "no_model": 503,
    "store_unavailable": 503,
    "feature_schema_mismatch": 503,
    "not_ready": 503,
    "monitoring_unavailable": 503,
    "registry_unavailable": 503,
    "int8_unavailable": 503,
    # admin actions that were refused
    "bundle_tampered": 409,
    "bundle_invalid": 409,
    "unknown_model": 409,
    # ?explain=true on a model whose bundle has no explanation dump
    "explain_unavailable": 409,
    "inference_error": 500,
    "invalid_prediction": 500,
    "internal_error": 500,
}
"""Status code of every reason the app emits (the one place that maps errors to HTTP)."""


class ServeError(DocklineError):
    """An error answered to the client: ``reason`` selects the status from :data:`REASON_STATUS`.

    ``where`` holds the request field the error is about (e.g. ``entity``, ``features.x``).
    """

    default_reason = "internal_error"
    probabilities: tuple[float, ...] = ()
    """Probabilities the model produced before the error (counted in the metrics windows)."""

    @property
    def status(self) -> int:
        """The HTTP status for this error's reason."""
        return status_for(self.reason)


def status_for(reason: str) -> int:
    """HTTP status for ``reason`` (500 for a reason missing from the table)."""
    return REASON_STATUS.get(reason, 500)
