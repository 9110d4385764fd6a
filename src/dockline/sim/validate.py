"""Check a calibrated city against a held-out archive month.

The calibrated city starts from the month's first snapshot and runs the whole month; the
operator moves detected in that month are replayed at their minute (a removal loads a depot
truck, a drop-off unloads it as far as the depot holds bikes, so bikes are conserved). The
empty and full station-minutes are then compared with the archive's, as shares of observed
station-minutes (the archive has recorder gaps), in total and per station.

With ``reset_daily`` the simulated counts are set to the archive's at each local midnight (bikes
are then not conserved): a day-ahead check of the demand model that keeps a month of Poisson
noise from accumulating in the counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.time import from_micros
from dockline.sim.calibrate import CalibratedCity, month_counts
from dockline.sim.city import City, CityConfig

__all__ = ["ValidationReport", "validate_month"]


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Archive vs simulated empty/full shares over one held-out month."""

    month: str
    days: float
    seed: int
    replay_moves: bool
    reset_daily: bool
    archive_empty_share: float
    sim_empty_share: float
    archive_full_share: float
    sim_full_share: float
    station_empty_mae: float  # mean |sim - archive| of per-station empty shares
    station_full_mae: float
    station_empty_corr: float
    station_full_corr: float
    moves: int
    bikes_removed: int
    bikes_added: int
    bikes_added_skipped: int  # drop-offs the depot could not supply
    trips_archive: int
    trips_sim: int

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: getattr(self, k) for k in self.__slots__}
        for key in ("empty", "full"):
            a, s = out[f"archive_{key}_share"], out[f"sim_{key}_share"]
            assert isinstance(a, float) and isinstance(s, float)
            out[f"{key}_relative_error"] = (s - a) / a if a else float("nan")
        return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def validate_month(
    city: CalibratedCity,
    archive: str | Path,
    month: str,
    *,
    seed: int = 0,
    replay_moves: bool = True,
    reset_daily: bool = False,
    move_threshold: int = 4,
) -> ValidationReport:
    """Simulate ``month`` on ``city`` from its first snapshot and compare outage shares."""
    counts = month_counts(Path(archive), month, city.station_ids, move_threshold=move_threshold)
    seen = counts.observed_minutes > 0
    start_us = counts.start_us // 60_000_000 * 60_000_000
    total = (counts.end_us - start_us) // 60_000_000 + 1
    bikes = np.where(counts.first_bikes >= 0, counts.first_bikes, city.bikes)
    sim_city = City(
        CityConfig(
            seed=seed,
            start=from_micros(start_us),
            calibrated=city.with_bikes(bikes),
            maintenance_per_station_day=0.0,
        )
    )
    n = city.n
    empty = np.zeros(n, dtype=np.int64)
    full = np.zeros(n, dtype=np.int64)
    mv = counts.moves
    end_us = start_us + total * 60_000_000
    in_window = mv.ts_us < end_us
    order = np.argsort(mv.ts_us[in_window], kind="stable")
    m_station = mv.station[in_window][order]
    m_step = (mv.ts_us[in_window][order] - start_us) // 60_000_000
    m_delta = mv.delta[in_window][order]
    cursor = 0
    skipped = 0
    step_us = start_us + np.arange(total + 1, dtype=np.int64) * 60_000_000
    local = pa.array(step_us, type=pa.timestamp("us", tz="UTC")).cast(
        pa.timestamp("us", tz=city.tz)
    )
    day_key = pc.year(local).to_numpy().astype(np.int64) * 400 + pc.day_of_year(
        local
    ).to_numpy().astype(np.int64)
    reset_col = np.searchsorted(counts.day_ordinal, day_key)
    new_day = np.r_[False, day_key[1:] != day_key[:-1]]

    def hook(step: int) -> None:
        nonlocal cursor, skipped
        if step > 0:  # the state the previous step left
            empty[:] += sim_city.bikes == 0
            full[:] += sim_city.bikes + sim_city.docks_disabled >= sim_city.capacity
        if (
            reset_daily
            and step <= total
            and new_day[step]
            and reset_col[step] < counts.day_ordinal.size
        ):
            known = counts.daily_bikes[:, reset_col[step]]
            room = sim_city.capacity - sim_city.docks_disabled
            sim_city.bikes[:] = np.where(known >= 0, np.minimum(known, room), sim_city.bikes)
        if not replay_moves:
            return
        while cursor < m_step.size and m_step[cursor] <= step:
            s, d = int(m_station[cursor]), int(m_delta[cursor])
            if d < 0:
                sim_city.load_truck(s, -d)
            else:
                give = min(d, sim_city.bikes_in_trucks)
                skipped += d - give
                if give:
                    sim_city.unload_truck(s, give)
            cursor += 1

    sim_city.add_step_hook(hook)
    sim_city.run(total)
    hook(total)  # count the last step's state (a no-op for moves beyond the window)
    steps = total
    obs = counts.observed_minutes
    a_empty = counts.empty_minutes[seen] / obs[seen]
    a_full = counts.full_minutes[seen] / obs[seen]
    s_empty = empty[seen] / steps
    s_full = full[seen] / steps
    summary = mv.summary()
    return ValidationReport(
        month=month,
        days=round(steps / 1440, 2),
        seed=seed,
        replay_moves=replay_moves,
        reset_daily=reset_daily,
        archive_empty_share=float(counts.empty_minutes[seen].sum() / obs[seen].sum()),
        sim_empty_share=float(empty[seen].sum() / (steps * seen.sum())),
        archive_full_share=float(counts.full_minutes[seen].sum() / obs[seen].sum()),
        sim_full_share=float(full[seen].sum() / (steps * seen.sum())),
        station_empty_mae=float(np.abs(s_empty - a_empty).mean()),
        station_full_mae=float(np.abs(s_full - a_full).mean()),
        station_empty_corr=_corr(s_empty, a_empty),
        station_full_corr=_corr(s_full, a_full),
        moves=summary["moves"],
        bikes_removed=summary["bikes_removed"],
        bikes_added=summary["bikes_added"],
        bikes_added_skipped=skipped,
        trips_archive=int(counts.dep.sum()),
        trips_sim=sim_city.metrics.trips_started,
    )
