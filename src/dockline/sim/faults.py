"""Real-world feed faults, injected into published ``station_status`` records and counted.

Every injected fault is counted, so a test can compare what a consumer dead-lettered with what
the simulator did. Rejecting faults map 1:1 to a consumer's reject reason (``REASON_BY_FAULT``);
a station record carries at most one of them, so each injection is exactly one dead letter.

>>> cfg = parse_faults("stale=0.01,duplicate=0.02")
>>> (cfg.stale, cfg.duplicate, cfg.future)
(0.01, 0.02, 0.0)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from dockline.core.contracts import RejectReason
from dockline.core.errors import ConfigError
from dockline.core.time import parse_duration

__all__ = [
    "ACCEPTED_FAULTS",
    "FAULT_NAMES",
    "REASON_BY_FAULT",
    "REJECTING_FAULTS",
    "FaultConfig",
    "FaultCounts",
    "FaultInjector",
    "FaultPlan",
    "parse_faults",
]

REJECTING_FAULTS: tuple[str, ...] = (
    "stale",
    "duplicate",
    "out_of_order",
    "missing_field",
    "bad_type",
    "negative_count",
    "future",
)
"""Faults a correct consumer rejects; code ``i + 1`` in :attr:`FaultPlan.codes`."""

ACCEPTED_FAULTS: tuple[str, ...] = ("vanish", "numeric_ids", "millis")
"""Faults a correct consumer accepts (after coercion)."""

FAULT_NAMES: tuple[str, ...] = REJECTING_FAULTS + ACCEPTED_FAULTS

REASON_BY_FAULT: dict[str, RejectReason] = {
    "stale": RejectReason.STALE,
    "duplicate": RejectReason.DUPLICATE,
    "out_of_order": RejectReason.LATE,
    "missing_field": RejectReason.MISSING_FIELD,
    "bad_type": RejectReason.BAD_TYPE,
    "negative_count": RejectReason.NEGATIVE_COUNT,
    "future": RejectReason.FUTURE,
}
"""The dead-letter reason each rejecting fault produces at a consumer."""

CODE_BY_FAULT: dict[str, int] = {name: i + 1 for i, name in enumerate(REJECTING_FAULTS)}

STALE_PLACEHOLDER_S = 86_400
"""``last_reported`` of a stale record: 1970-01-02, a placeholder real feeds publish."""

FUTURE_AHEAD = timedelta(hours=2)
OUT_OF_ORDER_EXTRA_S = 7  # odd seconds: never equal to a real (minute-aligned) publication time

# An out-of-order record is only injected for a station whose latest record a consumer accepted
# at most this long before; otherwise the consumer's watermark could be too old to call it late.
_WATERMARK_WINDOW = timedelta(minutes=5)

MISSING_FIELD_ROTATION = 5  # bikes, docks, is_renting, last_reported, station_id
BAD_TYPE_ROTATION = 3  # count -> "seven", count -> [7], flag -> "yes"
NEGATIVE_ROTATION = 2  # bikes, docks


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Rate of each fault (probability per station record per publication, 0 = off).

    ``numeric_ids`` is a switch (any rate > 0 turns it on for every station from the start);
    ``millis`` applies to v2.3 documents only. The rejecting rates must sum to at most 1.
    """

    stale: float = 0.0
    duplicate: float = 0.0
    out_of_order: float = 0.0
    missing_field: float = 0.0
    bad_type: float = 0.0
    negative_count: float = 0.0
    future: float = 0.0
    vanish: float = 0.0
    numeric_ids: float = 0.0
    millis: float = 0.0
    out_of_order_lag: timedelta = timedelta(minutes=30)
    vanish_minutes: tuple[int, int] = (5, 60)

    def __post_init__(self) -> None:
        for name in FAULT_NAMES:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"fault rate {name} must be in [0, 1]; got {rate}")
        total = sum(getattr(self, name) for name in REJECTING_FAULTS)
        if total > 1.0 + 1e-12:
            raise ConfigError(f"rejecting fault rates must sum to <= 1; got {total}")
        if self.out_of_order_lag <= _WATERMARK_WINDOW:
            raise ConfigError(
                f"out_of_order_lag must be > {_WATERMARK_WINDOW}; got {self.out_of_order_lag}"
            )
        low, high = self.vanish_minutes
        if not 1 <= low <= high:
            raise ConfigError(f"vanish_minutes must be 1 <= low <= high; got {self.vanish_minutes}")

    @classmethod
    def all(cls, rate: float = 0.005) -> FaultConfig:
        """Every fault at ``rate`` (``--faults all``)."""
        rates: dict[str, Any] = dict.fromkeys(FAULT_NAMES, rate)
        return cls(**rates)

    @property
    def enabled(self) -> dict[str, float]:
        """The faults switched on, with their rates."""
        return {name: getattr(self, name) for name in FAULT_NAMES if getattr(self, name) > 0}

    @property
    def any_rejecting(self) -> bool:
        """Whether any fault that a consumer rejects is on."""
        return any(getattr(self, name) > 0 for name in REJECTING_FAULTS)


