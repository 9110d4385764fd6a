"""A :class:`~dockline.core.ports.FeatureReader` over vectors stored ready-made in one group.

For deployments whose own pipeline writes finished vectors to the online store (one vector per
entity, exact at its ``as_of``). dockline's wiring does not use it: it serves with read-time
evaluation (``dockline.features.served``), which is exact at the request time. Here a vector is
the one stored, whatever the request time, and its age counts from its ``as_of``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dockline.core.ports import OnlineStore, ServedVector

__all__ = ["StoredVectors"]


class StoredVectors:
    """Serve the vectors of ``group`` in ``store`` as they were written."""

    def __init__(self, store: OnlineStore, group: str) -> None:
        self.store = store
        self.group = group
        self._groups = (group,)

    def columns(self) -> tuple[str, ...]:
        """The group's registered columns."""
        return self.store.columns(self.group)

    def read_at(self, entities: Sequence[str], t_us: int) -> list[ServedVector | None]:
        """The stored vectors (``t_us`` only dates the answer)."""
        found = self.store.read_many(list(entities), self._groups)
        out: list[ServedVector | None] = []
        for row in found:
            vector = row.get(self.group)
            out.append(
                None
                if vector is None
                else ServedVector(vector.values, t_us, vector.as_of_us, vector.as_of_us)
            )
        return out

    def close(self) -> None:
        """Nothing to release: the caller owns the store."""
