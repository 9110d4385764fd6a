"""Online/offline consistency: do both executions of the plan give the same values?

:func:`measure_consistency` replays the log through a fresh
:class:`~dockline.features.online.OnlineExecutor` (from offset 0; the live consumer group is not
touched), samples ``(entity, T)`` points at micro-batch times ``T`` (seeded reservoir), recomputes
them with the offline executor and compares every feature: equal when both are null, or both
finite with ``|a - b| <= 1e-9 · max(1, |a|, |b|)``. The state part of a vector is taken during
the replay; batch and derived features (which need no state) only for the kept points, after it.

:func:`measure_served_consistency` does it Chronon's way, from what was really served: the
vectors logged by serving at their request times, recomputed offline at those times.

:func:`heal` recomputes vectors offline and overwrites the online store with them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec
import pyarrow as pa

from dockline.core.contracts import TS_TYPE
from dockline.core.errors import NotFoundError
from dockline.core.ports import EventLog, OnlineStore
from dockline.core.time import Clock, to_micros
from dockline.features._online_replay import Cursor, feed_round
from dockline.features.expr import Value
from dockline.features.materialize import FEATURES_GROUP
from dockline.features.online import BatchProvider, OnlineExecutor
from dockline.features.plan import Plan

__all__ = [
    "ConsistencyReport",
    "FeatureAgreement",
    "HealReport",
    "Mismatch",
    "OfflineFeatures",
    "OfflineSource",
    "ServedConsistencyReport",
    "heal",
    "measure_consistency",
    "measure_served_consistency",
    "values_match",
]

RELATIVE_TOLERANCE = 1e-9
_EXAMPLES = 5


@runtime_checkable
class OfflineFeatures(Protocol):
    """What this module needs of the offline executor (``OfflineExecutor`` satisfies it)."""

    def features(self, spine: pa.Table, *, labels: bool = False) -> pa.Table:
        """One row per spine row (key, ``as_of``): groups' ``__as_of`` and every feature."""
        ...


OfflineSource = OfflineFeatures | Callable[[], OfflineFeatures]
"""An offline executor, or a factory that makes one (it is then closed after use if it can)."""


def values_match(a: Any, b: Any) -> bool:
    """Equal if both null, or both finite and within 1e-9 relative (absolute below 1)."""
    if a is None or b is None:
        return a is None and b is None
    x, y = float(a), float(b)
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    return abs(x - y) <= RELATIVE_TOLERANCE * max(1.0, abs(x), abs(y))


class FeatureAgreement(msgspec.Struct):
    """Per feature: points compared, mismatches, and ``rate`` = the fraction that matched."""

    compared: int = 0
    mismatches: int = 0
    rate: float = 1.0


class Mismatch(msgspec.Struct):
    """One disagreement: the point and both values."""

    entity: str
    t_us: int
    online: Value
    offline: Value


class ConsistencyReport(msgspec.Struct):
    """Result of :func:`measure_consistency` (``examples``: up to 5 per mismatching feature)."""

    points: int
    per_feature: dict[str, FeatureAgreement]
    examples: dict[str, list[Mismatch]]
    overall_match_rate: float

    def to_json(self) -> bytes:
        """The report as JSON."""
        return msgspec.json.encode(self)


class HealReport(msgspec.Struct):
    """Result of :func:`heal`: vectors written, how many differed, and per feature how often.

    ``changed_entities``/``changed`` compare like with like: a stored vector against the offline
    value at the stored vector's own ``as_of`` (an entity without one counts as changed).
    ``kept_newer`` counts stored vectors newer than ``t_us``, which heal never replaces.
    """

    t_us: int
    entities: int
    changed_entities: int
    changed: dict[str, int]
    kept_newer: int = 0


def _compared_columns(plan: Plan) -> tuple[str, ...]:
    return (*(g.as_of_column for g in plan.groups), *plan.feature_names)


def _python_column(column: pa.ChunkedArray) -> list[Any]:
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
    return column.to_pylist()  # type: ignore[no-any-return]


