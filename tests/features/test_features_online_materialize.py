"""The materializer against the real embedded event log and online store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from reference import reference_features
from test_features_online_helpers import (
    T0,
    M,
    bikeshare_plan,
    close_enough,
    feed_events,
    info_events,
    info_table,
    status_table,
)

from dockline.core.time import FixedClock, from_micros
from dockline.features.materialize import FEATURES_GROUP, Materializer
from dockline.features.online import OnlineExecutor
from dockline.store import SqliteEventLog, SqliteOnlineStore

STATUS, INFO = "station_status", "station_information"


def test_run_once_writes_each_touched_vector_once_as_of_the_newest_ingestion(
    log: SqliteEventLog, store: SqliteOnlineStore, tmp_path: Path
) -> None:
    plan = bikeshare_plan()
    status = feed_events(6, 40, seed=1)
    infos = info_events(6)
    log.append(INFO, info_table(infos), key="station_id")
    log.append(STATUS, status_table(status), key="station_id")
    clock = FixedClock(from_micros(T0 + 41 * M))
    mat = Materializer(
        plan, log, store, clock=clock, state_path=tmp_path / "state.msgpack", batch_events=1
    )
    report = mat.run_once()
    assert report.events == len(status) + len(infos)
    assert report.micro_batches == 41  # one per poll (+ the information load): polls are whole
    assert report.entities == 6
    # one read round: each touched entity written once, as of the round's newest ingestion
    # (intermediate vectors would only be overwritten in a latest-vector store)
    assert report.vectors == 6
    assert report.freshness_us and report.freshness_p50_us is not None
    assert report.freshness_p99_us == max(report.freshness_us)
    assert log.committed("online-features", STATUS) == log.end_offsets(STATUS)
    assert (tmp_path / "state.msgpack").exists()
    assert store.columns(FEATURES_GROUP) == plan.feature_names
    # each station's stored vector is the reference as of the newest ingestion time
    events = {STATUS: status, INFO: infos}
    t = max(e["ingested_at"] for e in status)
    for station in sorted({e["station_id"] for e in status}):
        vector = store.read(station, [FEATURES_GROUP])[FEATURES_GROUP]
        assert vector is not None and vector.as_of_us == t
        assert vector.written_at_us == T0 + 41 * M
        want = reference_features(plan, events, [(station, t)])[0]
        stored = dict(zip(plan.feature_names, vector.values, strict=True))
        batch = {p.name for p in plan.profiles} | {n.name for n in plan.neighbourhoods}
        for name in plan.feature_names:
            if name in batch or name == "neighbour_fill_gap":
                assert stored[name] is None  # no batch provider: batch features are null
            else:
                assert close_enough(stored[name], want[name]), (station, name)
    again = mat.run_once()  # nothing new
    assert again.events == 0 and again.vectors == 0


def test_restart_resumes_and_a_replay_after_a_crash_counts_nothing_twice(
    log: SqliteEventLog, store: SqliteOnlineStore, tmp_path: Path
) -> None:
    plan = bikeshare_plan(batch=False)
    status = feed_events(5, 60, seed=2)
    first, second = status[: len(status) // 2], status[len(status) // 2 :]
    state = tmp_path / "state.msgpack"
    clock = FixedClock(from_micros(T0))
    log.append(STATUS, status_table(first), key="station_id")
    Materializer(plan, log, store, clock=clock, state_path=state).run_once()
    log.append(STATUS, status_table(second), key="station_id")
    resumed = Materializer(plan, log, store, clock=clock, state_path=state)
    report = resumed.run_once()
    assert report.events == len(second)  # from the committed offsets, not from 0
    # a crash after the snapshot but before the commit: the group's offsets go back to 0
    for partition in range(log.partitions(STATUS)):
        log.commit("online-features", STATUS, {partition: 0})
    crashed = Materializer(plan, log, store, clock=clock, state_path=state)
    replay = crashed.run_once()
    assert replay.events == len(status) and replay.vectors == 0  # all known: nothing touched
    fresh = OnlineExecutor(plan)
    fresh.update_many(STATUS, status_table(status))
    t = max(e["ingested_at"] for e in status)
    for station in sorted({e["station_id"] for e in status}):
        assert crashed.executor.vector(station, t) == fresh.vector(station, t)
        want = reference_features(plan, {STATUS: status}, [(station, t)])[0]
        got = crashed.executor.vector(station, t)
        assert all(close_enough(got[k], want[k]) for k in want), station


def test_without_state_the_log_is_replayed_from_the_start(
    log: SqliteEventLog, store: SqliteOnlineStore
) -> None:
    plan = bikeshare_plan(batch=False)
    status = feed_events(3, 20, seed=3)
    log.append(STATUS, status_table(status), key="station_id")
    clock = FixedClock(from_micros(T0))
    Materializer(plan, log, store, clock=clock).run_once()
    again = Materializer(plan, log, store, clock=clock).run_once()
    assert again.events == len(status)  # state was lost: rebuilt from offset 0


def test_a_state_of_another_plan_is_rebuilt_from_the_log(
    log: SqliteEventLog, store: SqliteOnlineStore, tmp_path: Path
) -> None:
    status = feed_events(3, 20, seed=3)
    log.append(STATUS, status_table(status), key="station_id")
    clock, state = FixedClock(from_micros(T0)), tmp_path / "state"
    first = Materializer(bikeshare_plan(batch=False), log, store, clock=clock, state_path=state)
    first.run_once()
    same = Materializer(bikeshare_plan(batch=False), log, store, clock=clock, state_path=state)
    assert same.resumed and same.run_once().events == 0
    changed = Materializer(bikeshare_plan(), log, store, clock=clock, state_path=state)
    assert not changed.resumed
    assert changed.run_once().events == len(status)
    assert Materializer(bikeshare_plan(), log, store, clock=clock, state_path=state).resumed


def test_follow_consumes_until_stopped(log: SqliteEventLog, store: SqliteOnlineStore) -> None:
    plan = bikeshare_plan(batch=False)
    status = feed_events(4, 10, seed=4)
    clock = FixedClock(from_micros(T0))
    mat = Materializer(plan, log, store, clock=clock)
    chunks = [status[:20], status[20:]]
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        if chunks:
            log.append(STATUS, status_table(chunks.pop(0)), key="station_id")
            clock.advance(timedelta(minutes=1))
            return False
        return calls > 4

    report = mat.follow(stop=stop, poll_interval=0.01)
    assert report.events == len(status) and report.entities == 4
    # one freshness sample per written round: two appends, two rounds
    assert len(report.freshness_us) == 2 and report.micro_batches >= 2
