"""The online executor's state as bytes: whole snapshots and single-entity states (msgpack).

Both encodings are deterministic (same state ⇒ same bytes) and stamped with the plan's hash, so
state built by another plan is refused rather than misread. Their byte format is persisted
(snapshot files, the online store's per-entity state): changing it needs a new ``FORMAT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from dockline.core.errors import ConfigError, ValidationError
from dockline.features._online_state import EntityEvents

__all__ = [
    "SNAPSHOT_FORMAT",
    "State",
    "decode_entity",
    "decode_snapshot",
    "encode_entity",
    "encode_snapshot",
]

SNAPSHOT_FORMAT = 1

State = Mapping[str, Mapping[str, EntityEvents]]  # source → entity → its kept events


class _BufferState(msgspec.Struct, array_like=True, frozen=True):
    watermark: int | None
    events: list[tuple[Any, ...]]
    survivors: list[tuple[int, int] | None]


class _Snapshot(msgspec.Struct, frozen=True):
    format: int
    plan_hash: str
    sources: dict[str, dict[str, _BufferState]]
    confirmed: dict[str, int] = {}


class _EntityState(msgspec.Struct, array_like=True, frozen=True):
    """One entity's kept events per source: what read-time evaluation needs."""

    plan_hash: str
    sources: dict[str, _BufferState]
    confirmed: int | None


_encoder = msgspec.msgpack.Encoder(order="deterministic")
_decoder = msgspec.msgpack.Decoder(_Snapshot)
_entity_decoder = msgspec.msgpack.Decoder(_EntityState)


def encode_snapshot(plan_hash: str, state: State, confirmed: Mapping[str, int]) -> bytes:
    """Every source's buffers and the confirmations as one deterministic msgpack document."""
    sources = {
        name: {
            entity: _BufferState(b.watermark, b.events, b.survivors)
            for entity, b in buffers.items()
        }
        for name, buffers in state.items()
    }
    return _encoder.encode(_Snapshot(SNAPSHOT_FORMAT, plan_hash, sources, dict(confirmed)))


def decode_snapshot(
    data: bytes, plan_hash: str
) -> tuple[dict[str, dict[str, EntityEvents]], dict[str, int]]:
    """The buffers and confirmations of :func:`encode_snapshot` ``data`` built by ``plan_hash``."""
    try:
        snap = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"online state is unreadable: {exc}", reason="bad_value") from exc
    if snap.format != SNAPSHOT_FORMAT:
        raise ConfigError(f"online state format must be {SNAPSHOT_FORMAT}; got {snap.format}")
    if snap.plan_hash != plan_hash:
        raise ConfigError(
            "online state was built by another plan; replay the log with this one"
            f" (state {snap.plan_hash[:12]}, plan {plan_hash[:12]})"
        )
    sources = {
        name: {
            entity: EntityEvents(list(b.events), list(b.survivors), b.watermark)
            for entity, b in buffers.items()
        }
        for name, buffers in snap.sources.items()
    }
    return sources, dict(snap.confirmed)


def encode_entity(plan_hash: str, state: State, entity: str, confirmed: int | None) -> bytes:
    """``entity``'s buffers (in the sources that have one) and confirmation as msgpack."""
    sources = {
        name: _BufferState(b.watermark, b.events, b.survivors)
        for name, buffers in state.items()
        if (b := buffers.get(entity)) is not None
    }
    return _encoder.encode(_EntityState(plan_hash, sources, confirmed))


def decode_entity(entity: str, data: bytes, plan_hash: str) -> dict[str, EntityEvents]:
    """Per source, ``entity``'s buffer in :func:`encode_entity` ``data`` of ``plan_hash``."""
    try:
        decoded = _entity_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValidationError(
            f"online state of {entity!r} is unreadable: {exc}", reason="bad_value"
        ) from exc
    if decoded.plan_hash != plan_hash:
        raise ConfigError(
            f"online state of {entity!r} was built by another plan"
            f" (state {decoded.plan_hash[:12]}, plan {plan_hash[:12]});"
            " materialize again with this one"
        )
    return {
        name: EntityEvents(b.events, b.survivors, b.watermark)
        for name, b in decoded.sources.items()
    }
