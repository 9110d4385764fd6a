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

from dockline.core.errors import NotFoundError
from dockline.core.ports import OFFSET_COLUMN, EventLog

__all__ = ["Cursor", "micro_batches"]


@dataclass
class Cursor:
    """Read positions over some topics: ``{topic: {partition: next offset}}``."""

    log: EventLog
    topics: tuple[str, ...]
    max_records: int
    positions: dict[str, dict[int, int]] = field(default_factory=dict)

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

    def rounds(self) -> Iterator[dict[str, pa.Table]]:
        """Successive rounds of at most ``max_records`` per partition, up to the ends seen now."""
        self.start(None)
        ends = {topic: self.log.end_offsets(topic) for topic in self.positions}
        while True:
            round_: dict[str, list[pa.Table]] = {}
            for topic, parts in self.positions.items():
                for partition, offset in parts.items():
                    end = ends[topic].get(partition, 0)
                    if offset >= end:
                        continue
                    chunk = self.log.read(
                        topic, partition, offset, min(self.max_records, end - offset)
                    )
                    if chunk.num_rows == 0:
                        continue
                    last = chunk.column(OFFSET_COLUMN)[-1].as_py()
                    parts[partition] = int(last) + 1
                    round_.setdefault(topic, []).append(chunk)
            if not round_:
                return
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


def micro_batches(
    tables: Mapping[str, pa.Table], ingested_at: Mapping[str, str], batch_events: int
) -> Iterator[tuple[int, dict[str, pa.Table]]]:
    """``(T, {topic: events})`` in ascending ``T``; whole ``ingested_at`` groups, as many as fit
    in ``batch_events`` (at least one group per micro-batch)."""
    ordered: dict[str, tuple[pa.Table, np.ndarray]] = {}
    for topic, table in tables.items():
        times = _ingested_us(table, ingested_at[topic])
        order = np.argsort(times, kind="stable")
        ordered[topic] = (table.take(pa.array(order)), times[order])
    if not ordered:
        return
    values, counts = np.unique(
        np.concatenate([times for _, times in ordered.values()]), return_counts=True
    )
    cuts: list[int] = []
    size = previous = 0
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if size and size + count > batch_events:
            cuts.append(previous)
            size = 0
        size += count
        previous = value
    cuts.append(int(values[-1]))
    starts = dict.fromkeys(ordered, 0)
    for cut in cuts:
        batch: dict[str, pa.Table] = {}
        for topic, (table, times) in ordered.items():
            stop = int(np.searchsorted(times, cut, side="right"))
            if stop > starts[topic]:
                batch[topic] = table.slice(starts[topic], stop - starts[topic])
                starts[topic] = stop
        yield cut, batch
