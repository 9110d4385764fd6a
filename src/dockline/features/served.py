"""Read-time evaluation: the vector served at request time ``t`` is the offline value at ``t``.

The materializer keeps, per entity, the events any later point can still use (its state, in the
online store group :data:`~dockline.features.materialize.STATE_GROUP`). :class:`ServedVectors`
reads that state and evaluates the plan at the request's own time: windows slide as events leave
them, ``time_since`` grows, the calendar and batch features move on — for a station that has not
reported for an hour as much as for one that reported a second ago. Storing the vector computed
at the entity's last event instead (what dockline did before) serves a quiet station its past.

The cost is one state decode and one vector evaluation per entity and request (tens to a few
hundred microseconds, ``docs/benchmarks.md``), paid for exactness at any ``t``: a tick that
re-materializes every vector could only be exact at its ticks, and ``time_since`` moves
continuously.

It implements :class:`~dockline.core.ports.FeatureReader`; the wiring hands it to serving.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa

from dockline.core.errors import ConfigError, StorageError, ValidationError
from dockline.core.ports import OnlineStore, ServedVector
from dockline.features.materialize import STATE_GROUP
from dockline.features.online import BatchProvider, OnlineExecutor
from dockline.features.plan import Plan

__all__ = ["ServedVectors"]

_GROUPS = (STATE_GROUP,)
_KEPT_RUNS = 32
_log = logging.getLogger(__name__)


class _SharedRuns:
    """A batch provider shared by the request path and the prefetch thread: one computation
    per run (under a lock: the offline executor's connection is not thread-safe), cached."""

    def __init__(self, provider: BatchProvider) -> None:
        self._provider = provider
        self._lock = threading.Lock()
        self._runs: OrderedDict[int, Mapping[str, pa.Table]] = OrderedDict()

    def __call__(self, run_us: int) -> Mapping[str, pa.Table]:
        with self._lock:
            hit = self._runs.get(run_us)
            if hit is None:
                hit = self._runs[run_us] = self._provider(run_us)
                while len(self._runs) > _KEPT_RUNS:
                    self._runs.popitem(last=False)
            return hit


class ServedVectors:
    """Vectors at request time from the per-entity state in an online store.

    >>> reader = ServedVectors(plan, store)  # doctest: +SKIP
    >>> [vector] = reader.read_at(["42"], t_us)  # doctest: +SKIP
    >>> dict(zip(reader.columns(), vector.values))["minutes_since_empty"]  # doctest: +SKIP
    """

    def __init__(
        self, plan: Plan, store: OnlineStore, *, batch_provider: BatchProvider | None = None
    ) -> None:
        self.plan = plan
        self.store = store
        self._runs = _SharedRuns(batch_provider) if batch_provider is not None else None
        self._executor = OnlineExecutor(plan, batch_provider=self._runs)
        self._columns = tuple(plan.feature_names)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due_runs(self, t_us: int) -> list[int]:
        """The batch runs (µs) the plan's batch features use at ``t_us``."""
        timing = [(p.every_us, p.lag_us) for p in self.plan.profiles]
        timing += [(n.every_us, n.lag_us) for n in self.plan.neighbourhoods]
        return sorted({((t_us - lag) // every) * every for every, lag in timing})

    def prefetch(
        self, now_us: Callable[[], int], *, lead_s: float = 60.0, every_s: float = 5.0
    ) -> None:
        """Compute, on a background thread, the batch runs due within ``lead_s`` of ``now_us()``.

        A new neighbourhood run costs tens of milliseconds and a new profile run seconds (DuckDB
        over the offline store): computed on first use, it would stall the request that needs
        it. Stopped by :meth:`close`.
        """
        if self._runs is None or self._thread is not None:
            return
        lead_us = round(lead_s * 1e6)

        def run() -> None:
            while not self._stop.is_set():
                t = now_us()
                try:
                    for at in (t, t + lead_us):
                        for run_us in self.due_runs(at):
                            assert self._runs is not None
                            self._runs(run_us)
                except Exception:  # the request path computes it then, and says why
                    _log.exception("prefetching batch runs failed")
                self._stop.wait(every_s)

        self._thread = threading.Thread(target=run, name="dockline-batch-prefetch", daemon=True)
        self._thread.start()

    def columns(self) -> tuple[str, ...]:
        """The plan's feature names, in the order of each vector's values."""
        return self._columns

    def read_at(self, entities: Sequence[str], t_us: int) -> list[ServedVector | None]:
        """Each entity's vector at ``t_us``; ``None`` where the store has no state for it.

        Raises :class:`ConfigError` (reason ``feature_schema_mismatch``) when the state was
        built by another plan: scoring it would misalign the model's columns.
        """
        found = self.store.read_many(list(entities), _GROUPS)
        out: list[ServedVector | None] = []
        columns = self._columns
        executor = self._executor
        for entity, groups in zip(entities, found, strict=True):
            row = groups.get(STATE_GROUP)
            if row is None:
                out.append(None)
                continue
            state, confirmed, plan_hash = row.values
            if plan_hash != self.plan.hash:
                raise ConfigError(
                    f"the online state was built by plan {str(plan_hash)[:12]}, serving"
                    f" expects {self.plan.hash[:12]}; run `dockline features materialize`",
                    reason="feature_schema_mismatch",
                    where=STATE_GROUP,
                )
            if not isinstance(state, bytes):
                raise StorageError(
                    f"online state of {entity!r} must be bytes; got {type(state).__name__}",
                    reason="store_unavailable",
                    where=STATE_GROUP,
                )
            try:
                vector = executor.vector_from_state(entity, state, t_us)
            except ConfigError as exc:
                raise ConfigError(
                    exc.message, reason="feature_schema_mismatch", where=STATE_GROUP
                ) from exc
            except ValidationError as exc:
                raise StorageError(exc.message, reason="store_unavailable", where=entity) from exc
            confirmed_us = confirmed if isinstance(confirmed, int) else row.as_of_us
            out.append(
                ServedVector(
                    tuple(vector[name] for name in columns),
                    t_us,
                    confirmed_us,
                    row.as_of_us,
                )
            )
        return out

    def close(self) -> None:
        """Stop prefetching and close the online store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.store.close()
