"""The online executor: the plan as incremental per-entity state fed by the event log.

For each source the plan consumes online (feature groups, static attributes) the executor keeps,
per entity, the events that a point at or after the entity's newest ``ingested_at`` can still use
(:mod:`dockline.features._online_state`), and computes a vector at ``t`` from them by the rules of
``docs/features.md`` — the same values the offline executor computes in SQL::

    >>> from dockline.features import Entity, FeatureGroup, Project, Source, compile_project, last
    >>> station = Entity("station", key="id")
    >>> status = Source("s", entity=station)
    >>> plan = compile_project(Project(name="p", entity=station,
    ...     groups=[FeatureGroup("g", source=status, features=[last("bikes")])]))
    >>> ex = OnlineExecutor(plan)
    >>> ts = pa.array([60_000_000], pa.timestamp("us", tz="UTC"))
    >>> events = pa.table({"id": ["a"], "event_ts": ts, "ingested_at": ts, "bikes": [4]})
    >>> ex.update_many("s", events)
    {'a'}
    >>> ex.vector("a", 120_000_000)["bikes__last"]
    4.0

It is pure: no I/O; :class:`~dockline.features.materialize.Materializer` wires it to the log and
the online store. State round-trips through :meth:`OnlineExecutor.snapshot` (msgpack).

The executor holds the state and wires its parts, which live beside it: source layouts and
compiled groups (``_online_layout``), Arrow → event tuples (``_online_arrow``), the per-entity
buffers (``_online_state``), reading them at ``t`` (``_online_eval``), batch runs
(``_online_batch``), the state's bytes (``_online_snapshot``); ``_online_replay`` feeds it the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pyarrow as pa

from dockline.core.contracts import TS_TYPE, confirmations_topic
from dockline.core.errors import ConfigError
from dockline.features._online_arrow import event_rows, required_micros, source_column
from dockline.features._online_batch import BatchRuns
from dockline.features._online_eval import group_into, hour_of_week, local_time, num, static_into
from dockline.features._online_eval import hour_of_week_in as hour_of_week_in
from dockline.features._online_layout import Layout, compile_group, source_layouts
from dockline.features._online_snapshot import (
    decode_entity,
    decode_snapshot,
    encode_entity,
    encode_snapshot,
)
from dockline.features._online_state import ING, TS, EntityEvents, Event
from dockline.features.expr import Value
from dockline.features.plan import BatchProvider, Plan

__all__ = ["BatchProvider", "OnlineExecutor", "PreparedEvents", "hour_of_week"]


class PreparedEvents:
    """Events of one source table converted once by :meth:`OnlineExecutor.prepare`."""

    __slots__ = ("confirmations", "num_rows", "rows", "table")

    def __init__(
        self,
        table: str,
        num_rows: int,
        rows: tuple[tuple[Layout, list[str], list[Event]], ...],
        confirmations: tuple[list[str], list[int]] | None = None,
    ) -> None:
        self.table = table
        self.num_rows = num_rows
        self.rows = rows  # per layout fed by the table: keys and event tuples, row-aligned
        self.confirmations = confirmations  # (keys, ingested_at µs) of a confirmations topic


class OnlineExecutor:
    """Per-entity state for every feature group (+ static attributes); pure, no I/O.

    * :meth:`update_many` takes events of one source table in any order (late, out of order,
      replayed: an identical event is stored once) and returns the entities it changed.
    * :meth:`vector` / :meth:`vectors` give every plan feature at ``t`` by ``docs/features.md``.
      Exact for any ``t`` at or after the entity's newest ``ingested_at`` fed so far (older
      points may miss events pruned since; the materializer only asks for the former).
    * ``batch_provider(run_us)`` supplies profile/neighbourhood runs (null without one).
    """

    def __init__(self, plan: Plan, *, batch_provider: BatchProvider | None = None) -> None:
        self.plan = plan
        self._layouts = source_layouts(plan)
        self._by_table: dict[str, list[Layout]] = {}
        for layout in self._layouts.values():
            self._by_table.setdefault(layout.source.table, []).append(layout)
        self._groups = tuple(compile_group(g, self._layouts[g.source]) for g in plan.groups)
        self._static: tuple[str, tuple[tuple[str, int], ...]] | None = None
        if plan.static is not None:
            layout = self._layouts[plan.static.source]
            self._static = (
                plan.static.source,
                tuple(
                    (name, layout.column(column))
                    for column, name in zip(plan.static.columns, plan.static.names, strict=True)
                ),
            )
        self._calendar_tz = ZoneInfo(plan.calendar.tz) if plan.calendar is not None else None
        self._batch = BatchRuns(plan, batch_provider)
        self._state: dict[str, dict[str, EntityEvents]] = {name: {} for name in self._layouts}
        # confirmations of the group sources' events (polls that re-saw them): topic → key column
        self._confirm_tables = {
            confirmations_topic(layout.source.table): layout.source.key
            for layout in self._layouts.values()
            if any(g.source == layout.source.name for g in plan.groups)
        }
        self._confirmed: dict[str, int] = {}
        self._calendar_cache: tuple[int, dict[str, float]] | None = None

    # -- feeding ----------------------------------------------------------------------------

    @property
    def tables(self) -> tuple[str, ...]:
        """The log topics the executor consumes, sorted: source tables and their confirmations
        (:func:`~dockline.core.contracts.confirmations_topic`)."""
        return tuple(sorted([*self._by_table, *self._confirm_tables]))

    @property
    def ingested_at_columns(self) -> dict[str, str]:
        """Per consumed topic, its ``ingested_at`` column (what replays order by)."""
        out = {t: "ingested_at" for t in self._confirm_tables}
        for table, layouts in self._by_table.items():
            out[table] = layouts[0].source.ingested_at
        return out

    def confirmed(self, entity: str) -> int | None:
        """When the feed last confirmed ``entity``'s newest event (µs): its newest
        ``ingested_at`` over the group sources, or a newer poll that re-saw it."""
        return self._confirmed.get(entity)

    def entities(self) -> set[str]:
        """Every entity with kept state in any source."""
        out: set[str] = set()
        for buffers in self._state.values():
            out.update(buffers)
        return out

    def update_many(self, table: str, events: pa.Table) -> set[str]:
        """Add events of source table ``table``; return the entities that got a new event.

        Tables the plan does not consume online are ignored (empty set). Same as
        ``feed(prepare(table, events))``.
        """
        return self.feed(self.prepare(table, events))

    def prepare(self, table: str, events: pa.Table) -> PreparedEvents:
        """Convert (and validate) events of ``table`` once, to :meth:`feed` them in slices.

        The replay converts a whole round of the log at once and feeds its micro-batches as
        row ranges: Arrow → Python conversion per micro-batch would dominate otherwise.
        """
        key = self._confirm_tables.get(table)
        if key is not None and events.num_rows:
            keys = source_column(events, key, table).cast(pa.string()).to_pylist()
            ing = required_micros(events, "ingested_at", table).to_pylist()
            return PreparedEvents(table, events.num_rows, (), (keys, ing))
        rows = tuple(
            (layout, *event_rows(layout, table, events))
            for layout in self._by_table.get(table, ())
            if events.num_rows
        )
        return PreparedEvents(table, events.num_rows, rows)

    def feed(self, prepared: PreparedEvents, start: int = 0, stop: int | None = None) -> set[str]:
        """Add rows ``[start, stop)`` of ``prepared``; return the entities that got a new event.

        Feeding rows in consecutive slices is the same as :meth:`update_many` on each slice.
        """
        end = prepared.num_rows if stop is None else min(stop, prepared.num_rows)
        touched: set[str] = set()
        if start >= end:
            return touched
        for layout, keys, events in prepared.rows:
            touched |= self._feed_source(layout, keys[start:end], events[start:end])
        if prepared.confirmations is not None:
            keys, times = prepared.confirmations
            confirmed = self._confirmed
            for entity, ing in zip(keys[start:end], times[start:end], strict=True):
                if ing > confirmed.get(entity, -1):
                    confirmed[entity] = ing
                    touched.add(entity)
        return touched

    def _feed_source(self, layout: Layout, keys: list[str], events: list[Event]) -> set[str]:
        buffers = self._state[layout.source.name]
        n_survivors = len(layout.retention.survivor_flags)
        newest_added: dict[str, int] = {}  # per entity, the newest event_ts that was new
        if confirmations_topic(layout.source.table) in self._confirm_tables:
            confirmed = self._confirmed
            for entity, event in zip(keys, events, strict=True):
                if event[ING] > confirmed.get(entity, -1):
                    confirmed[entity] = event[ING]
        for entity, event in zip(keys, events, strict=True):
            buffer = buffers.get(entity)
            if buffer is None:
                buffer = buffers[entity] = EntityEvents(n_survivors=n_survivors)
            if buffer.add(event):
                ts = event[TS]
                known = newest_added.get(entity)
                if known is None or ts > known:
                    newest_added[entity] = ts
        retention = layout.retention
        touched: set[str] = set()
        for entity in dict.fromkeys(keys):
            buffer = buffers[entity]
            survivor_changed = buffer.prune(retention)
            newest = newest_added.get(entity)
            # an event pruned at once (a replay of a pruned one, or too old to matter) changes
            # nothing; the kept events are exactly those at or after the first kept event_ts
            if survivor_changed or (
                newest is not None and buffer.events and newest >= buffer.events[0][TS]
            ):
                touched.add(entity)
        return touched

    # -- reading ----------------------------------------------------------------------------

    def vector(self, entity: str, t_us: int) -> dict[str, Value]:
        """Every plan feature and each group's ``<group>__as_of`` (int µs or None) at ``t_us``."""
        return self.complete(entity, t_us, self.state_values(entity, t_us))

    def state_values(self, entity: str, t_us: int) -> dict[str, Value]:
        """The part of :meth:`vector` read from the kept events: groups' ``__as_of`` and
        features, static attributes, calendar. Same exactness as :meth:`vector`."""
        out: dict[str, Value] = {}
        for group in self._groups:
            group_into(group, self._state[group.source].get(entity), t_us, out)
        if self._static is not None:
            source, columns = self._static
            static_into(columns, self._state[source].get(entity), t_us, out)
        if self.plan.calendar is not None:
            out.update(self._calendar(t_us))
        return out

    def complete(self, entity: str, t_us: int, values: dict[str, Value]) -> dict[str, Value]:
        """Add batch and derived features to :meth:`state_values` ``values`` (in place).

        Needs no kept events, so it may run any time later: the consistency job takes the
        state part during the replay and completes only the points it keeps.
        """
        self._batch.into(entity, t_us, values)
        for derived in self.plan.derived:
            values[derived.name] = num(derived.expr.evaluate(values))
        return values

    def vectors(self, entities: Sequence[str], t_us: int) -> pa.Table:
        """Vectors at ``t_us`` as Arrow: key, ``as_of`` (= t), groups' ``__as_of``, features."""
        rows = [self.vector(entity, t_us) for entity in entities]
        columns: dict[str, pa.Array] = {
            self.plan.key: pa.array(list(entities), pa.string()),
            "as_of": pa.array([t_us] * len(rows), TS_TYPE),
        }
        for group in self.plan.groups:
            name = group.as_of_column
            columns[name] = pa.array([r[name] for r in rows], TS_TYPE)
        for name in self.plan.feature_names:
            columns[name] = pa.array([r[name] for r in rows], pa.float64())
        return pa.table(columns)

    def _calendar(self, t: int) -> dict[str, float]:
        cached = self._calendar_cache
        if cached is not None and cached[0] == t:
            return cached[1]
        assert self.plan.calendar is not None and self._calendar_tz is not None
        local = local_time(t, self._calendar_tz)
        every = {
            "hour_of_day": float(local.hour),
            "day_of_week": float(local.weekday()),
            "is_weekend": 1.0 if local.weekday() >= 5 else 0.0,
            "minute_of_day": float(local.hour * 60 + local.minute),
        }
        values = {name: every[name] for name in self.plan.calendar.features}
        self._calendar_cache = (t, values)
        return values

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as deterministic msgpack (same state ⇒ same bytes)."""
        return encode_snapshot(self.plan.hash, self._state, self._confirmed)

    def entity_state(self, entity: str) -> bytes:
        """``entity``'s kept events and confirmation as deterministic msgpack: all that
        :meth:`vector_from_state` needs to evaluate it at any later ``t``."""
        return encode_entity(self.plan.hash, self._state, entity, self._confirmed.get(entity))

    def vector_from_state(self, entity: str, state: bytes, t_us: int) -> dict[str, Value]:
        """:meth:`vector` of ``entity`` at ``t_us`` from its :meth:`entity_state` bytes.

        Exact for any ``t_us`` at or after the newest ``ingested_at`` the state had seen. The
        executor's own state for ``entity`` is left as it was.
        """
        decoded = decode_entity(entity, state, self.plan.hash)
        saved = {name: buffers.pop(entity, None) for name, buffers in self._state.items()}
        try:
            for name, buffer in decoded.items():
                self._state[name][entity] = buffer
            return self.vector(entity, t_us)
        finally:
            for name, buffers in self._state.items():
                buffers.pop(entity, None)
                if saved[name] is not None:
                    buffers[entity] = saved[name]  # type: ignore[assignment]

    @classmethod
    def restore(
        cls, plan: Plan, data: bytes, *, batch_provider: BatchProvider | None = None
    ) -> OnlineExecutor:
        """An executor with the state of :meth:`snapshot` ``data`` (taken with the same plan)."""
        sources, confirmed = decode_snapshot(data, plan.hash)
        executor = cls(plan, batch_provider=batch_provider)
        for name, buffers in sources.items():
            if name not in executor._state:
                raise ConfigError(f"online state has an unknown source {name!r}")
            executor._state[name] = buffers
        executor._confirmed = confirmed
        return executor
