"""Consistency (online replay vs an offline computation) and healing of the online store."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from test_features_online_helpers import (
    T0,
    M,
    ReferenceOffline,
    bikeshare_plan,
    feed_events,
    info_events,
    info_table,
    status_table,
)

from dockline.core.contracts import TS_TYPE
from dockline.core.time import FixedClock, from_micros
from dockline.features.consistency import heal, measure_consistency, values_match
from dockline.features.materialize import FEATURES_GROUP, Materializer
from dockline.store import SqliteEventLog, SqliteOnlineStore

STATUS = "station_status"


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    with SqliteEventLog(tmp_path / "log.sqlite", default_partitions=2) as log:
        yield log


class Skewed(ReferenceOffline):
    """The reference with one feature off by a little: what a bug in one executor looks like."""

    def features(self, spine: pa.Table, *, labels: bool = False) -> pa.Table:
        table = super().features(spine, labels=labels)
        index = table.column_names.index("num_bikes_available__mean_15m")
        values = [None if v is None else v + 1e-6 for v in table.column(index).to_pylist()]
        return table.set_column(
            index, "num_bikes_available__mean_15m", pa.array(values, pa.float64())
        )


def test_values_match_is_relative_with_an_absolute_floor() -> None:
    assert values_match(None, None) and not values_match(None, 0.0)
    assert values_match(1e12, 1e12 + 1) and not values_match(1.0, 1.0 + 1e-8)
    assert values_match(1e-12, 0.0)
    assert not values_match(float("nan"), float("nan"))


def test_online_replay_agrees_with_the_reference_and_reports_disagreement(
    log: SqliteEventLog,
) -> None:
    plan = bikeshare_plan(batch=False)
    status = feed_events(8, 90, seed=5)
    log.append(STATUS, status_table(status), key="station_id")
    log.commit("online-features", STATUS, {0: 3})
    offline = ReferenceOffline(plan, {STATUS: status})
    start, end = T0 + 20 * M, T0 + 80 * M
    report = measure_consistency(plan, log, offline, start_us=start, end_us=end, sample=60, seed=7)
    assert report.points == 60 and offline.calls == 1
    assert report.overall_match_rate == 1.0, report.examples
    assert set(report.per_feature) == {"availability__as_of", *plan.feature_names}
    assert all(a.compared == 60 and a.mismatches == 0 for a in report.per_feature.values())
    assert log.committed("online-features", STATUS) == {0: 3, 1: 0}  # live group untouched
    decoded = msgspec.json.decode(report.to_json())
    assert decoded["per_feature"]["fill_ratio"] == {"compared": 60, "mismatches": 0, "rate": 1.0}
    # seeded: the same sample again; a factory works as well as an instance
    again = measure_consistency(
        plan,
        log,
        lambda: ReferenceOffline(plan, {STATUS: status}),
        start_us=start,
        end_us=end,
        sample=60,
        seed=7,
    )
    assert again == report
    bad = measure_consistency(
        plan, log, Skewed(plan, {STATUS: status}), start_us=start, end_us=end, sample=60, seed=7
    )
    skewed = bad.per_feature["num_bikes_available__mean_15m"]
    assert skewed.mismatches > 0 and skewed.rate < 1.0
    examples = bad.examples["num_bikes_available__mean_15m"]
    assert 0 < len(examples) <= 5
    assert examples[0].offline == pytest.approx(examples[0].online + 1e-6)  # type: ignore[operator]
    assert start <= examples[0].t_us < end
    assert list(bad.examples) == ["num_bikes_available__mean_15m"]
    assert bad.overall_match_rate < 1.0


def test_heal_overwrites_what_differs_and_reports_it(log: SqliteEventLog, tmp_path: Path) -> None:
    plan = bikeshare_plan(batch=False)
    status = feed_events(4, 30, seed=6)
    log.append(STATUS, status_table(status), key="station_id")
    clock = FixedClock(from_micros(T0 + 40 * M))
    store = SqliteOnlineStore(tmp_path / "online.sqlite")
    try:
        mat = Materializer(plan, log, store, clock=clock)
        mat.run_once()
        t = max(e["ingested_at"] for e in status)
        offline = ReferenceOffline(plan, {STATUS: status})
        stations = sorted({e["station_id"] for e in status})
        # all stations were touched by the last poll, so the store holds vectors at t
        assert all(store.read(s, [FEATURES_GROUP])[FEATURES_GROUP].as_of_us == t for s in stations)  # type: ignore[union-attr]
        clean = heal(plan, offline, store, stations, t, clock=clock)
        assert clean.entities == 4 and clean.changed_entities == 0 and clean.changed == {}
        broken: dict[str, Any] = {name: [1e6] for name in plan.feature_names}
        store.write(
            FEATURES_GROUP,
            pa.table({"station_id": ["s000"], "as_of": pa.array([t], TS_TYPE), **broken}),
            key="station_id",
            as_of="as_of",
            written_at_us=1,
        )
        healed = heal(plan, offline, store, [*stations, "nowhere"], t, clock=clock)
        assert healed.entities == 5 and healed.changed_entities == 2  # s000 and the new one
        assert healed.changed["fill_ratio"] == 2
        vector = store.read("s000", [FEATURES_GROUP])[FEATURES_GROUP]
        assert vector is not None and vector.written_at_us == T0 + 40 * M
        assert dict(zip(plan.feature_names, vector.values, strict=True)) == pytest.approx(
            {k: v for k, v in mat.executor.vector("s000", t).items() if k in plan.feature_names}
        )
        # never back in time: a heal at an earlier time keeps the newer vectors
        earlier = heal(plan, offline, store, stations, t - 10 * M, clock=clock)
        assert earlier.entities == 0 and earlier.kept_newer == 4
        after = store.read("s001", [FEATURES_GROUP])[FEATURES_GROUP]
        assert after is not None and after.as_of_us == t
        # like with like: a correct vector stored at an older time is not "changed" by a heal
        # at a later time, though the later values differ
        older = t - 7 * M
        old_row = ReferenceOffline(plan, {STATUS: status}).features(
            pa.table({"station_id": ["s002"], "as_of": pa.array([older], TS_TYPE)})
        )
        store.write(
            FEATURES_GROUP,
            pa.table(
                {
                    "station_id": ["s002"],
                    "as_of": pa.array([older], TS_TYPE),
                    **{n: old_row.column(n) for n in plan.feature_names},
                }
            ),
            key="station_id",
            as_of="as_of",
            written_at_us=1,
        )
        later = heal(plan, offline, store, ["s002"], t, clock=clock)
        assert later.entities == 1 and later.changed_entities == 0, later.changed
    finally:
        store.close()


def test_online_matches_the_offline_executor_on_the_full_bikeshare_plan(
    log: SqliteEventLog,
) -> None:
    """Nine days of a small feed, so the hour-of-week profile has values; batch features come
    from the offline executor's runs, as the scheduled job would push them."""
    from dockline.features.offline import OfflineExecutor

    plan = bikeshare_plan()
    status = feed_events(5, 9 * 48, seed=11, every=30 * M)
    infos = info_events(5)
    log.append("station_information", info_table(infos), key="station_id")
    log.append(STATUS, status_table(status), key="station_id")
    tables = {STATUS: status_table(status), "station_information": info_table(infos)}
    with OfflineExecutor(plan, tables, threads=1) as offline:
        start = T0 + 8 * 1440 * M
        report = measure_consistency(
            plan,
            log,
            offline,
            start_us=start,
            end_us=None,
            sample=40,
            seed=1,
            batch_provider=offline.batch_run,
        )
        probe = offline.features(
            pa.table({"station_id": ["s000"], "as_of": pa.array([start + 60 * M], TS_TYPE)})
        )
    assert report.points == 40
    assert report.overall_match_rate == 1.0, report.examples
    assert probe.column("fill_how_28d")[0].as_py() is not None  # the profile is exercised
    assert probe.column("neighbour_fill_k5")[0].as_py() is not None


