"""The stateful pass: per-station windows of accepted event times, and the decisions made on them.

:class:`StationWindows` remembers, per station, the accepted event times within
``allowed_lateness`` of its newest one (its watermark) and a fingerprint of the newest's values.
:meth:`~StationWindows.decide` judges a batch's rows against that memory — ``duplicate``,
``conflict``, ``unchanged``, ``future``, ``stale``, ``late`` or accepted — exactly as a
record-at-a-time validator would in input order; :meth:`~StationWindows.commit` adds the
accepted ones. Vectorized; pure: no I/O, and no Arrow.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import timedelta

import numpy as np

from dockline.core.config import IngestConfig
from dockline.core.time import to_micros

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "FUTURE",
    "LATE",
    "OK",
    "STALE",
    "TOO_EARLY",
    "TOO_LATE",
    "UNCHANGED",
    "UNKNOWN_PRINT",
    "StationWindows",
    "micros",
]

_NO_WATERMARK = -(2**62)  # below any real micros value, and far from int64 overflow
_US = 1_000_000
UNKNOWN_PRINT = -1  # a time restored from a version-1 state: its values are not known

# Stateful outcome codes
OK, DUPLICATE, CONFLICT, FUTURE, STALE, LATE, UNCHANGED = 0, 1, 2, 3, 4, 5, 6
TOO_EARLY, TOO_LATE = 7, 8  # outside the plausible range: reported as stale / future


def micros(delta: timedelta) -> int:
    """A duration in whole microseconds (exact: no float rounding)."""
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


class StationWindows:
    """One source's per-station memory of accepted events, and the decisions made against it."""

    def __init__(self, config: IngestConfig) -> None:
        self._lateness = micros(config.allowed_lateness)
        self._future = micros(config.future_tolerance)
        self._stale = micros(config.stale_after)
        self._earliest = to_micros(config.plausible_from)
        self._latest = to_micros(config.plausible_until)
        self._seen: dict[str, list[int]] = {}
        self._prints: dict[str, int] = {}  # station → fingerprint of its newest event

    def snapshot(self) -> tuple[dict[str, list[int]], dict[str, int]]:
        """Each station's window pruned to ``allowed_lateness`` and its newest event's print."""
        seen = {}
        prints = {}
        for sid in sorted(self._seen):
            times = self._seen[sid]
            cut = bisect.bisect_left(times, times[-1] - self._lateness)
            seen[sid] = times[cut:]
            prints[sid] = self._prints.get(sid, UNKNOWN_PRINT)
        return seen, prints

    def restore(self, seen: dict[str, list[int]], prints: dict[str, int]) -> None:
        """Load a :meth:`snapshot` (``prints`` may lack stations: a version-1 state)."""
        for sid, times in seen.items():
            if times:
                self._seen[sid] = sorted(times)
                self._prints[sid] = prints.get(sid, UNKNOWN_PRINT)

    def decide(
        self,
        uniq: list[str],
        codes: np.ndarray,
        event: np.ndarray,
        ing: np.ndarray,
        print_at: Callable[[np.ndarray], np.ndarray],
        ok: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, bool]]:
        """Decide each row that passed the stateless checks, as if one at a time in input order.

        Returns the outcome per row, the station's newest accepted event time before each row
        (``prior``), and for each repeat of an event accepted earlier in this batch ``True``
        (for the detail text: earlier in this batch, not already stored).
        """
        n = len(codes)
        outcome = np.zeros(n, dtype=np.int8)
        seen = self._seen
        watermark = np.array(
            [seen[sid][-1] if sid in seen else _NO_WATERMARK for sid in uniq], dtype=np.int64
        )
        row_wm = watermark[codes] if n else np.zeros(0, dtype=np.int64)
        lateness = self._lateness
        first: dict[int, bool] = {}
        all_ok = bool(ok.all())

        # 1. events this source accepted before and still remembers: the station's newest one
        # (a quiet station on a re-poll: most of a live feed's records) or an older one within
        # the lateness window. Their fingerprint decides unchanged/duplicate vs conflict.
        has_wm = row_wm != _NO_WATERMARK
        at_wm = has_wm & (event == row_wm)
        older = has_wm & (event < row_wm) & (event >= row_wm - lateness)
        if not all_ok:
            at_wm &= ok
            older &= ok
        known_rows = np.flatnonzero(at_wm)
        known_prints = np.zeros(len(known_rows), dtype=np.int64)
        if len(known_rows):
            newest_print = np.array(
                [self._prints.get(sid, UNKNOWN_PRINT) for sid in uniq], dtype=np.int64
            )
            known_prints = newest_print[codes[known_rows]]
        if older.any():  # few: repeats of older events, and late rows
            extra_rows: list[int] = []
            for pos in np.flatnonzero(older).tolist():
                times = seen[uniq[codes[pos]]]
                at = int(event[pos])
                i = bisect.bisect_left(times, at)
                if i < len(times) and times[i] == at:
                    extra_rows.append(pos)
            if extra_rows:  # an older event again is a duplicate: its values are not compared
                extra_prints = [UNKNOWN_PRINT] * len(extra_rows)
                known_rows = np.concatenate([known_rows, np.asarray(extra_rows, np.int64)])
                known_prints = np.concatenate(
                    [known_prints, np.asarray(extra_prints, dtype=np.int64)]
                )
        known = np.zeros(n, dtype=bool)
        known[known_rows] = True

        # 2. plausibility of each row as a new event: near ingested_at, within the configured
        # range (the first that fails names the reason)
        checks = (
            (FUTURE, event > ing + self._future),
            (STALE, event < ing - self._stale),
            (TOO_LATE, event > self._latest),
            (TOO_EARLY, event < self._earliest),
        )
        implausible = checks[0][1] | checks[1][1] | checks[2][1] | checks[3][1]
        if not all_ok:
            implausible &= ok
        fs = np.zeros(n, dtype=np.int8)
        if implausible.any():
            for code, failed in reversed(checks):  # the earliest check written last wins
                fs[failed] = code
            fs[~implausible] = 0

        # 3. the station's newest accepted event before each row (state or earlier in the
        # batch). Rows that are not implausible new events contribute: accepted rows raise the
        # maximum, and the others (late rows, repeats) never exceed it, so a prefix maximum over
        # them equals the maximum over the accepted ones.
        prior = row_wm.copy()
        rows = np.arange(n) if all_ok else np.flatnonzero(ok)
        if not len(rows):
            return outcome, prior, first
        contributes = ~implausible | known
        c, t = (codes, event) if all_ok else (codes[rows], event[rows])
        sorted_rows = _is_sorted(c, t)
        if sorted_rows and bool(contributes.all()):
            prev = np.full(len(rows), _NO_WATERMARK, dtype=np.int64)
            same_station = c[1:] == c[:-1]
            prev[1:][same_station] = t[:-1][same_station]
        else:
            mask = contributes if all_ok else contributes[rows]
            prev = _grouped_prior_max(c, np.where(mask, t, _NO_WATERMARK))
        if all_ok:
            prior = np.maximum(row_wm, prev)
            within = t >= prior - lateness
        else:
            prior[rows] = np.maximum(row_wm[rows], prev)
            within = np.zeros(n, dtype=bool)
            within[rows] = t >= prior[rows] - lateness

        # 4. repeats within the batch: among rows with the same station and time, the first
        # plausible one is accepted and the later ones repeat them
        repeats = np.zeros(0, dtype=np.int64)
        origins = np.zeros(0, dtype=np.int64)
        candidates = within if all_ok else ok & within
        if len(known_rows):
            candidates = candidates & ~known
        fresh = np.flatnonzero(candidates)
        if len(fresh) > 1:
            whole = len(fresh) == n
            fc, ft = (codes, event) if whole else (codes[fresh], event[fresh])
            if sorted_rows and (whole or _is_sorted(fc, ft)):
                order = None
                cs, ts_ = fc, ft
            else:
                order = np.lexsort((ft, fc))  # stable: equal keys keep input order
                cs, ts_ = fc[order], ft[order]
            same_key = (cs[1:] == cs[:-1]) & (ts_[1:] == ts_[:-1])
            if same_key.any():
                ordered = fresh if order is None else fresh[order]
                same_key = np.r_[False, same_key]
                starts = np.flatnonzero(~same_key)
                run = np.cumsum(~same_key) - 1
                plausible = ~implausible[ordered]
                if plausible.all():
                    origin = starts[run]
                else:  # the first plausible row of each run (len(order) when none is)
                    index = np.where(plausible, np.arange(len(ordered)), len(ordered))
                    origin = np.minimum.reduceat(index, starts)[run]
                is_repeat = np.arange(len(ordered)) > origin
                repeats = ordered[is_repeat]
                origins = ordered[origin[is_repeat]]
                first = dict.fromkeys(repeats.tolist(), True)

        # 5. repeats of a remembered event: of the station's newest one, the values decide
        # between unchanged and conflict; of an older one, a duplicate
        kept = within[known_rows]
        rep_rows = np.concatenate([known_rows[kept], repeats])
        if len(rep_rows):
            newest = event[rep_rows] == prior[rep_rows]
            outcome[rep_rows] = DUPLICATE
            compare = np.flatnonzero(newest)
            if len(compare):
                stored = np.concatenate(
                    [
                        known_prints[kept],
                        print_at(origins) if len(origins) else np.zeros(0, dtype=np.int64),
                    ]
                )[compare]
                rows_compared = rep_rows[compare]
                conflict = (stored != print_at(rows_compared)) & (stored != UNKNOWN_PRINT)
                outcome[rows_compared] = np.where(conflict, CONFLICT, UNCHANGED)
        # 6. the rest are new events: implausible, late, or accepted
        decided = np.zeros(n, dtype=bool)
        decided[rep_rows] = True
        new = ~decided if all_ok else ok & ~decided
        if implausible.any():
            outcome[new & implausible] = fs[new & implausible]
            new &= ~implausible
        outcome[new & ~within] = LATE
        return outcome, prior, first

    def commit(
        self,
        uniq: list[str],
        codes: np.ndarray,
        event: np.ndarray,
        print_at: Callable[[np.ndarray], np.ndarray],
        accepted: np.ndarray,
    ) -> None:
        """Add accepted event times to the per-station windows; remember the newest's values."""
        idx = np.flatnonzero(accepted)
        if not len(idx):
            return
        c, t = codes[idx], event[idx]
        if not _is_sorted(c, t):
            order = np.lexsort((t, c))
            idx, c, t = idx[order], c[order], t[order]
        # only the tail within the lateness window of each station's new maximum matters
        last = np.ones(len(c), dtype=bool)
        last[:-1] = c[1:] != c[:-1]
        group = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1
        group_max = t[last][group]
        keep = t >= group_max - self._lateness
        seen = self._seen
        lateness = self._lateness
        # the values of each station's newest row in this commit (-1 on the other rows): they
        # become the station's remembered values when that row is its new newest event
        last_kept = last[keep]
        kept_prints = np.full(len(last_kept), -1, dtype=np.int64)
        kept_prints[last_kept] = print_at(idx[last])
        prints = self._prints
        for code, time, fp in zip(
            c[keep].tolist(), t[keep].tolist(), kept_prints.tolist(), strict=True
        ):
            sid = uniq[code]
            times = seen.get(sid)
            if times is None:
                seen[sid] = [time]
                prints[sid] = fp
            elif time > times[-1]:
                times.append(time)
                if fp >= 0:
                    prints[sid] = fp
                # prune now and then, not on every append: decisions only look inside the
                # window and state() prunes exactly, so this bounds memory at no cost per row
                if len(times) % 32 == 0 and times[0] < time - lateness:
                    del times[: bisect.bisect_left(times, time - lateness)]
            else:
                i = bisect.bisect_left(times, time)
                if i == len(times) or times[i] != time:
                    times.insert(i, time)


def _is_sorted(codes: np.ndarray, times: np.ndarray) -> bool:
    """Whether rows are ordered by (station code, time) — the common case, checked in O(n)."""
    if len(codes) < 2:
        return True
    dc = codes[1:] - codes[:-1]
    return bool(np.all((dc > 0) | ((dc == 0) & (times[1:] >= times[:-1]))))


def _grouped_prior_max(codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each row, the max time of earlier rows (input order) with the same code."""
    order = np.argsort(codes, kind="stable")
    cs = codes[order]
    uniq_t, rank = np.unique(times[order], return_inverse=True)
    m = len(uniq_t)
    # offset each group's ranks so one running maximum never leaks across groups
    group = np.cumsum(np.r_[True, cs[1:] != cs[:-1]]) - 1
    key = group.astype(np.int64) * m + rank
    running = np.maximum.accumulate(key)
    prev = np.full(len(cs), _NO_WATERMARK, dtype=np.int64)
    same = cs[1:] == cs[:-1]
    prev_key = running[:-1][same] - group[1:][same] * m
    prev[1:][same] = uniq_t[prev_key]
    result = np.empty_like(prev)
    result[order] = prev
    return result