def parse_faults(text: str | None) -> FaultConfig:
    """Parse the CLI spelling: ``"stale=0.01,duplicate=0.01"``, ``"all"``, ``"all=0.02"``, ``""``.

    Besides rates, ``out_of_order_lag=15m`` (a duration) and ``vanish_minutes=5-60`` are accepted.
    """
    raw = (text or "").strip()
    if raw.lower() in ("", "none", "off"):
        return FaultConfig()
    values: dict[str, object] = {}
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        value = value.strip()
        if name == "all":
            rate = _parse_rate("all", value) if sep else 0.005
            values.update({fault: rate for fault in FAULT_NAMES})
        elif name == "out_of_order_lag":
            values[name] = parse_duration(value)
        elif name == "vanish_minutes":
            low, _, high = value.partition("-")
            try:
                values[name] = (int(low), int(high or low))
            except ValueError:
                raise ConfigError(
                    f"vanish_minutes must look like 5-60; got {value!r}", where="--faults"
                ) from None
        elif name in FAULT_NAMES:
            values[name] = _parse_rate(name, value) if sep else 0.005
        else:
            raise ConfigError(
                f"fault must be one of {', '.join(FAULT_NAMES)} or all; got {name!r}",
                where="--faults",
            )
    try:
        return FaultConfig(**values)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(exc.message, where="--faults") from None


