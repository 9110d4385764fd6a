"""GBFS JSON documents: parsing (orjson, with the standard library as the careful fallback),
the envelope's fields, and records written back as JSON for their dead letters.

Shared by the ``station_status`` front end (:mod:`dockline.ingest.normalize`) and the
``station_information`` one (:mod:`dockline.ingest.information`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from dockline.core.contracts import RejectReason
from dockline.core.time import from_micros
from dockline.ingest._coerce import PRIORITY, Rejects
from dockline.ingest._time import TimestampError, parse_timestamp, show_value

__all__ = [
    "dump_record",
    "foreign_feed",
    "load_document",
    "localized",
    "maybe_datetime",
    "reject_non_objects",
    "stations",
    "ttl",
    "version",
]

R = RejectReason

_AMBIGUOUS_KEYS = ("data", "stations")
_QUOTE_D = np.frombuffer(b'"d', dtype="<u2")[0]


def _data_keys(payload: bytes) -> int:
    """Occurrences of ``"data"`` in ``payload``: a vectorized scan for the rare pair ``"d``.

    ``bytes.count`` takes ~15 % of an orjson parse here (``"`` is everywhere in JSON, so its
    search cannot skip); comparing byte pairs as 16-bit words at even and odd offsets takes
    ~3 %. More than one sends the document to the exact (slow) duplicate-key check.
    """
    size = len(payload)
    even = np.frombuffer(payload, dtype="<u2", count=size // 2)
    odd = (
        np.frombuffer(payload, dtype="<u2", count=(size - 1) // 2, offset=1)
        if size > 1
        else even[:0]
    )
    starts = [*(np.flatnonzero(even == _QUOTE_D) * 2).tolist()]
    starts += (np.flatnonzero(odd == _QUOTE_D) * 2 + 1).tolist()
    return sum(payload.startswith(b'"data"', start) for start in starts)


def load_document(payload: bytes) -> tuple[Any, str | None, bool]:
    """Parse a GBFS document: ``(doc, None, exact)``, or ``(None, why it is malformed, True)``.

    ``exact`` is False when the standard library parsed it: its records may hold numbers that
    orjson would write back differently (``NaN``, ``Infinity``), see :func:`dump_record`.

    ``orjson`` first (the hot path). What it refuses only for a number it cannot hold — an
    integer beyond 64 bits, ``1e999``, ``NaN`` — is parsed again by the standard library, so the
    one record with that number is dead-lettered by the field checks, not the whole document.
    Nesting deeper than orjson's limit is malformed (never a RecursionError), and so is a
    document with ``data`` twice (or, then, ``stations``): a parser keeps one copy silently.
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            return None, f"not valid JSON: {exc}", True
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return None, f"not valid JSON: {exc}", True
        exact = False
    else:
        exact = True
    if _data_keys(payload) > 1:
        repeated = _repeated_keys(payload)
        if repeated:
            return (
                None,
                (
                    f"the document has the key {repeated[0]!r} more than once; which copy holds"
                    " the records is ambiguous"
                ),
                True,
            )
    return doc, None, exact


def _repeated_keys(payload: bytes) -> list[str]:
    """Keys among ``data``/``stations`` that occur twice in one JSON object (slow; rare)."""
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            found.extend(k for k in _AMBIGUOUS_KEYS if keys.count(k) > 1)
        return dict(pairs)

    try:
        json.loads(payload, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return []
    return found


def dump_record(record: Any, *, exact: bool = True) -> bytes:
    """A record as JSON bytes for its dead letter, as close to what was received as possible.

    orjson first; the standard library beyond orjson's depth limit, or when the document came
    from the standard library (``exact=False``: orjson would write ``NaN``/``Infinity`` as null).
    """
    if exact:
        try:
            return orjson.dumps(record)
        except (orjson.JSONEncodeError, TypeError):
            pass
    try:
        return json.dumps(record, allow_nan=True).encode()
    except (ValueError, TypeError, RecursionError):
        return repr(record).encode()[:10_000]


_STATUS_KEYS = frozenset(
    {"last_reported", "num_bikes_available", "num_vehicles_available", "num_docks_available"}
)
_FOREIGN_KEYS = frozenset({"lat", "lon", "bike_id", "vehicle_id"})


def foreign_feed(stations: list[Any]) -> bool:
    """Records of another feed (information, vehicles) and none of station_status."""
    objects = [s for s in stations if isinstance(s, dict)]
    return (
        bool(objects)
        and not any(_STATUS_KEYS.intersection(s) for s in objects)
        and any(_FOREIGN_KEYS.intersection(s) for s in objects)
    )


def stations(doc: Any) -> list[Any] | None:
    """The document's ``data.stations`` list, or None when it has none."""
    if not isinstance(doc, dict):
        return None
    data = doc.get("data")
    if not isinstance(data, dict):
        return None
    stations = data.get("stations")
    return stations if isinstance(stations, list) else None


def version(doc: dict[str, Any]) -> str | None:
    """The document's ``version`` as a string (None when absent or a boolean)."""
    version = doc.get("version")
    if version is None or isinstance(version, bool):
        return None
    return str(version)


def maybe_datetime(value: Any) -> datetime | None:
    """A POSIX or RFC 3339 timestamp as a datetime, or None when it is not one."""
    if value is None:
        return None
    try:
        return from_micros(parse_timestamp(value))
    except (TimestampError, OverflowError):
        return None


def localized(value: Any) -> str | None:
    """A plain string, or a v3.0 list of ``{text, language}`` (English, else the first)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for item in value:
            if str(item.get("language", "")).lower().startswith("en") and isinstance(
                item.get("text"), str
            ):
                return str(item["text"])
        first = value[0].get("text")
        if isinstance(first, str):
            return first
    raise TypeError(value)


def ttl(doc: dict[str, Any]) -> int | None:
    """The document's ``ttl`` when it is an integer, else None."""
    value = doc.get("ttl")
    return value if type(value) is int else None


def reject_non_objects(records: list[Any], rej: Rejects) -> list[int]:
    """Reject each record that is not a JSON object; its positions (their ids are unknown).

    A non-object has no fields, so its only fault is its type: this reason replaces any other.
    """
    positions = []
    for pos, record in enumerate(records):
        if not isinstance(record, dict):
            rej.by_pos[pos] = (
                PRIORITY[R.BAD_TYPE],
                R.BAD_TYPE,
                f"a station record must be a JSON object; got {show_value(record)}",
            )
            positions.append(pos)
    return positions
