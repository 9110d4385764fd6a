"""Reading source topics from the log and cutting them into micro-batches by ``ingested_at``.

Shared by the materializer (from a consumer group's offsets) and the consistency job (from 0).
A micro-batch holds whole ``ingested_at`` groups in ascending order, so its time ``T`` (its
largest ``ingested_at``) increases from one micro-batch to the next within a round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.errors import NotFoundError
from dockline.core.ports import OFFSET_COLUMN, EventLog
from dockline.features.online import OnlineExecutor

__all__ = ["Cursor", "feed_round", "micro_batch_ranges"]


@dataclass
class Cursor:
    """Read positions over some topics: ``{topic: {partition: next offset}}``.

    Rounds are aligned in time across topics: a round holds back the rows ingested after the
    *frontier* (the smallest, over partitions with rows still unread, of the newest
    ``ingested_at`` read from them), so a small topic read to its end in one go (station
    information) cannot get ahead of a large one still being read (station status), nor one
    partition ahead of another. Held-back rows come first in
    a later round, and :meth:`committable` never commits past them.
    """

    log: EventLog
    topics: tuple[str, ...]
    max_records: int
    ingested_at: Mapping[str, str]
    positions: dict[str, dict[int, int]] = field(default_factory=dict)
    _pending: dict[tuple[str, int], pa.Table] = field(default_factory=dict, repr=False)

    def start(self, starts: Callable[[str], Mapping[int, int]] | None = None) -> None:
        """Position every existing, not yet positioned topic at ``starts(topic)`` (default 0)."""
        for topic in self.topics:
            if topic in self.positions:
                continue
            try:
                partitions = self.log.partitions(topic)
            except NotFoundError:
                continue  # not created yet: nothing to read; tried again on the next round
            given = starts(topic) if starts is not None else {}
            self.positions[topic] = {p: int(given.get(p, 0)) for p in range(partitions)}

    def committable(self) -> dict[str, dict[int, int]]:
        """Per topic and partition, the offset up to which every row has been handed out."""
        out = {topic: dict(parts) for topic, parts in self.positions.items()}
        for (topic, partition), table in self._pending.items():
            first = int(pc.min(table.column(OFFSET_COLUMN)).as_py())
            out[topic][partition] = min(out[topic][partition], first)
        return out

    def rounds(self) -> Iterator[dict[str, pa.Table]]:
        """Successive rounds, time-aligned across topics, up to the ends seen now; each reads
        at most ``max_records`` per partition (none from a partition already holding that many
        back). The last round hands out everything."""
        self.start(None)
        ends = {topic: self.log.end_offsets(topic) for topic in self.positions}
        newest: dict[tuple[str, int], int] = {}
        while True:
            for topic, parts in self.positions.items():
                for partition, offset in parts.items():
                    end = ends[topic].get(partition, 0)
                    held = self._pending.get((topic, partition))
                    if offset >= end or (held is not None and held.num_rows >= self.max_records):
                        continue
                    chunk = self.log.read(
                        topic, partition, offset, min(self.max_records, end - offset)
                    )
                    if chunk.num_rows == 0:
                        continue
                    parts[partition] = int(chunk.column(OFFSET_COLUMN)[-1].as_py()) + 1
                    times = _ingested_us(chunk, self.ingested_at[topic])
                    key = (topic, partition)
                    newest[key] = max(newest.get(key, int(times[0])), int(times.max()))
                    self._pending[(topic, partition)] = (
                        chunk
                        if held is None
                        else pa.concat_tables([held, chunk], promote_options="default")
                    )
            if not self._pending:
                return
            unread = [
                newest[(topic, partition)]
                for topic, parts in self.positions.items()
                for partition, offset in parts.items()
                if offset < ends[topic].get(partition, 0) and (topic, partition) in newest
            ]
            frontier = min(unread) if unread else None
            round_: dict[str, list[pa.Table]] = {}
            for key, table in list(self._pending.items()):
                if frontier is None:
                    ready, rest = table, None
                else:
                    known = _ingested_us(table, self.ingested_at[key[0]]) <= frontier
                    ready = table.filter(pa.array(known))
                    rest = table.filter(pa.array(~known)) if not known.all() else None
                if rest is None or rest.num_rows == 0:
                    del self._pending[key]
                else:
                    self._pending[key] = rest
                if ready.num_rows:
                    round_.setdefault(key[0], []).append(ready)
            if round_:
                yield {
                    topic: pa.concat_tables(chunks, promote_options="default")
                    for topic, chunks in round_.items()
                }


def _ingested_us(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column)
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.timestamp("us", tz=values.type.tz)).cast(pa.int64())
    result: np.ndarray = values.to_numpy().astype(np.int64)
    return result


def micro_batch_ranges(
    tables: Mapping[str, pa.Table], ingested_at: Mapping[str, str], batch_events: int
) -> tuple[dict[str, pa.Table], list[tuple[int, dict[str, tuple[int, int]]]]]:
    """The round's tables sorted by ``ingested_at`` (stable), and its micro-batches as
    ``(T, {topic: (start, stop)})`` row ranges of them, in ascending ``T``: whole
    ``ingested_at`` groups, as many as fit in ``batch_events`` (at least one group each)."""
    ordered: dict[str, pa.Table] = {}
    times: dict[str, np.ndarray] = {}
    for topic, table in tables.items():
        values = _ingested_us(table, ingested_at[topic])
        order = np.argsort(values, kind="stable")
        ordered[topic] = table.take(pa.array(order))
        times[topic] = values[order]
    if not ordered:
        return ordered, []
    values, counts = np.unique(np.concatenate(list(times.values())), return_counts=True)
    if batch_events <= 1:
        cuts = values  # every ingested_at group is a micro-batch of its own
    else:
        picked: list[int] = []
        size = previous = 0
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            if size and size + count > batch_events:
                picked.append(previous)
                size = 0
            size += count
            previous = value
        picked.append(int(values[-1]))
        cuts = np.array(picked, dtype=np.int64)
    stops = {topic: np.searchsorted(t, cuts, side="right").tolist() for topic, t in times.items()}
    starts = dict.fromkeys(ordered, 0)
    batches: list[tuple[int, dict[str, tuple[int, int]]]] = []
    for n, cut in enumerate(cuts.tolist()):
        ranges: dict[str, tuple[int, int]] = {}
        for topic in ordered:
            stop = stops[topic][n]
            if stop > starts[topic]:
                ranges[topic] = (starts[topic], stop)
                starts[topic] = stop
        batches.append((cut, ranges))
    return ordered, batches


def feed_round(
    executor: OnlineExecutor,
    tables: Mapping[str, pa.Table],
    ingested_at: Mapping[str, str],
    batch_events: int,
) -> Iterator[tuple[int, set[str], int]]:
    """Feed one round to ``executor`` micro-batch by micro-batch; after each, yield
    ``(T, entities it changed, events fed)``. Each table is converted once for the round."""
    ordered, batches = micro_batch_ranges(tables, ingested_at, batch_events)
    prepared = {topic: executor.prepare(topic, table) for topic, table in ordered.items()}
    for t_us, ranges in batches:
        touched: set[str] = set()
        fed = 0
        for topic, (lo, hi) in ranges.items():
            touched |= executor.feed(prepared[topic], lo, hi)
            fed += hi - lo
        yield t_us, touched, fed
