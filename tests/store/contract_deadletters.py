"""The contract every :class:`~dockline.core.ports.DeadLetterStore` implementation passes.

Subclass :class:`DeadLetterStoreContract` and provide ``make_store``: a factory of handles on
ONE underlying store, so tests can close and reopen it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dockline.core.contracts import DeadLetter, RejectReason, dead_letter_id
from dockline.core.errors import ValidationError
from dockline.core.ports import DeadLetterStore

MakeStore = Callable[[], DeadLetterStore]

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def letter(
    i: int,
    *,
    reason: RejectReason = RejectReason.MISSING_FIELD,
    source: str = "feed-a",
    at: datetime | None = None,
) -> DeadLetter:
    """The ``i``-th dead letter of a batch; ``at`` defaults to ``T0 + i seconds``."""
    return DeadLetter(
        id=dead_letter_id(source, "batch-1", i),
        source=source,
        topic="station_status",
        reason=reason,
        detail=f"record {i} is bad",
        raw=b'{"station_id": "s%d", "num_bikes_available": null}' % i,
        ingested_at=at if at is not None else T0 + timedelta(seconds=i),
        key=f"s{i}" if i % 2 else None,
        event_ts=T0 - timedelta(minutes=i) if i % 3 else None,
    )


class DeadLetterStoreContract:
    """Shared tests of the DeadLetterStore port."""

    @pytest.fixture
    def make_store(self) -> MakeStore:
        """Override: return a factory of handles on one underlying store."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Iterator[DeadLetterStore]:
        handle = make_store()
        yield handle
        handle.close()

    def test_implements_the_port(self, store: DeadLetterStore) -> None:
        assert isinstance(store, DeadLetterStore)

    def test_add_is_idempotent_on_id(self, store: DeadLetterStore) -> None:
        letters = [letter(i) for i in range(10)]
        assert store.add(letters) == 10
        assert store.add(letters) == 0
        assert store.add([letter(3), letter(10), letter(10)]) == 1
        assert store.add([]) == 0
        assert store.counts() == {"missing_field": 11}

    def test_fields_round_trip(self, store: DeadLetterStore) -> None:
        letters = [letter(i) for i in range(6)]
        store.add(letters)
        back = list(store.pending())
        assert back == letters
        assert all(b.ingested_at.tzinfo is not None for b in back)
        assert isinstance(back[0].reason, RejectReason)

    def test_counts_by_reason_source_and_pending(self, store: DeadLetterStore) -> None:
        store.add([letter(i, reason=RejectReason.LATE) for i in range(5)])
        store.add([letter(i, reason=RejectReason.STALE, source="feed-b") for i in range(100, 103)])
        store.add([letter(i, reason=RejectReason.LATE, source="feed-b") for i in range(200, 202)])
        assert store.counts() == {"late": 7, "stale": 3}
        assert store.counts(source="feed-b") == {"late": 2, "stale": 3}
        assert store.counts(source="nope") == {}
        store.mark_replayed([letter(0).id, letter(1).id], T0 + timedelta(hours=1))
        assert store.counts(pending_only=True) == {"late": 5, "stale": 3}
        assert store.counts() == {"late": 7, "stale": 3}
        assert store.counts(source="feed-a", pending_only=True) == {"late": 3}

    def test_examples_are_oldest_first(self, store: DeadLetterStore) -> None:
        # Inserted newest first, so arrival order and ingested_at order differ.
        store.add([letter(i, at=T0 + timedelta(minutes=10 - i)) for i in range(8)])
        store.add([letter(50, reason=RejectReason.FUTURE)])
        examples = store.examples("missing_field", limit=3)
        assert [e.id for e in examples] == [letter(i).id for i in (7, 6, 5)]
        assert [e.id for e in store.examples(RejectReason.FUTURE)] == [letter(50).id]
        assert store.examples("late") == []
        assert len(store.examples("missing_field", limit=100)) == 8

    def test_pending_is_oldest_first_filtered_and_paged(self, store: DeadLetterStore) -> None:
        many = [letter(i, at=T0 + timedelta(seconds=(i * 7919) % 2500)) for i in range(2500)]
        store.add(many)
        store.add([letter(9000, reason=RejectReason.BAD_TYPE, source="feed-b")])
        pending = list(store.pending(reason="missing_field"))
        assert len(pending) == 2500
        times = [p.ingested_at for p in pending]
        assert times == sorted(times)
        assert [p.id for p in store.pending(source="feed-b")] == [letter(9000, source="feed-b").id]
        assert list(store.pending(reason="late")) == []

    def test_marking_replayed_while_iterating_is_safe(self, store: DeadLetterStore) -> None:
        store.add([letter(i) for i in range(2100)])
        seen = []
        for item in store.pending():
            seen.append(item.id)
            store.mark_replayed([item.id], T0 + timedelta(days=1))
        assert len(seen) == len(set(seen)) == 2100
        assert list(store.pending()) == []
        assert store.counts(pending_only=True) == {}

    def test_mark_replayed_needs_an_aware_time_and_ignores_unknown_ids(
        self, store: DeadLetterStore
    ) -> None:
        store.add([letter(1)])
        with pytest.raises(ValidationError):
            store.mark_replayed([letter(1).id], datetime(2024, 5, 1))
        store.mark_replayed(["no-such-id"], T0)
        assert store.counts(pending_only=True) == {"missing_field": 1}

    def test_reopen_after_close_keeps_everything(self, make_store: MakeStore) -> None:
        first = make_store()
        first.add([letter(i) for i in range(5)])
        first.mark_replayed([letter(0).id], T0)
        first.close()
        second = make_store()
        try:
            assert second.counts() == {"missing_field": 5}
            assert second.counts(pending_only=True) == {"missing_field": 4}
            assert second.add([letter(i) for i in range(6)]) == 1
        finally:
            second.close()
