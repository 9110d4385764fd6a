"""Per-prediction explanations from a bundle's safe model dump (``explain.json``), no unpickling.

Training writes ``explain.json`` beside ``model.onnx`` (hashed in the manifest like every bundle
file); serving parses it with :func:`load_explainer` and answers ``contributions`` (one value per
served feature), ``base_value`` and ``raw_score`` with ``base_value + Σ contributions ==
raw_score``. Two kinds:

``linear``
    A logistic regression, with its imputer and scaler folded in. The raw score is the logit;
    feature ``j`` contributes ``Σ_c β_c · (z_c − μ_c)`` over the model columns ``c`` derived from
    it (the imputed value and its missing indicator), ``β`` the coefficient on the unscaled
    column and ``μ`` its training mean; exact (the model is additive in the served features).
``trees``
    A tree ensemble (LightGBM, ExtraTrees with the imputer folded into the splits). The raw
    score is ``scale · Σ leaf values`` (LightGBM: the margin, ``scale`` 1; ExtraTrees: the
    averaged positive-class probability, ``scale`` 1/T). Contributions are exact path-dependent
    TreeSHAP (Lundberg et al. 2018): the Shapley values of ``E[f(x) | x_S]`` where unknown
    features follow the training covers. Computed per leaf rather than by the recursive
    Algorithm 2 so it vectorizes: a leaf's game is a product over its path's features of
    ``o_j`` (``x`` takes the path) or ``z_j`` (the cover fraction), and its Shapley value is
    ``v · (o_i − z_i) · ∫₀¹ Π_{j≠i} (z_j + (o_j − z_j) t) dt``, a polynomial integrated exactly
    by Gauss-Legendre quadrature.

``link`` says how the raw score becomes the model's uncalibrated probability: ``logit`` (the
sigmoid of it) or ``identity``; the bundle's calibration then applies as to the ONNX output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from dockline.core.errors import ContractError

if TYPE_CHECKING:
    from dockline.core.bundle import Bundle

__all__ = [
    "EXPLAIN_FILE",
    "EXPLAIN_FORMAT",
    "Explainer",
    "Explanation",
    "LinearExplainer",
    "TreeExplainer",
    "load_explainer",
    "parse_explainer",
]

EXPLAIN_FILE = "explain.json"
EXPLAIN_FORMAT = "dockline-explain/1"
ZERO_THRESHOLD = 1e-35
"""LightGBM's ``kZeroThreshold``: with ``missing_type=Zero`` values this close to 0 are missing."""
_CHUNK = 400_000
"""Row × leaf × slot × quadrature-point cells computed at once (a few MB per array); a forest
with more leaves is explained in groups of leaves."""

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Explanation:
    """``contributions[n, k]`` per served feature, the common ``base_value`` and ``raw[n]``."""

    contributions: Floats
    base_value: float
    raw: Floats


def _bad(message: str, where: str) -> ContractError:
    return ContractError(f"{EXPLAIN_FILE}: {message}", reason="bundle_invalid", where=where)


