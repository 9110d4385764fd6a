"""Request and response bodies (msgspec: decoding validates, encoding is the hot path's JSON).

:func:`decode` turns msgspec's validation messages into a :class:`ServeError` with the field
path (``entity``, ``features.x``, ``entities[3]``) and a reason (``missing_field``,
``invalid_type``, ``unknown_field``, ``invalid_json``).
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs

import msgspec

from dockline.serve._errors import ServeError

__all__ = [
    "EXAMPLES",
    "BatchItem",
    "BatchRequest",
    "BatchResponse",
    "ErrorBody",
    "ExplainedBatchItem",
    "ExplainedPredictResponse",
    "ModelRef",
    "PredictRequest",
    "PredictResponse",
    "RoutingRequest",
    "RoutingState",
    "decode",
    "encode",
    "explain_flag",
    "openapi_components",
]

MAX_ENTITY_LENGTH = 256
FLOAT32_MAX = 3.4028234663852886e38


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Score one entity's latest online vector; ``features`` override (or supply) values."""

    entity: str
    features: dict[str, float | None] | None = None


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Score several entities in one vectorized call."""

    entities: list[str]


class ModelRef(msgspec.Struct):
    """Which model answered."""

    name: str
    version: int
    bundle_id: str
    role: str


class PredictResponse(msgspec.Struct):
    """One prediction. ``status`` is ``degraded`` (``reason``: ``stale_features``) when the
    vector is older than the configured maximum; ``source`` says whether the model or the
    bundle's baseline produced the probability."""

    request_id: str
    entity: str
    probability: float
    label: bool
    threshold: float
    status: str
    reason: str | None
    source: str
    model: ModelRef
    as_of: str | None
    age_s: float | None
    latency_ms: float


class BatchItem(msgspec.Struct):
    """One entity of a batch; on a per-entity error ``status`` is ``error`` with a ``reason``."""

    entity: str
    status: str
    reason: str | None = None
    probability: float | None = None
    label: bool | None = None
    source: str | None = None
    model: ModelRef | None = None
    as_of: str | None = None
    age_s: float | None = None


class ExplainedPredictResponse(PredictResponse):
    """A prediction answered with ``?explain=true``: ``base_value + Σ contributions ==
    raw_score``, the model's score before calibration (the logit for logistic and LightGBM
    models, the forest's averaged probability for ExtraTrees). Null when the bundle's baseline
    answered (stale features): there is no model to explain."""

    contributions: dict[str, float] | None
    base_value: float | None
    raw_score: float | None


class ExplainedBatchItem(BatchItem):
    """A batch entity answered with ``?explain=true`` (fields as in a single prediction)."""

    contributions: dict[str, float] | None = None
    base_value: float | None = None
    raw_score: float | None = None


class BatchResponse(msgspec.Struct):
    """The predictions of a batch, in request order."""

    request_id: str
    predictions: list[BatchItem]
    latency_ms: float


class ErrorBody(msgspec.Struct):
    """Every error response: a stable machine-readable ``reason`` and the ``field`` at fault."""

    reason: str
    message: str
    field: str | None = None
    request_id: str | None = None


class RoutingRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Change how requests are routed between champion and challenger."""

    mode: Literal["champion", "shadow", "canary"]
    canary_share: float | None = None


class RoutingState(msgspec.Struct):
    """The current routing."""

    mode: str
    canary_share: float


encode = msgspec.json.Encoder().encode

EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "PredictRequest": {
        "stored": {
            "summary": "Score a station's online feature vector",
            "value": {"entity": "station-42"},
        },
        "override": {
            "summary": "The same, with one feature value supplied by the caller",
            "value": {"entity": "station-42", "features": {"hour_of_day": 8}},
        },
    },
    "BatchRequest": {
        "stations": {
            "summary": "Score several stations in one call",
            "value": {"entities": ["station-42", "station-7", "station-113"]},
        }
    },
    "RoutingRequest": {
        "canary": {
            "summary": "Send 10 % of stations to the challenger",
            "value": {"mode": "canary", "canary_share": 0.1},
        },
        "shadow": {
            "summary": "Score the challenger beside the champion, answer the champion",
            "value": {"mode": "shadow"},
        },
    },
}
"""Request examples for the OpenAPI document (``/docs`` shows them ready to send)."""

T = TypeVar("T")

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_BACKTICK = re.compile(r"`(?P<name>[^`]+)`")


def decode(body: bytes, kind: type[T]) -> T:
    """Decode and validate ``body`` as ``kind``; a :class:`ServeError` (422) names the field."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        result: T = decoder.decode(body)
    except msgspec.ValidationError as exc:
        error = _validation_error(str(exc))
        if error.where == "features[...]":  # msgspec does not name dict keys; find the key
            error = _bad_feature(body) or error
        raise error from None
    except msgspec.DecodeError as exc:
        raise ServeError(
            f"the body must be a JSON object; {exc}", reason="invalid_json", where="body"
        ) from None
    except RecursionError:
        raise ServeError(
            "the body is nested too deeply", reason="invalid_json", where="body"
        ) from None
    if isinstance(result, PredictRequest) and result.features:
        _check_finite(result.features)
    return result


