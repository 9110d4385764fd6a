"""Dead letters on the Kafka log's side: the SQLite store of record, plus a dead-letter topic."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import msgspec
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from dockline.core.contracts import DeadLetter
from dockline.core.ports import DeadLetterStore
from dockline.store.log._kafka import (
    DEAD_LETTER_TOPIC,
    LOGGER,
    SCHEMA_VERSION,
    ensure_topic,
    raise_error,
)

__all__ = ["KafkaDeadLetterStore"]


class KafkaDeadLetterStore:
    """A :class:`~dockline.core.ports.DeadLetterStore` that also publishes to a Kafka topic.

    The wrapped store stays the store of record (counts, examples, replay); every letter it
    stores is also produced to ``<prefix>deadletters`` — keyed by the letter's id, JSON
    value, ``schema_version``/``reason``/``source`` headers — for consumers outside dockline
    (seed 004 routes invalid events to their own topic). Stored first, published second: a
    crash in between leaves a letter stored but unpublished, never the reverse. At least once:
    a call that stores some new letters publishes all of its letters (consumers dedupe on the
    key, or read the topic compacted).
    """

    def __init__(
        self,
        inner: DeadLetterStore,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "dockline.",
        retention_ms: int = -1,
        timeout: float = 15.0,
    ) -> None:
        self.inner = inner
        self.topic = topic_prefix + DEAD_LETTER_TOPIC
        self.timeout = timeout
        base: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": LOGGER}
        ensure_topic(
            AdminClient(base),
            self.topic,
            1,
            retention_ms=retention_ms,
            timeout=timeout,
            servers=bootstrap_servers,
        )
        self._producer = Producer({**base, "enable.idempotence": True, "linger.ms": 5})

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Store ``letters`` (idempotent on ``id``), publish the new ones; return how many."""
        added = self.inner.add(letters)
        if not added:
            return added
        errors: list[KafkaError] = []

        def report(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                errors.append(error)

        for letter in letters:
            self._producer.produce(
                self.topic,
                key=letter.id.encode(),
                value=msgspec.json.encode(letter),
                headers=[
                    ("schema_version", SCHEMA_VERSION.encode()),
                    ("reason", str(letter.reason).encode()),
                    ("source", letter.source.encode()),
                ],
                on_delivery=report,
            )
            self._producer.poll(0)
        self._producer.flush(self.timeout)
        if errors:
            raise_error(errors[0], "cannot publish dead letters", self.topic)
        return added

    def counts(self, *, source: str | None = None, pending_only: bool = False) -> dict[str, int]:
        """Number of dead letters by reason (from the store of record)."""
        return self.inner.counts(source=source, pending_only=pending_only)

    def examples(self, reason: str, limit: int = 3) -> list[DeadLetter]:
        """A few dead letters with ``reason``, oldest first."""
        return self.inner.examples(reason, limit)

    def pending(
        self, *, reason: str | None = None, source: str | None = None
    ) -> Iterator[DeadLetter]:
        """Dead letters not yet replayed successfully, oldest first."""
        return self.inner.pending(reason=reason, source=source)

    def mark_replayed(self, ids: Sequence[str], at: datetime) -> None:
        """Mark dead letters as re-ingested successfully at ``at``."""
        self.inner.mark_replayed(ids, at)

    def close(self) -> None:
        """Flush the producer and close the store of record."""
        self._producer.flush(self.timeout)
        self.inner.close()
