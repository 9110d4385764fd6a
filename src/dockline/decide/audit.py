"""The decision audit log: append-only Parquet under ``<data-dir>/decisions/date=YYYY-MM-DD/``.

Every decision is kept whole (its deterministic JSON in ``record``) beside queryable columns
(time, policy, gate, reasons, model versions and bundle ids, input hash). Files are never
rewritten: each append adds one file per date with the decisions not yet logged there (a re-run
of the same cycles gives the same ids, so it writes nothing twice).

>>> DecisionLog(Path("/nonexistent/decisions")).read()
[]
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dockline.core.contracts import TS_TYPE
from dockline.core.decisions import Decision, decode_decision, encode
from dockline.core.errors import ContractError, StorageError
from dockline.core.files import write_parquet
from dockline.core.time import ensure_utc

__all__ = ["AUDIT_SCHEMA", "DecisionLog"]

_STRINGS = pa.list_(pa.string())
AUDIT_SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("cycle_time", TS_TYPE, nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("health_gate", pa.string(), nullable=False),
        pa.field("health_verdict", pa.string(), nullable=False),
        pa.field("actions", pa.int32(), nullable=False),
        pa.field("bikes", pa.int32(), nullable=False),
        pa.field("expected_benefit", pa.float64(), nullable=False),
        pa.field("reasons", _STRINGS, nullable=False),
        pa.field("binding_constraints", _STRINGS, nullable=False),
        pa.field("model_versions", _STRINGS, nullable=False),
        pa.field("bundle_ids", _STRINGS, nullable=False),
        pa.field("input_hash", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("record", pa.string(), nullable=False),
    ]
)
"""One row per decision; ``record`` is the decision's JSON (the source of truth)."""


class DecisionLog:
    """Append-only decision records under ``root`` (``<data-dir>/decisions``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def append(self, decisions: Sequence[Decision]) -> int:
        """Write ``decisions``; returns how many were written (0 when already logged)."""
        by_date: dict[str, list[Decision]] = defaultdict(list)
        for d in decisions:
            by_date[d.cycle_time.strftime("%Y-%m-%d")].append(d)
        written = 0
        for date, group in sorted(by_date.items()):
            logged = self._ids(self.root / f"date={date}")
            fresh = {d.decision_id: d for d in group if d.decision_id not in logged}
            group = sorted(fresh.values(), key=lambda d: (d.cycle_time, d.decision_id))
            if not group:
                continue
            digest = hashlib.sha256("\n".join(d.decision_id for d in group).encode()).hexdigest()
            path = self.root / f"date={date}" / f"part-{digest[:24]}.parquet"
            if path.exists():
                continue
            write_parquet(_table(group), path)
            written += len(group)
        return written

    @staticmethod
    def _ids(partition: Path) -> set[str]:
        ids: set[str] = set()
        for path in partition.glob("part-*.parquet"):
            try:
                ids.update(pq.read_table(path, columns=["decision_id"]).column(0).to_pylist())
            except (OSError, pa.ArrowInvalid) as exc:
                raise StorageError(f"cannot read the decision log: {exc}", where=str(path)) from exc
        return ids

    def read(self, since: datetime | None = None, until: datetime | None = None) -> list[Decision]:
        """Decisions with ``since <= cycle_time < until``, oldest first (duplicates once)."""
        lo = ensure_utc(since) if since is not None else None
        hi = ensure_utc(until) if until is not None else None
        seen: set[str] = set()
        out: list[Decision] = []
        for path in sorted(self.root.glob("date=*/part-*.parquet")):
            day = path.parent.name.removeprefix("date=")
            if lo is not None and day < lo.strftime("%Y-%m-%d"):
                continue  # a whole partition before `since`: skip without reading it
            try:
                table = pq.read_table(path, columns=["decision_id", "cycle_time", "record"])
            except (OSError, pa.ArrowInvalid) as exc:
                raise StorageError(f"cannot read the decision log: {exc}", where=str(path)) from exc
            for row in table.to_pylist():
                when = row["cycle_time"]
                if (lo is not None and when < lo) or (hi is not None and when >= hi):
                    continue
                if row["decision_id"] in seen:
                    continue
                seen.add(row["decision_id"])
                try:
                    out.append(decode_decision(row["record"]))
                except ContractError as exc:
                    raise ContractError(exc.message, reason=exc.reason, where=str(path)) from exc
        out.sort(key=lambda d: (d.cycle_time, d.decision_id))
        return out


def _table(group: list[Decision]) -> pa.Table:
    return pa.table(
        {
            "decision_id": [d.decision_id for d in group],
            "cycle_time": [d.cycle_time for d in group],
            "policy": [d.policy for d in group],
            "health_gate": [d.health_gate for d in group],
            "health_verdict": [d.health_verdict for d in group],
            "actions": [len(d.actions) for d in group],
            "bikes": [sum(a.bikes for a in d.actions) for d in group],
            "expected_benefit": [d.expected_benefit for d in group],
            "reasons": [list(d.reasons) for d in group],
            "binding_constraints": [list(d.binding_constraints) for d in group],
            "model_versions": [list(d.model_versions) for d in group],
            "bundle_ids": [list(d.bundle_ids) for d in group],
            "input_hash": [d.input_hash for d in group],
            "schema_version": [d.schema_version for d in group],
            "record": [encode(d).decode() for d in group],
        },
        schema=AUDIT_SCHEMA,
    )