def _floats(data: dict[str, Any], key: str, size: int, where: str) -> Floats:
    """A list of ``size`` numbers; ``null`` is NaN (JSON has none)."""
    raw = data.get(key)
    if not isinstance(raw, list) or len(raw) != size:
        raise _bad(f"{key} must be a list of {size} numbers", where)
    try:
        return np.array([math.nan if v is None else float(v) for v in raw], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _bad(f"{key} must hold numbers: {exc}", where) from exc


class Explainer:
    """Explains rows of the model's float32 input matrix (the served feature order)."""

    kind: str
    features: tuple[str, ...]
    link: str

    def explain(self, matrix: Matrix) -> Explanation:  # pragma: no cover - abstract
        """Contributions, base value and raw score for each row of ``matrix`` (``[n, k]``)."""
        raise NotImplementedError

    def _check(self, matrix: Matrix) -> Floats:
        if matrix.ndim != 2 or matrix.shape[1] != len(self.features):
            raise ContractError(
                f"expected a matrix of {len(self.features)} features, got shape {matrix.shape}",
                reason="bad_shape",
            )
        return np.asarray(matrix, dtype=np.float32).astype(np.float64)


class LinearExplainer(Explainer):
    """A logistic regression: ``raw = intercept + Σ_j [β_j (z_j − μ_j) + γ_j (m_j − ν_j)]`` where
    ``z_j`` is ``x_j`` (NaN replaced by ``fill_j``) and ``m_j`` its missing indicator."""

    kind = "linear"

    def __init__(self, data: dict[str, Any], features: tuple[str, ...], where: str) -> None:
        k = len(features)
        self.features = features
        self.link = str(data.get("link", "logit"))
        self.intercept = float(data["intercept"])
        self.coef = _floats(data, "coef", k, where)
        self.mean = _floats(data, "mean", k, where)
        self.fill = _floats(data, "fill", k, where)  # NaN: not imputed
        self.indicator_coef = _floats(data, "indicator_coef", k, where)
        self.indicator_mean = _floats(data, "indicator_mean", k, where)
        for name in ("coef", "mean", "indicator_coef", "indicator_mean"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise _bad(f"{name} must be finite", where)

    def explain(self, matrix: Matrix) -> Explanation:
        """Exact: the model is a sum of one term per served feature."""
        x = self._check(matrix)
        missing = np.isnan(x)
        z = np.where(missing & ~np.isnan(self.fill), self.fill, x)
        contributions = self.coef * (z - self.mean) + self.indicator_coef * (
            missing - self.indicator_mean
        )
        raw = self.intercept + contributions.sum(axis=1)
        return Explanation(contributions, self.intercept, raw)


class TreeExplainer(Explainer):
    """Exact path-dependent TreeSHAP over a tree ensemble (see the module docstring).

    Each tree is ``feature`` (−1 at leaves), ``threshold`` (``null``: every non-missing value
    goes left), ``left``/``right`` children, ``missing`` (the child NaN goes to),
    ``zero_missing`` (values within ±1e-35 count as missing, LightGBM's ``Zero`` type),
    ``value`` (leaf values) and ``cover`` (training rows through the node). A row goes left at
    a split when ``x <= threshold`` (compared in float64, as LightGBM and scikit-learn do).
    """

    kind = "trees"

    def __init__(self, data: dict[str, Any], features: tuple[str, ...], where: str) -> None:
        self.features = features
        self.link = str(data.get("link", "identity"))
        self.scale = float(data.get("scale", 1.0))
        self.offset = float(data.get("offset", 0.0))
        trees = data.get("trees")
        if not isinstance(trees, list) or not trees:
            raise _bad("trees must be a non-empty list", where)
        k = len(features)
        feat: list[npt.NDArray[np.int64]] = []
        thr: list[Floats] = []
        go_missing_left: list[npt.NDArray[np.bool_]] = []
        zero: list[npt.NDArray[np.bool_]] = []
        paths: list[tuple[float, list[tuple[int, bool, int, float]]]] = []
        base = 0
        for t, tree in enumerate(trees):
            if not isinstance(tree, dict):
                raise _bad(f"trees[{t}] must be an object", where)
            n = len(tree.get("feature") or [])
            f = np.array(tree["feature"], dtype=np.int64)
            left = np.array(tree["left"], dtype=np.int64)
            right = np.array(tree["right"], dtype=np.int64)
            miss = np.array(tree["missing"], dtype=np.int64)
            value = _floats(tree, "value", n, where)
            cover = _floats(tree, "cover", n, where)
            threshold = _floats(tree, "threshold", n, where)
            zm = np.array(tree.get("zero_missing") or [False] * n, dtype=bool)
            if n == 0 or any(a.shape != (n,) for a in (left, right, miss, zm)):
                raise _bad(f"trees[{t}] arrays must all have one entry per node", where)
            internal = f >= 0
            if np.any(f >= k) or np.any(
                internal & ((left <= 0) | (left >= n) | (right <= 0) | (right >= n))
            ):
                raise _bad(f"trees[{t}] has a feature or child index out of range", where)
            if np.any(internal & (miss != left) & (miss != right)):
                raise _bad(f"trees[{t}]: missing must be the left or the right child", where)
            if np.any(cover < 0) or not np.all(np.isfinite(value[~internal])):
                raise _bad(f"trees[{t}] has a negative cover or a non-finite leaf", where)
            threshold = np.where(np.isnan(threshold), np.inf, threshold)
            feat.append(f)
            thr.append(threshold)
            go_missing_left.append(miss == left)
            zero.append(zm)
            self._paths(t, f, left, right, cover, value, base, paths, where)
            base += n
        self._nodes = base
        self._feature = np.concatenate(feat)
        internal_all = self._feature >= 0
        self._split_feature = np.where(internal_all, self._feature, 0)
        self._threshold = np.concatenate(thr)
        self._missing_left = np.concatenate(go_missing_left)
        self._zero_missing = np.concatenate(zero)
        self._build(paths, k)

    @staticmethod
    def _paths(
        t: int,
        feature: npt.NDArray[np.int64],
        left: npt.NDArray[np.int64],
        right: npt.NDArray[np.int64],
        cover: Floats,
        value: Floats,
        base: int,
        out: list[tuple[float, list[tuple[int, bool, int, float]]]],
        where: str,
    ) -> None:
        """Append (leaf value, [(global node, went left, feature, cover fraction)]) per leaf."""
        stack: list[tuple[int, list[tuple[int, bool, int, float]]]] = [(0, [])]
        seen = 0
        while stack:
            node, path = stack.pop()
            seen += 1
            if seen > feature.size:
                raise _bad(f"trees[{t}] is not a tree (a node is reached twice)", where)
            if feature[node] < 0:
                out.append((float(value[node]), path))
                continue
            parent = cover[node]
            for child, is_left in ((int(left[node]), True), (int(right[node]), False)):
                fraction = cover[child] / parent if parent > 0 else 0.0
                edge = (base + node, is_left, int(feature[node]), float(fraction))
                stack.append((child, [*path, edge]))

    def _build(self, paths: list[tuple[float, list[tuple[int, bool, int, float]]]], k: int) -> None:
        """Group the leaves by how many features their path splits on (``d``): a group's arrays
        are ``[leaf, d]`` and it integrates with ``⌈d/2⌉`` points, so a shallow leaf does not pay
        for the deepest path."""
        by_width: dict[int, list[tuple[float, dict[int, list[tuple[int, bool]]], list[float]]]]
        by_width = {}
        constant = 0.0  # single-leaf trees: every row reaches them
        stumps = 0
        for value, path in paths:
            slots: dict[int, list[tuple[int, bool]]] = {}  # feature -> its splits on the path
            zero: dict[int, float] = {}
            for node, went_left, f, fraction in path:
                slots.setdefault(f, []).append((node, went_left))
                zero[f] = zero.get(f, 1.0) * fraction
            if not slots:
                constant += value
                stumps += 1
                continue
            by_width.setdefault(len(slots), []).append((value, slots, [zero[f] for f in slots]))
        self._constant = constant
        # Groups of at most _CHUNK cells per row, so no array of a huge forest outgrows a few MB
        self._groups: list[_LeafGroup] = []
        for d in sorted(by_width):
            size = max(1, _CHUNK // (d * ((d + 1) // 2)))
            group = by_width[d]
            self._groups.extend(
                _LeafGroup(d, group[i : i + size]) for i in range(0, len(group), size)
            )
        self.leaves = sum(len(g.value) for g in self._groups) + stumps
        self.width = max((g.width for g in self._groups), default=0)
        self.base_value = self.offset + self.scale * (
            constant + sum(g.expected for g in self._groups)
        )

    def _go_left(self, x: Floats) -> npt.NDArray[np.bool_]:
        """``[n, nodes]``: whether each row goes left at each node (leaves: meaningless)."""
        v = x[:, self._split_feature]
        missing = np.isnan(v) | (self._zero_missing & (np.abs(v) <= ZERO_THRESHOLD))
        with np.errstate(invalid="ignore"):
            below = v <= self._threshold
        out: npt.NDArray[np.bool_] = np.where(missing, self._missing_left, below)
        return out

    def explain(self, matrix: Matrix) -> Explanation:
        """Exact TreeSHAP for every row, vectorized over rows, leaves and path features."""
        x = self._check(matrix)
        n, k = x.shape
        contributions = np.zeros((n, k + 1), dtype=np.float64)  # column k: padding, dropped
        raw = np.full(n, self._constant, dtype=np.float64)
        cells = max((g.cells for g in self._groups), default=1)
        step = max(1, _CHUNK // cells)
        for start in range(0, n, step):
            stop = min(n, start + step)
            go_left = self._go_left(x[start:stop])
            for group in self._groups:
                group.add(go_left, contributions[start:stop], raw[start:stop])
        return Explanation(
            contributions[:, :k] * self.scale, self.base_value, self.offset + self.scale * raw
        )


class _LeafGroup:
    """The leaves whose paths split on ``width`` distinct features, as padded-free arrays.

    Each leaf's slots are its path's features; ``edge_node``/``edge_left`` list every slot's
    splits flattened in (leaf, slot) order from ``slot_start``: ``o`` of a slot is whether the
    row takes all of them.
    """

    def __init__(
        self,
        width: int,
        leaves: list[tuple[float, dict[int, list[tuple[int, bool]]], list[float]]],
    ) -> None:
        self.width = width
        self.value = np.array([v for v, _, _ in leaves], dtype=np.float64)
        self.slot_feature = np.array([list(s) for _, s, _ in leaves], dtype=np.int64)
        self.slot_zero = np.array([z for _, _, z in leaves], dtype=np.float64)
        edge_node: list[int] = []
        edge_left: list[bool] = []
        starts: list[int] = []
        for _, slots, _ in leaves:
            for edges in slots.values():
                starts.append(len(edge_node))
                edge_node.extend(node for node, _ in edges)
                edge_left.extend(went_left for _, went_left in edges)
        self.edge_node = np.array(edge_node, dtype=np.int64)
        self.edge_left = np.array(edge_left, dtype=bool)
        self.slot_start = np.array(starts, dtype=np.int64)
        # Gauss-Legendre with m points integrates degree 2m − 1 exactly; the polynomial in t
        # has degree width − 1.
        points, weights = np.polynomial.legendre.leggauss(max(1, (width + 1) // 2))
        t = (points + 1.0) / 2.0
        self.t = t
        self.weights = weights / 2.0
        self.expected = float(np.sum(self.value * np.prod(self.slot_zero, axis=1)))
        self.cells = self.value.size * width * t.size

    def add(self, go_left: npt.NDArray[np.bool_], contributions: Floats, raw: Floats) -> None:
        """Add this group's (unscaled) contributions and reached leaf values for the rows."""
        n = go_left.shape[0]
        leaves, width = self.slot_zero.shape
        taken = go_left[:, self.edge_node] == self.edge_left
        on = np.logical_and.reduceat(taken, self.slot_start, axis=1).reshape(n, leaves, width)
        z = self.slot_zero[..., None]
        factors = z + (on[..., None] - z) * self.t  # z + (o − z) t: [n, L, d, q]
        g = factors[:, :, 0].copy()
        for s in range(1, width):
            g *= factors[:, :, s]
        others = np.zeros_like(factors)  # Π over the other slots; a zero factor has o = z = 0
        np.divide(g[:, :, None, :], factors, out=others, where=factors > 0)
        phi = (self.value[:, None] * (on - self.slot_zero)) * (others @ self.weights)
        k1 = contributions.shape[1]
        index = (np.arange(n)[:, None, None] * k1 + self.slot_feature).ravel()
        contributions += np.bincount(index, weights=phi.ravel(), minlength=n * k1).reshape(n, k1)
        raw += np.all(on, axis=2) @ self.value  # the leaf each tree sends the row to


def parse_explainer(raw: bytes, features: list[str] | tuple[str, ...], where: str) -> Explainer:
    """Validate ``explain.json`` bytes for a model over ``features`` and build its explainer."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"not JSON: {exc}", where) from exc
    if not isinstance(data, dict) or data.get("format") != EXPLAIN_FORMAT:
        raise _bad(f"format must be {EXPLAIN_FORMAT!r}", where)
    names = tuple(features)
    if data.get("features") != list(names):
        raise _bad("features must be the manifest's features, in order", where)
    if data.get("link") not in ("logit", "identity"):
        raise _bad("link must be 'logit' or 'identity'", where)
    try:
        if data.get("kind") == "linear":
            return LinearExplainer(data, names, where)
        if data.get("kind") == "trees":
            return TreeExplainer(data, names, where)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise _bad(f"malformed: {exc!r}", where) from exc
    raise _bad("kind must be 'linear' or 'trees'", where)


def load_explainer(bundle: Bundle) -> Explainer | None:
    """The bundle's explainer, or None when it ships no dump (``explain.json`` not listed)."""
    if EXPLAIN_FILE not in bundle.manifest.lineage.files:
        return None
    path = bundle.file(EXPLAIN_FILE)
    return parse_explainer(path.read_bytes(), bundle.manifest.features, str(path))
