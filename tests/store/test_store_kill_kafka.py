"""kill -9 of a producer and of the offline sink on the Kafka log (Tansu): the offline store
ends with every record exactly once."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import duckdb
import pytest
from store_helpers import TOPIC, check_manifests
from test_store_kill import kill_after, spawn, wait_for

from dockline.store import OfflineStore
from dockline.store.log.kafka import KafkaEventLog

BACKLOG = 12_000
"""Rows the writer adds when the sink has nothing left to be killed in."""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_producer_and_sink_killed_and_resumed_store_every_row_once(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    rng = random.Random(17)
    prefix = f"kill-{uuid.uuid4().hex[:8]}."
    spec = f"kafka://{kafka_bootstrap}/{prefix}"
    root = tmp_path / "offline"
    total, batch = 30_000, 150
    observer = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    observer.create_topic(TOPIC, 4)
    kills = 0
    for _ in range(3):
        proc = spawn("writer", spec, str(total), str(batch))
        try:
            ready = wait_for(lambda: observer.producer_state("writer") is not None, timeout=60)
        except AssertionError:
            proc.kill()
            proc.wait(timeout=10)
            raise
        kills += kill_after(proc, ready, rng.uniform(0.2, 1.0))
        # The producer state always equals what the log holds: one commit record holds both.
        state = observer.producer_state("writer")
        assert state is not None
        assert int(state) == sum(observer.end_offsets(TOPIC).values())
        # a sink run between kills: it sees a consistent prefix, never a half append
        assert spawn("sink", spec, str(root), "2000").wait(timeout=60) == 0
    assert kills >= 1, "the writer finished before any kill; make it slower"
    assert spawn("writer", spec, str(total), str(batch)).wait(timeout=120) == 0
    # the sink killed too, mid-run, while earlier runs' files are in place; whenever nothing is
    # left for it (the sinks between writer kills may have landed it all, or a kill came after
    # its last commit), the writer first adds a backlog, so a kill does not depend on timing
    sink_kills = 0
    for _ in range(6):
        if observer.committed("offline-sink", TOPIC) == observer.end_offsets(TOPIC):
            total += BACKLOG
            assert spawn("writer", spec, str(total), str(batch)).wait(timeout=120) == 0
        before = observer.committed("offline-sink", TOPIC)
        proc = spawn("sink", spec, str(root), "300")
        try:
            # ready at its first commit, or when it exits (it may finish between two polls)
            ready = wait_for(
                lambda before=before, proc=proc: (
                    observer.committed("offline-sink", TOPIC) != before or proc.poll() is not None
                ),
                timeout=60,
            )
        except AssertionError:
            proc.kill()
            proc.wait(timeout=10)
            raise
        sink_kills += kill_after(proc, ready, rng.uniform(0.05, 0.3))
        if sink_kills >= 2:
            break
    assert sink_kills >= 1, "the sink finished before every kill, even with a backlog"
    assert spawn("sink", spec, str(root), "2000").wait(timeout=120) == 0
    assert observer.producer_state("writer") == str(total).encode()
    assert sum(observer.end_offsets(TOPIC).values()) == total
    assert observer.committed("offline-sink", TOPIC) == observer.end_offsets(TOPIC)
    store = OfflineStore(root)
    stored = (
        duckdb.connect()
        .execute(
            f"SELECT count(*), count(DISTINCT (station_id, event_ts)) FROM {store.scan(TOPIC)}"
        )
        .fetchone()
    )
    assert stored == (total, total)
    assert check_manifests(store, TOPIC) == total
    observer.close()