_EXPLAIN_VALUES = {"true": True, "1": True, "false": False, "0": False}


def explain_flag(query_string: bytes) -> bool:
    """The ``explain`` query parameter: ``true``/``1`` or ``false``/``0`` (absent: false);
    anything else, or the parameter given twice, is a :class:`ServeError` (422)."""
    if not query_string:  # the hot path: no query, nothing parsed
        return False
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("explain")
    if values is None:
        return False
    if len(values) == 1 and values[0].lower() in _EXPLAIN_VALUES:
        return _EXPLAIN_VALUES[values[0].lower()]
    shown = values[0][:40] if len(values) == 1 else f"{len(values)} values"
    raise ServeError(
        f"explain must be true or false; got {shown!r}", reason="invalid_value", where="explain"
    )


def _check_finite(features: dict[str, float | None]) -> None:
    # A model input is float32: a value beyond its range would reach the model as infinity.
    for name, value in features.items():
        if value is not None and not -FLOAT32_MAX <= value <= FLOAT32_MAX:
            raise ServeError(
                f"features.{name} must be a finite number within ±{FLOAT32_MAX:.4g}; got {value}",
                reason="invalid_value",
                where=f"features.{name}",
            )


def _validation_error(message: str) -> ServeError:
    match = _AT.search(message)
    path = match.group("path") if match else ""
    text = message[: match.start()] if match else message
    prefix = path.lstrip(".")
    if "missing required field" in text:
        name = _BACKTICK.search(text)
        field = ".".join(p for p in (prefix, name.group("name") if name else "") if p)
        return ServeError(f"{field} is required", reason="missing_field", where=field)
    if "unknown field" in text:
        name = _BACKTICK.search(text)
        field = ".".join(p for p in (prefix, name.group("name") if name else "") if p)
        return ServeError(f"{field} is not a known field", reason="unknown_field", where=field)
    field = prefix or "body"
    return ServeError(f"{field}: {text}", reason="invalid_type", where=field)


_RawObject = dict[str, msgspec.Raw]
_JSON_KINDS = {ord("["): "array", ord("{"): "object", ord('"'): "string", ord("t"): "bool"}
_JSON_KINDS[ord("f")] = "bool"


def _bad_feature(body: bytes) -> ServeError | None:
    """The feature whose value failed, found without parsing values (a value nested 1,000 deep
    or a number out of range must not fail this second look)."""
    try:
        features = msgspec.json.decode(
            msgspec.json.decode(body, type=_RawObject).get("features") or b"{}", type=_RawObject
        )
    except (msgspec.MsgspecError, RecursionError):  # e.g. nested too deeply to skip over
        return ServeError(
            "features values must be numbers or null", reason="invalid_type", where="features"
        )
    for name, raw in features.items():
        field = f"features.{name}"
        try:
            msgspec.json.decode(raw, type=float | None)
        except msgspec.ValidationError as exc:
            if "out of range" in str(exc):
                shown = bytes(raw)[:40].decode(errors="replace")
                return ServeError(
                    f"{field} must be a finite number; got {shown}",
                    reason="invalid_value",
                    where=field,
                )
            kind = _JSON_KINDS.get(bytes(raw)[:1][0], "value") if raw else "value"
            return ServeError(
                f"{field} must be a number or null; got {kind}", reason="invalid_type", where=field
            )
    return None


def openapi_components() -> dict[str, Any]:
    """JSON schemas of the bodies, for the OpenAPI document (``#/components/schemas/...``)."""
    _, components = msgspec.json.schema_components(
        [
            PredictRequest,
            PredictResponse,
            BatchRequest,
            BatchResponse,
            ExplainedPredictResponse,
            ExplainedBatchItem,
            ErrorBody,
            RoutingRequest,
            RoutingState,
        ],
        ref_template="#/components/schemas/{name}",
    )
    return components
