"""Batch features online: the profile and neighbourhood runs in use at ``t``, decoded and cached.

A batch run (``batch_provider(run_us)``: one Arrow table per profile/neighbourhood, keyed by the
entity) is decoded once into Python lookups and kept while recent; a vector needs at most one run
per batch feature, so a small cache keeps a replay from decoding the same run per point.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

from dockline.core.errors import ConfigError
from dockline.features._online_eval import hour_of_week_in, num
from dockline.features.expr import Value
from dockline.features.plan import BatchProvider, Plan

__all__ = ["RUN_CACHE", "BatchRuns"]

RUN_CACHE = 16  # batch runs kept decoded; a vector needs at most one per batch feature


class BatchRuns:
    """The batch features of a plan read from ``provider``'s runs (all null without one)."""

    def __init__(self, plan: Plan, provider: BatchProvider | None) -> None:
        self.plan = plan
        self._profile_tz = {p.name: ZoneInfo(plan.source(p.source).tz) for p in plan.profiles}
        self._provider = provider
        self._runs: OrderedDict[int, dict[str, dict[str, Any]]] = OrderedDict()

    def into(self, entity: str, t: int, out: dict[str, Value]) -> None:
        """Set every profile and neighbourhood feature of ``entity`` at ``t`` in ``out``."""
        for profile in self.plan.profiles:
            run = self.run(t, profile.every_us, profile.lag_us)
            hours = run.get(profile.name, {}).get(entity) if run is not None else None
            out[profile.name] = (
                None
                if hours is None
                else num(hours[hour_of_week_in(t, self._profile_tz[profile.name])])
            )
        for hood in self.plan.neighbourhoods:
            run = self.run(t, hood.every_us, hood.lag_us)
            out[hood.name] = num(run.get(hood.name, {}).get(entity)) if run is not None else None

    def run(self, t: int, every_us: int, lag_us: int) -> dict[str, dict[str, Any]] | None:
        """The decoded batch run in use at ``t`` (rule 8): newest ``r`` with ``r + lag <= t``."""
        if self._provider is None:
            return None
        run_us = ((t - lag_us) // every_us) * every_us
        cached = self._runs.get(run_us)
        if cached is not None:
            self._runs.move_to_end(run_us)
            return cached
        decoded = self._decode(self._provider(run_us))
        self._runs[run_us] = decoded
        while len(self._runs) > RUN_CACHE:
            self._runs.popitem(last=False)
        return decoded

    def _decode(self, tables: Mapping[str, pa.Table]) -> dict[str, dict[str, Any]]:
        decoded: dict[str, dict[str, Any]] = {}
        for profile in self.plan.profiles:
            table = tables.get(profile.name)
            if table is not None:
                hours = [table.column(f"h{h:03d}").to_pylist() for h in range(168)]
                decoded[profile.name] = dict(
                    zip(self._keys(table), zip(*hours, strict=True), strict=True)
                )
        for hood in self.plan.neighbourhoods:
            table = tables.get(hood.name)
            if table is not None:
                values = table.column("value").to_pylist()
                decoded[hood.name] = dict(zip(self._keys(table), values, strict=True))
        return decoded

    def _keys(self, table: pa.Table) -> list[str]:
        if self.plan.key not in table.column_names:
            raise ConfigError(
                f"batch results must have the key column {self.plan.key!r};"
                f" got {table.column_names}"
            )
        return table.column(self.plan.key).cast(pa.string()).to_pylist()  # type: ignore[no-any-return]
