"""Read-time evaluation: what is served at t is the offline value at t, for quiet stations too."""

from __future__ import annotations

import pyarrow as pa
import pytest
from reference import reference_features
from test_features_online_helpers import (
    T0,
    M,
    S,
    bikeshare_plan,
    close_enough,
    feed_events,
    info_events,
    info_table,
    status_table,
)

from dockline.core.contracts import TS_TYPE, confirmations_topic
from dockline.core.errors import ConfigError
from dockline.core.ports import FeatureReader
from dockline.core.time import FixedClock, from_micros
from dockline.features.materialize import FEATURES_GROUP, Materializer
from dockline.features.served import ServedVectors
from dockline.store import SqliteEventLog, SqliteOnlineStore

STATUS, INFO = "station_status", "station_information"


def quiet_feed(stations: int, polls: int, quiet_after: int) -> list[dict[str, object]]:
    """A feed whose stations ``s000`` and ``s001`` stop reporting after poll ``quiet_after``."""
    events = feed_events(stations, polls, seed=7)
    cut = T0 + quiet_after * M
    return [
        e
        for e in events
        if e["station_id"] not in ("s000", "s001") or int(e["ingested_at"]) <= cut  # type: ignore[call-overload]
    ]


def test_served_vectors_equal_the_offline_value_at_request_time_for_quiet_stations(
    log: SqliteEventLog, store: SqliteOnlineStore
) -> None:
    plan = bikeshare_plan(batch=False)
    status = quiet_feed(6, 90, quiet_after=30)
    infos = info_events(6)
    log.append(INFO, info_table(infos), key="station_id")
    log.append(STATUS, status_table(status), key="station_id")
    Materializer(plan, log, store, clock=FixedClock(from_micros(T0))).run_once()
    reader = ServedVectors(plan, store)
    assert isinstance(reader, FeatureReader)
    assert reader.columns() == plan.feature_names
    newest = max(int(e["ingested_at"]) for e in status)  # type: ignore[call-overload]
    events = {STATUS: status, INFO: infos}
    checked = stale_differs = 0
    # request times after the last poll: windows empty out, time_since grows, hours move on
    for offset in (0, 1 * S, 7 * M, 16 * M + 3, 61 * M, 119 * M, 3 * 60 * M + 11):
        t = newest + offset
        stations = ["s000", "s001", "s002", "s005"]
        served = reader.read_at(stations, t)
        wants = reference_features(plan, events, [(s, t) for s in stations])
        for station, vector, want in zip(stations, served, wants, strict=True):
            assert vector is not None and vector.t_us == t and vector.known_us == newest
            got = dict(zip(reader.columns(), vector.values, strict=True))
            for name in plan.feature_names:
                assert close_enough(got[name], want[name]), (station, offset, name)
                checked += 1
            # the vector stored at the station's last event is what serving used to return
            old = store.read(station, [FEATURES_GROUP])[FEATURES_GROUP]
            assert old is not None
            old_values = dict(zip(plan.feature_names, old.values, strict=True))
            stale_differs += any(
                not close_enough(old_values[n], want[n]) for n in plan.feature_names
            )
    assert checked > 500
    assert stale_differs > 0  # the old read path was wrong at these times
    assert reader.read_at(["nope"], newest) == [None]


def test_a_poll_that_re_sees_an_event_confirms_it(
    log: SqliteEventLog, store: SqliteOnlineStore
) -> None:
    plan = bikeshare_plan(batch=False)
    status = quiet_feed(3, 20, quiet_after=5)
    log.append(STATUS, status_table(status), key="station_id")
    mat = Materializer(plan, log, store, clock=FixedClock(from_micros(T0)))
    mat.run_once()
    last_s000 = max(int(e["ingested_at"]) for e in status if e["station_id"] == "s000")  # type: ignore[call-overload]
    newest = max(int(e["ingested_at"]) for e in status)  # type: ignore[call-overload]
    [before] = ServedVectors(plan, store).read_at(["s000"], newest)
    assert before is not None and before.confirmed_us == last_s000
    # later polls re-saw s000's newest event: the feed confirms it is current
    topic = confirmations_topic(STATUS)
    log.create_topic(topic, 3)
    seen = [newest - 2 * M, newest]
    log.append(
        topic,
        pa.table(
            {
                "station_id": ["s000", "s000"],
                "event_ts": pa.array([last_s000, last_s000], TS_TYPE),
                "ingested_at": pa.array(seen, TS_TYPE),
            }
        ),
        key="station_id",
    )
    report = mat.run_once()
    assert report.events == 2
    [after] = ServedVectors(plan, store).read_at(["s000"], newest + 5 * S)
    assert after is not None and after.confirmed_us == newest
    # confirmations change freshness, not values
    assert after.values == ServedVectors(plan, store).read_at(["s000"], newest + 5 * S)[0].values  # type: ignore[union-attr]


def test_state_of_another_plan_is_a_feature_schema_mismatch(
    log: SqliteEventLog, store: SqliteOnlineStore
) -> None:
    status = feed_events(2, 5, seed=1)
    log.append(STATUS, status_table(status), key="station_id")
    clock = FixedClock(from_micros(T0))
    Materializer(bikeshare_plan(batch=False), log, store, clock=clock).run_once()
    reader = ServedVectors(bikeshare_plan(batch=True), store)
    with pytest.raises(ConfigError) as caught:
        reader.read_at(["s000"], T0 + 10 * M)
    assert caught.value.reason == "feature_schema_mismatch"