def _parse_rate(name: str, value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise ConfigError(
            f"rate of {name} must be a number in [0, 1]; got {value!r}", where="--faults"
        ) from None
    return rate


class FaultCounts(Mapping[str, int]):
    """Injected faults by name, plus what was published; thread-safe, dict-like.

    ``published_records`` counts station_status records in served documents (duplicates
    included); ``expected_rejections`` is what a correct consumer dead-letters, by reason.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(FAULT_NAMES, 0)
        self.published_records = 0
        self.publications = 0
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> int:
        return self._counts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, counts: Mapping[str, int], published_records: int) -> None:
        """Count one served publication."""
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n
            self.published_records += published_records
            self.publications += 1

    @property
    def expected_rejections(self) -> dict[str, int]:
        """Dead letters a correct consumer produces, by reason (zeros included)."""
        return {str(REASON_BY_FAULT[name]): self._counts[name] for name in REJECTING_FAULTS}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view (what ``/_sim/stats`` serves)."""
        with self._lock:
            return {
                "faults": dict(self._counts),
                "published_records": self.published_records,
                "publications": self.publications,
                "expected_rejections": self.expected_rejections,
            }

    def __repr__(self) -> str:
        nonzero = {k: v for k, v in self._counts.items() if v}
        return f"FaultCounts({nonzero}, published_records={self.published_records})"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults of one publication, shared by its v2.3 and v3.0 documents.

    Arrays are indexed by station. ``codes`` is 0 (clean) or ``CODE_BY_FAULT[name]``;
    ``variant`` picks which field a missing_field / bad_type / negative_count fault touches.
    """

    time_s: int
    present: np.ndarray
    codes: np.ndarray
    variant: np.ndarray
    millis: np.ndarray
    numeric_ids: bool
    out_of_order_lag_s: int
    old_bikes: np.ndarray | None
    old_docks: np.ndarray | None
    counts: dict[str, int] = field(default_factory=dict)
    published_records: int = 0
    _clean_last_reported: np.ndarray | None = None
    _clean_mask: np.ndarray | None = None


class FaultInjector:
    """Draws a seeded :class:`FaultPlan` per publication and counts plans once served.

    ``plan`` advances the random stream and the vanish state; ``commit`` counts the plan and
    remembers which stations a consumer saw accept a record (for out-of-order eligibility).
    """

    def __init__(self, config: FaultConfig, *, seed: int, n_stations: int) -> None:
        self.config = config
        self.counts = FaultCounts()
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xFA17])))
        self._n = n_stations
        self._vanish_until_s = np.zeros(n_stations, dtype=np.int64)
        self._last_clean_s = np.full(n_stations, np.iinfo(np.int64).min // 2, dtype=np.int64)
        rates = [getattr(config, name) for name in REJECTING_FAULTS]
        self._edges = np.cumsum(np.asarray(rates, dtype=np.float64))
        self._rotation = dict.fromkeys(("missing_field", "bad_type", "negative_count"), 0)
        self._lock = threading.Lock()

    def plan(
        self,
        time_s: int,
        last_reported_s: np.ndarray,
        *,
        old_bikes: np.ndarray | None = None,
        old_docks: np.ndarray | None = None,
    ) -> FaultPlan:
        """Draw the faults of the publication at ``time_s`` (POSIX seconds)."""
        cfg = self.config
        n = self._n
        with self._lock:
            present = time_s >= self._vanish_until_s
            new_vanish = 0
            if cfg.vanish > 0:
                # A station that just came back stays for at least one publication.
                eligible = time_s > self._vanish_until_s
                starts = eligible & (self._rng.random(n) < cfg.vanish)
                new_vanish = int(starts.sum())
                if new_vanish:
                    low, high = cfg.vanish_minutes
                    minutes = self._rng.integers(low, high + 1, size=new_vanish)
                    self._vanish_until_s[starts] = time_s + minutes * 60
                    present = present & ~starts
            codes = np.zeros(n, dtype=np.int8)
            if cfg.any_rejecting:
                u = self._rng.random(n)
                k = np.searchsorted(self._edges, u, side="right")
                codes = np.where(present & (k < len(REJECTING_FAULTS)), k + 1, 0).astype(np.int8)
                ooo = codes == CODE_BY_FAULT["out_of_order"]
                if ooo.any():
                    # Late only if the consumer's watermark for the station is recent.
                    window = int(_WATERMARK_WINDOW.total_seconds())
                    eligible = self._last_clean_s >= last_reported_s - window
                    codes[ooo & ~eligible] = 0
            variant = np.zeros(n, dtype=np.int8)
            for name, period in (
                ("missing_field", MISSING_FIELD_ROTATION),
                ("bad_type", BAD_TYPE_ROTATION),
                ("negative_count", NEGATIVE_ROTATION),
            ):
                idx = np.flatnonzero(codes == CODE_BY_FAULT[name])
                if idx.size:
                    start = self._rotation[name]
                    variant[idx] = (start + np.arange(idx.size)) % period
                    self._rotation[name] = (start + idx.size) % period
            millis = np.zeros(n, dtype=bool)
            if cfg.millis > 0:
                millis = present & (codes == 0) & (self._rng.random(n) < cfg.millis)
        counts = {name: int((codes == code).sum()) for name, code in CODE_BY_FAULT.items()}
        n_present = int(present.sum())
        published = n_present + counts["duplicate"]
        counts["vanish"] = new_vanish
        counts["millis"] = int(millis.sum())
        counts["numeric_ids"] = published if cfg.numeric_ids > 0 else 0
        clean = present & ((codes == 0) | (codes == CODE_BY_FAULT["duplicate"]))
        return FaultPlan(
            time_s=time_s,
            present=present,
            codes=codes,
            variant=variant,
            millis=millis,
            numeric_ids=cfg.numeric_ids > 0,
            out_of_order_lag_s=int(cfg.out_of_order_lag.total_seconds()),
            old_bikes=old_bikes,
            old_docks=old_docks,
            counts=counts,
            published_records=published,
            _clean_last_reported=np.asarray(last_reported_s, dtype=np.int64),
            _clean_mask=clean,
        )

    def commit(self, plan: FaultPlan) -> None:
        """Count ``plan`` as served (call once per publication)."""
        with self._lock:
            if plan._clean_mask is not None and plan._clean_last_reported is not None:
                mask = plan._clean_mask
                self._last_clean_s[mask] = plan._clean_last_reported[mask]
        self.counts.add(plan.counts, plan.published_records)
