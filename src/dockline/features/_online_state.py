"""Per-entity event buffers of the online executor: sorted insert, dedupe, horizon pruning.

An entity's events of one source are kept as tuples sorted by ``(event_ts, ingested_at)``::

    (event_ts, ingested_at, avail, *column values, *predicate results)

Pruning keeps exactly what any point ``t >= watermark`` (the newest ``ingested_at`` seen for the
entity) can still use: the events within the source's horizon, the newest event at or before
``watermark - w`` for the longest "look-back" ``w`` (``delta`` windows; 0 for static attributes),
and — per ``time_since`` predicate — the newest pruned event for which it was true.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AVAIL",
    "FIRST_COLUMN",
    "ING",
    "TS",
    "EntityEvents",
    "Event",
    "Retention",
    "same_event",
]

TS, ING, AVAIL = 0, 1, 2
FIRST_COLUMN = 3

Event = tuple[Any, ...]


def _times(event: Event) -> tuple[int, int]:
    return (event[TS], event[ING])


def _same_value(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    if a == b:
        return True
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def same_event(a: Event, b: Event) -> bool:
    """Whether two event tuples are identical (NaN equals NaN; ``1`` differs from ``True``)."""
    return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class Retention:
    """What a source's buffers must keep: see the module docstring.

    ``horizon_us``: keep events with ``event_ts >= watermark - horizon_us``. ``anchor_us``: also
    keep the newest event with ``event_ts <= watermark - anchor_us`` (and its ties), or ``None``.
    ``survivor_flags``: tuple indexes of the ``time_since`` predicate results.
    """

    horizon_us: int
    anchor_us: int | None
    survivor_flags: tuple[int, ...]


class EntityEvents:
    """The kept events of one entity for one source, plus ``time_since`` survivors."""

    __slots__ = ("events", "survivors", "watermark")

    def __init__(
        self,
        events: list[Event] | None = None,
        survivors: list[tuple[int, int] | None] | None = None,
        watermark: int | None = None,
        *,
        n_survivors: int = 0,
    ) -> None:
        self.events: list[Event] = events if events is not None else []
        self.survivors: list[tuple[int, int] | None] = (
            survivors if survivors is not None else [None] * n_survivors
        )
        self.watermark: int | None = watermark

    def add(self, event: Event) -> bool:
        """Insert ``event`` in time order; ``False`` if an identical event is already kept."""
        events = self.events
        ing = event[ING]
        if self.watermark is None or ing > self.watermark:
            self.watermark = ing
        if not events or _times(events[-1]) < _times(event):
            events.append(event)  # the common, in-order case: O(1)
            return True
        times = _times(event)
        lo = bisect_left(events, times, key=_times)
        hi = bisect_right(events, times, key=_times)
        for i in range(lo, hi):
            if same_event(events[i], event):
                return False
        events.insert(hi, event)  # after its equal-time peers: the order stays sorted
        return True

    def prune(self, retention: Retention) -> bool:
        """Drop what no point at or after the watermark can use (see the module docstring).

        Returns whether a ``time_since`` survivor changed.
        """
        events = self.events
        if self.watermark is None or not events:
            return False
        watermark = self.watermark
        oldest_kept = watermark - retention.horizon_us
        if events[0][TS] >= oldest_kept:
            return False  # the common case: nothing has left the horizon yet
        # a linear scan from the front: in order, about one event leaves per event that arrives
        n = len(events)
        cut = 1
        while cut < n and events[cut][TS] < oldest_kept:
            cut += 1
        anchor = retention.anchor_us
        if anchor is not None and (cut == n or events[cut][TS] > watermark - anchor):
            # no kept event is old enough to anchor: keep the newest pruned one and its ties
            cut -= 1
            anchor_ts = events[cut][TS]
            while cut > 0 and events[cut - 1][TS] == anchor_ts:
                cut -= 1
        if cut <= 0:
            return False
        changed = False
        if retention.survivor_flags:
            changed = self._keep_survivors(events[:cut], retention.survivor_flags)
        del events[:cut]
        return changed

    def _keep_survivors(self, pruned: Sequence[Event], flags: tuple[int, ...]) -> bool:
        changed = False
        for slot, flag in enumerate(flags):
            for event in reversed(pruned):  # sorted: the last hit is the newest
                if event[flag]:
                    times = _times(event)
                    current = self.survivors[slot]
                    if current is None or times > current:
                        self.survivors[slot] = times
                        changed = True
                    break
        return changed