@pytest.mark.parametrize(("max_records", "sparse"), [(37, False), (37, True), (100_000, False)])
def test_a_small_topic_read_whole_does_not_run_ahead_of_a_large_one(
    log: SqliteEventLog, tmp_path: Path, max_records: int, sparse: bool
) -> None:
    """Regression: station information (a few rows, read to its end in the first round) was fed
    before the status rows of later rounds, so a capacity changed at the end of the log was
    "known" to every earlier point online, and earlier information was pruned by it. With
    ``sparse``, most stations report rarely, so one partition of the status topic runs ahead
    of the other in time: the frontier must follow the slowest partition, not the topic."""
    plan = bikeshare_plan(batch=False)
    # s000-s003 hash to partition 1, s004 and s005 to partition 0
    status = feed_events(6, 120, seed=9)
    if sparse:  # partition 0 reports a third as often: 37 of its rows reach further in time
        status = [e for i, e in enumerate(status) if e["station_id"] < "s004" or i % 3 == 0]
    changed = T0 + 50 * M
    later = [
        dict(row, event_ts=changed, ingested_at=changed, capacity=30) for row in info_events(6)
    ]
    infos = info_events(6) + later
    log.append("station_information", info_table(infos), key="station_id")
    log.append(STATUS, status_table(status), key="station_id")
    offline = ReferenceOffline(plan, {STATUS: status, "station_information": infos})
    report = measure_consistency(
        plan, log, offline, start_us=None, end_us=None, sample=200, seed=3, max_records=max_records
    )
    assert report.overall_match_rate == 1.0, report.examples
    # and the materializer commits nothing it holds back
    store = SqliteOnlineStore(tmp_path / "online.sqlite")
    try:
        mat = Materializer(
            plan, log, store, clock=FixedClock(from_micros(T0 + 200 * M)), max_records=max_records
        )
        mat.run_once()
        assert log.committed("online-features", STATUS) == log.end_offsets(STATUS)
        assert log.committed("online-features", "station_information") == log.end_offsets(
            "station_information"
        )
        vector = store.read("s001", [FEATURES_GROUP])[FEATURES_GROUP]
        assert vector is not None
        assert dict(zip(plan.feature_names, vector.values, strict=True))["capacity__static"] == 30
    finally:
        store.close()


