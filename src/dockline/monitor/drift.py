"""Drift: live feature and prediction distributions against a reference, by effect size.

A reference (:class:`Reference`) is a fixed-bin histogram per feature — the bundle's drift
baseline (:func:`reference_from_baseline`) or any table (:func:`reference_from_values`) — with
an underflow and an overflow bin around its edges. Live values become a :class:`Sketch` on the
same bins: counts per bin, plus the sums of the values outside the edges. Sketches of two
windows merge by addition, so an hour is the sum of its minutes and a day the sum of its hours.

Each feature gets a verdict from one method:

* ``wasserstein`` (numeric): Wasserstein-1 distance divided by the reference's standard
  deviation — "how many σ did the distribution move" — over ``wasserstein_threshold`` (0.1);
* ``jensenshannon`` (categorical: few distinct integer values): Jensen–Shannon distance (base 2,
  in [0, 1]) over ``jensenshannon_threshold`` (0.1);
* ``psi`` when configured as the numeric method: population stability index over 0.2;
* ``chisquare`` when the window holds fewer than ``small_sample`` values: effect sizes from a
  few hundred values are noise, so a chi-square goodness-of-fit test against the reference
  proportions decides (p < ``alpha``).

Effect sizes do not grow with the sample: at a million rows the same distribution scores ~0 and
is never flagged, which is where p-value tests alarm on everything (Evidently #50). All three
effect sizes are reported for every feature; the dataset drifts when at least ``drift_share``
of its features do. Everything is vectorized over rows and windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from dockline.core.bundle import FeatureBaseline
from dockline.core.config import MonitorDriftConfig
from dockline.core.errors import ValidationError

__all__ = [
    "DatasetDrift",
    "FeatureDrift",
    "Reference",
    "Sketch",
    "compare",
    "drift_frames",
    "drift_of",
    "jensenshannon",
    "psi",
    "reference_from_baseline",
    "reference_from_values",
    "sketch_many",
    "wasserstein_normed",
    "window_ids",
]

Floats = npt.NDArray[np.float64]
Method = Literal["wasserstein", "jensenshannon", "psi", "chisquare"]

_EPS = 1e-4  # PSI's floor for an empty bin (the usual choice; Evidently uses the same)
_BINS = 40
_EDGE_SAMPLE = 100_000


@dataclass(frozen=True, slots=True)
class Reference:
    """One feature's reference distribution on fixed bins.

    ``edges`` are the K+1 finite bin edges; ``probs`` the K+2 bin probabilities (underflow,
    K bins, overflow). ``categorical`` features have one bin per distinct value.
    """

    name: str
    edges: Floats
    probs: Floats
    mean: float
    std: float
    count: int
    null_fraction: float
    categorical: bool = False
    uniform: bool = False
    """Equal-width bins (binned by arithmetic rather than search)."""


@dataclass(slots=True)
class Sketch:
    """Mergeable summary of one feature's values in one window on a reference's bins.

    ``counts`` has K+2 entries (underflow, bins, overflow); ``below``/``above`` are the sums of
    the values in the outer bins (what the Wasserstein distance needs beyond the edges).
    """

    counts: npt.NDArray[np.int64]
    nulls: int
    below: float
    above: float

    @property
    def n(self) -> int:
        """Non-null values."""
        return int(self.counts.sum())

    def merge(self, other: Sketch) -> Sketch:
        """The sketch of both windows together."""
        if self.counts.shape != other.counts.shape:
            raise ValidationError("sketches on different bins cannot merge", reason="bad_shape")
        return Sketch(
            self.counts + other.counts,
            self.nulls + other.nulls,
            self.below + other.below,
            self.above + other.above,
        )


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's verdict: ``score`` is the deciding method's (a p-value for chisquare)."""

    name: str
    drift: bool
    method: Method
    score: float
    threshold: float
    n: int
    psi: float
    wasserstein: float
    jensenshannon: float
    null_fraction: float
    reference_null_fraction: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``drift``, ``score`` and ``method`` first, then the context."""
        return {
            "drift": self.drift,
            "score": self.score,
            "method": self.method,
            "threshold": self.threshold,
            "n": self.n,
            "psi": self.psi,
            "wasserstein": self.wasserstein,
            "jensenshannon": self.jensenshannon,
            "null_fraction": self.null_fraction,
            "reference_null_fraction": self.reference_null_fraction,
        }


@dataclass(frozen=True, slots=True)
class DatasetDrift:
    """Per-feature verdicts and the dataset-level one."""

    drift: bool
    share: float
    features: dict[str, FeatureDrift]
    prediction: FeatureDrift | None = None

    def to_dict(self) -> dict[str, object]:
        """``{"drift": bool, "share": x, "features": {name: {...}}, "prediction": {...}}``."""
        return {
            "drift": self.drift,
            "share": self.share,
            "features": {name: f.to_dict() for name, f in self.features.items()},
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
        }


# -- references ---------------------------------------------------------------------------------


def _is_categorical(values: Floats, max_values: int) -> tuple[bool, Floats]:
    """Whether ``values`` are at most ``max_values`` distinct integers (and those values).

    Linear time for the common cases: non-integral data is answered by one vectorized pass,
    integral data with a small range by a ``bincount`` instead of a sort.
    """
    if values.size == 0:
        return False, values[:0]
    probe = values[:: max(1, values.size // 4096)]  # most features answer here, in microseconds
    if not bool(np.all(probe == np.round(probe))) or not bool(np.all(values == np.round(values))):
        return False, values[:0]
    low, high = float(values.min()), float(values.max())
    if high - low < 1_000_000:
        present = np.flatnonzero(np.bincount((values - low).astype(np.intp)))
        distinct = present.astype(np.float64) + low
    else:
        distinct = np.unique(values)
    return distinct.size <= max_values, distinct


def _categorical_edges(distinct: Floats) -> Floats:
    # One bin per value: edges half-way between neighbours (and half a step outside the ends).
    if distinct.size == 1:
        return np.array([distinct[0] - 0.5, distinct[0] + 0.5])
    mids = (distinct[1:] + distinct[:-1]) / 2.0
    return np.concatenate([[distinct[0] - 0.5], mids, [distinct[-1] + 0.5]])


def reference_from_values(
    name: str, values: npt.ArrayLike, *, categorical_max_values: int = 12, bins: int = _BINS
) -> Reference:
    """A reference from raw values: ``bins`` equal-width bins between the 0.1 % and 99.9 %
    quantiles (the tails go to the outer bins, measured exactly by the sketch's sums), or one
    bin per value for a categorical feature. NaN and infinities count as nulls.
    """
    column = np.asarray(values, dtype=np.float64).ravel()
    finite = column[np.isfinite(column)]
    count = int(column.size)
    null_fraction = 1.0 - finite.size / count if count else 0.0
    if finite.size == 0:
        raise ValidationError(f"{name} has no finite reference values", where=name)
    categorical, distinct = _is_categorical(finite, categorical_max_values)
    if categorical:
        edges = _categorical_edges(distinct)
    else:
        # The edges need not be exact quantiles, only fixed: a strided sample of a large
        # reference places them (deterministically); the bin masses count every value.
        sample = finite[:: max(1, finite.size // _EDGE_SAMPLE)]
        low, high = np.quantile(sample, [0.001, 0.999])
        if high <= low:
            low, high = float(finite.min()), float(finite.max())
        edges = np.linspace(low, high, bins + 1) if high > low else np.array([low, low])
    uniform = not categorical and edges[-1] > edges[0]
    counts = _bin_counts(edges, finite, uniform)
    return Reference(
        name=name,
        edges=edges,
        probs=counts / counts.sum(),
        mean=float(finite.mean()),
        std=float(finite.std()),
        count=count,
        null_fraction=null_fraction,
        categorical=categorical,
        uniform=bool(uniform),
    )


def reference_from_baseline(fb: FeatureBaseline, *, categorical_max_values: int = 12) -> Reference:
    """A reference from a bundle's :class:`FeatureBaseline`.

    The baseline knows its CDF at the histogram's edges (cumulative counts) and, for a
    continuous feature, at the 21 quantiles (0, 0.05, …, 1); the bins are the union of those
    points, each with the mass between its knots. The histogram alone is equal-width between
    min and max, which puts a skewed feature in one bin; the quantiles resolve it. A baseline
    whose quantiles repeat a few integer values is categorical for the choice of method.
    """
    if not fb.bin_edges or not fb.bin_counts or sum(fb.bin_counts) == 0:
        raise ValidationError(f"{fb.name} has no histogram in the drift baseline", where=fb.name)
    hist_edges = np.asarray(fb.bin_edges, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(fb.bin_counts, dtype=np.float64)])
    x = hist_edges
    f = cum / cum[-1]
    quantiles = np.asarray(fb.quantiles, dtype=np.float64)
    continuous = (
        quantiles.size >= 2
        and bool(np.all(np.diff(quantiles) > 0))
        and not bool(np.all(quantiles == np.round(quantiles)))
    )
    if continuous:
        # Distinct, non-integral quantiles: F(q_k) = k/20 holds, so they are exact knots. With
        # ties or integer values (a discrete feature) a quantile sits somewhere inside a point
        # mass and would misplace it, so only the histogram's exact edges are used.
        x = np.concatenate([x, quantiles])
        f = np.concatenate([f, np.linspace(0.0, 1.0, quantiles.size)])
    order = np.lexsort((f, x))
    x, f = x[order], f[order]
    edges, start = np.unique(x, return_index=True)
    f_edges = np.maximum.accumulate(f[start])
    f_edges[-1] = 1.0
    probs = np.concatenate([[f_edges[0]], np.diff(f_edges), [0.0]])
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
        probs = np.array([0.0, 1.0, 0.0])
    categorical = bool(
        quantiles.size
        and _is_categorical(quantiles, categorical_max_values)[0]
        and np.unique(quantiles).size < quantiles.size  # ties: a few repeated values
    )
    return Reference(
        name=fb.name,
        edges=edges,
        probs=probs / probs.sum(),
        mean=float(fb.mean if fb.mean is not None else 0.0),
        std=float(fb.std if fb.std is not None else 0.0),
        count=fb.count,
        null_fraction=fb.null_fraction,
        categorical=categorical,
    )


# -- sketches -----------------------------------------------------------------------------------


def _bin_index(edges: Floats, values: Floats, uniform: bool = False) -> npt.NDArray[np.intp]:
    """0 underflow, 1..K the bins ([e_i, e_i+1), the last closed like np.histogram), K+1 over.

    Equal-width bins are found by arithmetic (a few vectorized passes) instead of a binary
    search per value; the same rule bins the reference and every sketch, so they agree.
    """
    k = edges.size - 1
    if uniform and k > 0 and edges[-1] > edges[0]:
        scaled = (values - edges[0]) * (k / (edges[-1] - edges[0]))
        idx = np.floor(scaled, out=scaled)
        np.clip(idx, -1.0, float(k), out=idx)
        out: npt.NDArray[np.intp] = idx.astype(np.intp) + 1
        out[values == edges[-1]] = k
        return out
    found = np.searchsorted(edges, values, side="right")
    found[values == edges[-1]] = k
    return found


def _bin_counts(edges: Floats, finite: Floats, uniform: bool = False) -> Floats:
    idx = _bin_index(edges, finite, uniform)
    return np.bincount(idx, minlength=edges.size + 1).astype(np.float64)


def sketch_many(
    reference: Reference,
    values: npt.ArrayLike,
    windows: npt.NDArray[np.integer] | None = None,
    n_windows: int = 1,
) -> list[Sketch]:
    """One :class:`Sketch` per window of ``values`` (``windows[i]`` in ``[0, n_windows)``)."""
    column = np.asarray(values, dtype=np.float64).ravel()
    win = (
        np.zeros(column.size, dtype=np.intp)
        if windows is None
        else np.asarray(windows, dtype=np.intp)
    )
    finite = np.isfinite(column)
    nulls = np.bincount(win[~finite], minlength=n_windows)
    x, w = column[finite], win[finite]
    slots = reference.edges.size + 1
    idx = _bin_index(reference.edges, x, reference.uniform)
    counts = np.bincount(w * slots + idx, minlength=n_windows * slots).reshape(n_windows, slots)
    below = np.bincount(w, weights=np.where(idx == 0, x, 0.0), minlength=n_windows)
    above = np.bincount(w, weights=np.where(idx == slots - 1, x, 0.0), minlength=n_windows)
    return [
        Sketch(counts[i].astype(np.int64), int(nulls[i]), float(below[i]), float(above[i]))
        for i in range(n_windows)
    ]


# -- effect sizes -------------------------------------------------------------------------------


def psi(p: Floats, q: Floats) -> float:
    """Population stability index of ``q`` against ``p`` (probabilities; empty bins floored)."""
    pp, qq = np.maximum(p, _EPS), np.maximum(q, _EPS)
    return float(np.sum((qq - pp) * np.log(qq / pp)))


def jensenshannon(p: Floats, q: Floats) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two probability vectors."""
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(np.sqrt(max(0.0, 0.5 * kl_p.sum() + 0.5 * kl_q.sum())))


def wasserstein_normed(reference: Reference, sketch: Sketch) -> float:
    """W1 between the reference and the sketch, over the reference's standard deviation.

    Within a bin both CDFs are taken as linear (values spread evenly), which integrates
    ``|F_ref - F_cur|`` exactly between the edges; beyond them the sketch's outer sums give the
    current distribution's exact mass-weighted distance to the edge.
    """
    n = sketch.n
    if n == 0:
        return 0.0
    q = sketch.counts / n
    edges = reference.edges
    # CDFs at each edge (mass strictly below the edge, underflow included).
    f_ref = np.cumsum(reference.probs)[:-1]
    f_cur = np.cumsum(q)[:-1]
    d = f_ref - f_cur
    a, b = d[:-1], d[1:]
    width = np.diff(edges)
    same = a * b >= 0
    denom = np.abs(a) + np.abs(b)
    crossing = np.divide(a * a + b * b, 2.0 * denom, out=np.zeros_like(a), where=denom > 0)
    inner = np.where(same, (np.abs(a) + np.abs(b)) / 2.0, crossing) * width
    outer_low = max(0.0, float(sketch.counts[0] * edges[0] - sketch.below) / n)
    outer_high = max(0.0, float(sketch.above - sketch.counts[-1] * edges[-1]) / n)
    w1 = float(inner.sum()) + outer_low + outer_high
    scale = reference.std if reference.std > 0 else 1.0
    return w1 / scale


def _chisquare_p(reference: Reference, sketch: Sketch) -> float:
    """Chi-square goodness of fit of the sketch's counts to the reference proportions, adjacent
    bins pooled until each expects at least 5 values."""
    from scipy.stats import chisquare  # small samples only; keeps import time off the hot path

    n = sketch.n
    expected = reference.probs * n
    pooled_obs: list[float] = []
    pooled_exp: list[float] = []
    obs_acc = exp_acc = 0.0
    for o, e in zip(sketch.counts.tolist(), expected.tolist(), strict=True):
        obs_acc += o
        exp_acc += e
        if exp_acc >= 5.0:
            pooled_obs.append(obs_acc)
            pooled_exp.append(exp_acc)
            obs_acc = exp_acc = 0.0
    if pooled_exp:
        pooled_obs[-1] += obs_acc
        pooled_exp[-1] += exp_acc
    if len(pooled_exp) < 2:
        return 1.0  # too few values to test anything
    result = chisquare(np.asarray(pooled_obs), np.asarray(pooled_exp))
    return float(result.pvalue)


def drift_of(
    reference: Reference,
    sketch: Sketch,
    config: MonitorDriftConfig,
    *,
    numeric_method: Literal["wasserstein", "psi"] = "wasserstein",
) -> FeatureDrift:
    """The verdict on one feature's sketch against its reference."""
    n = sketch.n
    q = sketch.counts / n if n else np.zeros_like(reference.probs)
    scores = {
        "psi": psi(reference.probs, q) if n else 0.0,
        "wasserstein": wasserstein_normed(reference, sketch),
        "jensenshannon": jensenshannon(reference.probs, q) if n else 0.0,
    }
    thresholds = {
        "psi": config.psi_threshold,
        "wasserstein": config.wasserstein_threshold,
        "jensenshannon": config.jensenshannon_threshold,
    }
    method: Method
    if n < config.small_sample:
        method, threshold = "chisquare", config.alpha
        score = _chisquare_p(reference, sketch) if n else 1.0
        drifted = score < config.alpha
    else:
        method = "jensenshannon" if reference.categorical else numeric_method
        threshold = thresholds[method]
        score = scores[method]
        drifted = score > threshold
    total = n + sketch.nulls
    return FeatureDrift(
        name=reference.name,
        drift=bool(drifted),
        method=method,
        score=round(score, 6),
        threshold=threshold,
        n=n,
        psi=round(scores["psi"], 6),
        wasserstein=round(scores["wasserstein"], 6),
        jensenshannon=round(scores["jensenshannon"], 6),
        null_fraction=round(sketch.nulls / total, 6) if total else 0.0,
        reference_null_fraction=reference.null_fraction,
    )


def compare(
    references: Sequence[Reference],
    sketches: Mapping[str, Sketch],
    config: MonitorDriftConfig,
    *,
    prediction: tuple[Reference, Sketch] | None = None,
) -> DatasetDrift:
    """Per-feature verdicts for every reference with a sketch, and the dataset-level one."""
    features = {r.name: drift_of(r, sketches[r.name], config) for r in references}
    drifted = sum(f.drift for f in features.values())
    share = drifted / len(features) if features else 0.0
    pred = None if prediction is None else drift_of(*prediction, config)
    return DatasetDrift(
        drift=bool(features) and share >= config.drift_share,
        share=round(share, 6),
        features=features,
        prediction=pred,
    )


# -- whole tables -------------------------------------------------------------------------------


def window_ids(times_us: npt.ArrayLike, window_us: int) -> tuple[npt.NDArray[np.intp], int, int]:
    """Each time's window (aligned to the epoch: hours start on the hour), as indices from the
    first window; returns ``(ids, n_windows, first_window_start_us)``."""
    t = np.asarray(times_us, dtype=np.int64)
    if t.size == 0:
        return np.zeros(0, dtype=np.intp), 0, 0
    absolute = t // window_us
    first = int(absolute.min())
    ids = (absolute - first).astype(np.intp)
    return ids, int(ids.max()) + 1, first * window_us


def drift_frames(
    reference: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    config: MonitorDriftConfig,
) -> DatasetDrift:
    """Compare two tables column by column (the columns they share, in reference order)."""
    names = [name for name in reference if name in current]
    if not names:
        raise ValidationError(
            "the reference and current tables share no numeric column", reason="no_columns"
        )
    refs = [
        reference_from_values(n, reference[n], categorical_max_values=config.categorical_max_values)
        for n in names
    ]
    sketches = {r.name: sketch_many(r, current[r.name])[0] for r in refs}
    return compare(refs, sketches, config)