def _offline_rows(
    plan: Plan, offline: OfflineSource, points: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """Offline values at ``points``, by (entity, t)."""
    spine = pa.table(
        {
            plan.key: pa.array([e for e, _ in points], pa.string()),
            "as_of": pa.array([t for _, t in points], TS_TYPE),
        }
    )
    if isinstance(offline, OfflineFeatures):
        result = offline.features(spine)
    else:
        executor = offline()
        try:
            result = executor.features(spine)
        finally:
            close = getattr(executor, "close", None)
            if callable(close):
                close()
    names = [c for c in _compared_columns(plan) if c in result.column_names]
    columns = {name: _python_column(result.column(name)) for name in names}
    keys = result.column(plan.key).to_pylist()
    times = _python_column(result.column("as_of"))
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for i, (key, t) in enumerate(zip(keys, times, strict=True)):
        rows[(key, t)] = {name: values[i] for name, values in columns.items()}
    return rows


def measure_consistency(
    plan: Plan,
    log: EventLog,
    offline: OfflineSource,
    *,
    start_us: int | None,
    end_us: int | None,
    sample: int = 2000,
    seed: int = 0,
    batch_provider: BatchProvider | None = None,
    max_records: int = 100_000,
    batch_events: int = 1,
) -> ConsistencyReport:
    """Replay the log online, sample ``(entity, T)`` in ``[start_us, end_us)``, compare offline.

    Deterministic given the log and ``seed``. Columns compared: each group's ``__as_of`` and
    every feature of the plan.
    """
    executor = OnlineExecutor(plan, batch_provider=batch_provider)
    ingested_at = executor.ingested_at_columns
    cursor = Cursor(log, executor.tables, max_records, ingested_at)
    rng = random.Random(seed)
    reservoir: list[tuple[str, int, dict[str, Value]]] = []
    seen = 0
    for tables in cursor.rounds():
        for t_us, touched, _ in feed_round(executor, tables, ingested_at, batch_events):
            if (start_us is not None and t_us < start_us) or (
                end_us is not None and t_us >= end_us
            ):
                continue
            for entity in sorted(touched):
                # the state part is taken now (later pruning may drop what this point used);
                # batch and derived features only for the points kept, after the replay
                if len(reservoir) < sample:
                    reservoir.append((entity, t_us, executor.state_values(entity, t_us)))
                else:
                    slot = rng.randrange(seen + 1)
                    if slot < sample:
                        reservoir[slot] = (entity, t_us, executor.state_values(entity, t_us))
                seen += 1
    reservoir.sort(key=lambda item: (item[1], item[0]))
    names = _compared_columns(plan)
    per_feature = {name: FeatureAgreement() for name in names}
    examples: dict[str, list[Mismatch]] = {}
    if reservoir:
        # offline first: computing the spine's batch runs in one go caches them in the offline
        # executor, which is what the online side's batch provider then reads
        offline_rows = _offline_rows(plan, offline, [(e, t) for e, t, _ in reservoir])
        for entity, t_us, state in reservoir:
            online_values = executor.complete(entity, t_us, state)
            theirs = offline_rows.get((entity, t_us), {})
            for name in names:
                agreement = per_feature[name]
                agreement.compared += 1
                ours, other = online_values.get(name), theirs.get(name)
                if not values_match(ours, other):
                    agreement.mismatches += 1
                    found = examples.setdefault(name, [])
                    if len(found) < _EXAMPLES:
                        found.append(Mismatch(entity, t_us, ours, other))
    compared = sum(a.compared for a in per_feature.values())
    mismatches = sum(a.mismatches for a in per_feature.values())
    for agreement in per_feature.values():
        if agreement.compared:
            agreement.rate = 1.0 - agreement.mismatches / agreement.compared
    return ConsistencyReport(
        points=len(reservoir),
        per_feature=per_feature,
        examples=examples,
        overall_match_rate=1.0 - mismatches / compared if compared else 1.0,
    )


class ServedConsistencyReport(msgspec.Struct):
    """Result of :func:`measure_served_consistency`: served vectors vs offline at their times.

    ``compared`` counts (entity, request time) points, ``mismatches`` the points where any
    feature disagreed; ``features`` has per feature the values compared, mismatches and up to
    five examples.
    """

    compared: int
    mismatches: int
    features: dict[str, dict[str, Any]]
    skipped: dict[str, int]

    def to_json(self) -> bytes:
        """The report as JSON."""
        return msgspec.json.encode(self)


def measure_served_consistency(
    plan: Plan, offline: OfflineSource, served: pa.Table, *, chunk: int = 50_000
) -> ServedConsistencyReport:
    """Compare logged served vectors with the offline values at their request times.

    ``served`` has columns ``entity`` (string), ``logged_at`` (timestamp: the request time the
    vector was evaluated at) and ``vector`` (list of float64 in ``plan.feature_names`` order).
    Identical points (a shadow row beside its champion row) count once. Rows whose vector is
    null (an unknown entity, an override-only request) or has another length are skipped and
    counted by reason in ``skipped``.
    """
    names = plan.feature_names
    skipped: dict[str, int] = {}
    points: dict[tuple[str, int], list[Any]] = {}
    entities = served.column("entity").to_pylist()
    times = _python_column(served.column("logged_at"))
    vectors = served.column("vector").to_pylist()
    for entity, t, vector in zip(entities, times, vectors, strict=True):
        if vector is None:
            skipped["no_vector"] = skipped.get("no_vector", 0) + 1
        elif len(vector) != len(names):
            skipped["other_plan"] = skipped.get("other_plan", 0) + 1
        else:
            points.setdefault((entity, t), vector)
    features: dict[str, dict[str, Any]] = {
        name: {"compared": 0, "mismatches": 0, "examples": []} for name in names
    }
    bad_points = 0
    ordered = sorted(points, key=lambda p: (p[1], p[0]))
    for lo in range(0, len(ordered), chunk):
        part = ordered[lo : lo + chunk]
        offline_rows = _offline_rows(plan, offline, part)
        for point in part:
            theirs = offline_rows.get(point, {})
            ours = points[point]
            bad = False
            for i, name in enumerate(names):
                entry = features[name]
                entry["compared"] += 1
                if not values_match(ours[i], theirs.get(name)):
                    bad = True
                    entry["mismatches"] += 1
                    if len(entry["examples"]) < _EXAMPLES:
                        entry["examples"].append(
                            {
                                "entity": point[0],
                                "t_us": point[1],
                                "served": ours[i],
                                "offline": theirs.get(name),
                            }
                        )
            bad_points += bad
    return ServedConsistencyReport(
        compared=len(points), mismatches=bad_points, features=features, skipped=skipped
    )


def heal(
    plan: Plan,
    offline_executor: OfflineSource,
    store: OnlineStore,
    entities: Sequence[str],
    t_us: int,
    *,
    clock: Clock,
) -> HealReport:
    """Recompute the vectors of ``entities`` at ``t_us`` offline and overwrite the online store.

    A stored vector newer than ``t_us`` is kept (heal never goes back in time). Differences are
    judged like with like — each stored vector against the offline value at its own ``as_of`` —
    and reported per feature.
    """
    columns = plan.feature_names
    try:
        registered = store.columns(FEATURES_GROUP)
    except NotFoundError:
        registered = ()
    if tuple(registered) != columns:
        store.register(FEATURES_GROUP, columns)
    requested = list(dict.fromkeys(entities))
    found = store.read_many(requested, [FEATURES_GROUP])
    before = {e: r.get(FEATURES_GROUP) for e, r in zip(requested, found, strict=True)}
    unique = [e for e in requested if (v := before[e]) is None or v.as_of_us <= t_us]
    kept_newer = len(requested) - len(unique)
    if not unique:
        return HealReport(
            t_us=t_us, entities=0, changed_entities=0, changed={}, kept_newer=kept_newer
        )
    points = {(e, t_us) for e in unique}
    points |= {(e, v.as_of_us) for e in unique if (v := before[e]) is not None}
    offline_rows = _offline_rows(plan, offline_executor, sorted(points, key=lambda p: (p[1], p[0])))
    changed = dict.fromkeys(columns, 0)
    changed_entities = 0
    for entity in unique:
        vector = before[entity]
        if vector is None:
            changed_entities += 1
            for name in columns:
                changed[name] += 1
            continue
        old = dict(zip(columns, vector.values, strict=True))
        then = offline_rows.get((entity, vector.as_of_us), {})
        differs = False
        for name in columns:
            if not values_match(old.get(name), then.get(name)):
                changed[name] += 1
                differs = True
        changed_entities += differs
    rows = pa.table(
        {
            plan.key: pa.array(unique, pa.string()),
            "as_of": pa.array([t_us] * len(unique), TS_TYPE),
            **{
                name: pa.array(
                    [offline_rows.get((e, t_us), {}).get(name) for e in unique], pa.float64()
                )
                for name in columns
            },
        }
    )
    written = store.write(
        FEATURES_GROUP, rows, key=plan.key, as_of="as_of", written_at_us=to_micros(clock.now())
    )
    return HealReport(
        t_us=t_us,
        entities=written,
        changed_entities=changed_entities,
        changed={name: n for name, n in changed.items() if n},
        kept_newer=kept_newer,
    )