def test_cursor_rounds_are_time_aligned_and_commit_only_what_was_handed_out(
    log: SqliteEventLog,
) -> None:
    from dockline.features._online_replay import Cursor

    status = feed_events(4, 120, seed=9)
    infos = info_events(4) + info_events(4, at=T0 + 100 * M)
    log.append("station_information", info_table(infos), key="station_id")
    log.append(STATUS, status_table(status), key="station_id")
    ingested = {STATUS: "ingested_at", "station_information": "ingested_at"}
    cursor = Cursor(log, (STATUS, "station_information"), 37, ingested)
    rounds = cursor.rounds()
    first = next(rounds)
    assert first["station_information"].num_rows == 4  # the later four are held back
    held = cursor.committable()["station_information"]
    assert sum(held.values()) < sum(cursor.positions["station_information"].values())
    seen = [first, *rounds]
    assert sum(r[STATUS].num_rows for r in seen if STATUS in r) == len(status)
    assert sum(r["station_information"].num_rows for r in seen if "station_information" in r) == 8
    for earlier, later in itertools.pairwise(seen):
        top = max(max(t.column("ingested_at").to_pylist()) for t in earlier.values())
        assert all(min(t.column("ingested_at").to_pylist()) >= top for t in later.values())
    assert cursor.committable() == cursor.positions
