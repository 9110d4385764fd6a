"""Real-world feed faults, injected into published ``station_status`` records and counted.

Every injected fault is counted, so a test can compare what a consumer dead-lettered with what
the simulator did. Rejecting faults map 1:1 to a consumer's reject reason (``REASON_BY_FAULT``);
a station record carries at most one of them, so each injection is exactly one dead letter.

>>> cfg = parse_faults("stale=0.01,duplicate=0.02")
>>> (cfg.stale, cfg.duplicate, cfg.future)
(0.01, 0.02, 0.0)
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

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

ACCEPTED_FAULTS: tuple[str, ...] = ("vanish", "numeric_ids", "millis", "quiet", "on_change", "dead")
"""Faults a correct consumer accepts (after coercion). The last three are quiet feeds: a station
republishes its previous record (same ``last_reported``, same counts) — for a spell of
``quiet_minutes`` (``quiet``), whenever its counts did not change (``on_change``: that share of
stations reports only on change, as many real systems do), or forever (``dead``: the station
stopped reporting but stays listed). A consumer counts those records as unchanged."""

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
    quiet: float = 0.0
    on_change: float = 0.0
    dead: float = 0.0
    out_of_order_lag: timedelta = timedelta(minutes=30)
    vanish_minutes: tuple[int, int] = (5, 60)
    quiet_minutes: tuple[int, int] = (10, 120)

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
        for name in ("vanish_minutes", "quiet_minutes"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ConfigError(f"{name} must be 1 <= low <= high; got {(low, high)}")

    @classmethod
    def all(cls, rate: float = 0.005) -> FaultConfig:
        """Every fault at ``rate`` (``--faults all``), but ``dead`` at ``rate / 20`` (a station
        that stops for good is rare) and ``on_change`` for ``10 × rate`` of the stations."""
        rates: dict[str, Any] = dict.fromkeys(FAULT_NAMES, rate)
        rates["dead"] = rate / 20
        rates["on_change"] = min(1.0, rate * 10)
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

    Besides rates, ``out_of_order_lag=15m`` (a duration), ``vanish_minutes=5-60`` and
    ``quiet_minutes=10-120`` are accepted.
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
            everything = FaultConfig.all(rate)
            values.update({fault: getattr(everything, fault) for fault in FAULT_NAMES})
        elif name == "out_of_order_lag":
            values[name] = parse_duration(value)
        elif name in ("vanish_minutes", "quiet_minutes"):
            low, _, high = value.partition("-")
            try:
                values[name] = (int(low), int(high or low))
            except ValueError:
                raise ConfigError(
                    f"{name} must look like 5-60; got {value!r}", where="--faults"
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
    included); ``expected_rejections`` is what a correct consumer dead-letters, by reason, and
    ``held_records`` what it counts unchanged.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(FAULT_NAMES, 0)
        self.published_records = 0
        self.held_records = 0
        self.publications = 0
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> int:
        return self._counts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, counts: Mapping[str, int], published_records: int, held_records: int = 0) -> None:
        """Count one served publication (``held_records``: held records that repeat one a
        consumer accepted, i.e. what it counts ``unchanged``)."""
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n
            self.published_records += published_records
            self.held_records += held_records
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
                "held_records": self.held_records,
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
    held_records: int = 0
    _clean_last_reported: np.ndarray | None = None
    _clean_mask: np.ndarray | None = None


class StatusArrays(Protocol):
    """What :meth:`FaultInjector.hold` reads of a status (``sim.city.StationStatus``)."""

    @property
    def last_reported(self) -> np.ndarray: ...
    @property
    def num_bikes_available(self) -> np.ndarray: ...
    @property
    def num_docks_available(self) -> np.ndarray: ...
    @property
    def num_docks_disabled(self) -> np.ndarray: ...
    @property
    def is_installed(self) -> np.ndarray: ...
    @property
    def is_renting(self) -> np.ndarray: ...
    @property
    def is_returning(self) -> np.ndarray: ...


StatusT = TypeVar("StatusT", bound=StatusArrays)

_HELD_FIELDS = (
    "last_reported",
    "num_bikes_available",
    "num_docks_available",
    "num_docks_disabled",
    "is_installed",
    "is_renting",
    "is_returning",
)
_COUNT_FIELDS = _HELD_FIELDS[1:]


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
        # quiet feeds: what each station last published, spells, stopped stations
        self._quiet_until_s = np.zeros(n_stations, dtype=np.int64)
        self._dead = np.zeros(n_stations, dtype=bool)
        self._on_change = np.zeros(n_stations, dtype=bool)
        if config.on_change > 0:
            self._on_change = self._rng.random(n_stations) < config.on_change
        self._published: dict[str, np.ndarray] | None = None
        self._held = np.zeros(n_stations, dtype=bool)
        self._hold_counts: dict[str, int] = {}
        # stations whose last published values (what a held record repeats) a consumer has
        # accepted: served present and clean (or duplicated) at least once
        self._accepted = np.zeros(n_stations, dtype=bool)

    def hold(self, time_s: int, status: StatusT) -> StatusT:
        """Apply the quiet-feed faults to ``status`` (call once per publication, before
        :meth:`plan`): held stations republish their previous record unchanged."""
        cfg = self.config
        n = self._n
        with self._lock:
            if cfg.dead > 0:
                stop = ~self._dead & (self._rng.random(n) < cfg.dead)
                self._dead |= stop
                new_dead = int(stop.sum())
            else:
                new_dead = 0
            new_quiet = 0
            if cfg.quiet > 0:
                eligible = (time_s >= self._quiet_until_s) & ~self._dead
                starts = eligible & (self._rng.random(n) < cfg.quiet)
                new_quiet = int(starts.sum())
                if new_quiet:
                    low, high = cfg.quiet_minutes
                    minutes = self._rng.integers(low, high + 1, size=new_quiet)
                    self._quiet_until_s[starts] = time_s + minutes * 60
            current = {name: np.asarray(getattr(status, name)) for name in _HELD_FIELDS}
            published = self._published
            if published is None:  # the first publication is everyone's first report
                held = np.zeros(n, dtype=bool)
            else:
                same = np.ones(n, dtype=bool)
                for name in _COUNT_FIELDS:
                    same &= current[name] == published[name]
                unchanged = self._on_change & same
                held = (time_s < self._quiet_until_s) | self._dead | unchanged
            out = {
                name: np.where(held, published[name], values) if published is not None else values
                for name, values in current.items()
            }
            self._published = {name: values.copy() for name, values in out.items()}
            self._accepted &= held  # new values are not accepted until served clean
            self._held = held
            self._hold_counts = {
                "quiet": new_quiet,
                "dead": new_dead,
                "on_change": int((held & self._on_change).sum()),
                "held_records": int(held.sum()),
            }
        if not held.any():
            return status
        return dataclasses.replace(status, **out)  # type: ignore[type-var]

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
            held = self._held
            hold_counts = self._hold_counts
            self._held = np.zeros(n, dtype=bool)
            self._hold_counts = {}
            if cfg.any_rejecting:
                u = self._rng.random(n)
                k = np.searchsorted(self._edges, u, side="right")
                # a held record repeats one the consumer has seen: it carries no new fault
                codes = np.where(present & ~held & (k < len(REJECTING_FAULTS)), k + 1, 0).astype(
                    np.int8
                )
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
            clean = present & ((codes == 0) | (codes == CODE_BY_FAULT["duplicate"]))
            # A held record repeats the station's last published *clean* values; when the
            # publication that drew them left the station out or faulted its record, a consumer
            # never accepted them, so to it the held record is a new event, not a repeat.
            repeats = held & present & self._accepted
            self._accepted |= clean
        counts = {name: int((codes == code).sum()) for name, code in CODE_BY_FAULT.items()}
        n_present = int(present.sum())
        published = n_present + counts["duplicate"]
        counts["vanish"] = new_vanish
        counts["millis"] = int(millis.sum())
        for name in ("quiet", "dead", "on_change"):
            counts[name] = hold_counts.get(name, 0)
        held_published = int(repeats.sum())
        counts["numeric_ids"] = published if cfg.numeric_ids > 0 else 0
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
            held_records=held_published,
            _clean_last_reported=np.asarray(last_reported_s, dtype=np.int64),
            _clean_mask=clean,
        )

    def commit(self, plan: FaultPlan) -> None:
        """Count ``plan`` as served (call once per publication)."""
        with self._lock:
            if plan._clean_mask is not None and plan._clean_last_reported is not None:
                mask = plan._clean_mask
                self._last_clean_s[mask] = plan._clean_last_reported[mask]
        self.counts.add(plan.counts, plan.published_records, plan.held_records)
