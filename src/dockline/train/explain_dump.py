"""The safe model dump serving explains predictions from (``explain.json``, JSON only).

:func:`explanation_files` turns a fitted candidate into the dump
:mod:`dockline.core.explain` reads: a logistic pipeline's coefficients with its imputer and
scaler folded in, or every tree of a LightGBM booster or an ExtraTrees forest (the imputer
folded into the splits, so contributions are per served feature). Floats are written with
``repr`` precision (JSON round-trips them exactly) and keys sorted: same model, same bytes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dockline.core.errors import ValidationError
from dockline.core.explain import EXPLAIN_FILE, EXPLAIN_FORMAT, parse_explainer

__all__ = ["explanation_dump", "explanation_files"]

_log = logging.getLogger(__name__)


def _num(value: float) -> float | None:
    """A JSON number; NaN becomes null."""
    v = float(value)
    return None if math.isnan(v) else v


class _Imputer:
    """A fitted SimpleImputer's effect per served feature: fill value and indicator column."""

    def __init__(self, op: Any, k: int) -> None:
        if not (isinstance(op.missing_values, float) and math.isnan(op.missing_values)):
            raise ValidationError("only SimpleImputer(missing_values=nan) can be explained")
        stats = np.asarray(op.statistics_, dtype=np.float64)
        if getattr(op, "keep_empty_features", False):
            kept = list(range(k))
        else:  # scikit-learn drops columns that were empty in training
            kept = [i for i in range(k) if not np.isnan(stats[i])]
        indicator = getattr(op, "indicator_", None)
        flagged = [] if indicator is None else [int(i) for i in indicator.features_]
        # scikit-learn (and the ONNX graph) fill float32 input with the statistic cast to float32
        self.fill = np.nan_to_num(stats).astype(np.float32).astype(np.float64)
        self.kept = kept
        self.flagged = flagged
        # output column -> (served feature, is the missing indicator)
        self.columns = [(i, False) for i in kept] + [(i, True) for i in flagged]


def _split_steps(estimator: Any) -> tuple[list[Any], Any]:
    if hasattr(estimator, "steps"):
        return [step for _, step in estimator.steps[:-1]], estimator.steps[-1][1]
    return [], estimator


def _linear(estimator: Any, k: int) -> dict[str, Any]:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    steps, final = _split_steps(estimator)
    if not isinstance(final, LogisticRegression) or final.coef_.shape[0] != 1:
        raise ValidationError("not a binary logistic regression")
    imputer: _Imputer | None = None
    scaler: Any = None
    for step in steps:
        if isinstance(step, SimpleImputer) and imputer is None and scaler is None:
            imputer = _Imputer(step, k)
        elif isinstance(step, StandardScaler) and scaler is None:
            scaler = step
        else:
            raise ValidationError(f"cannot fold {type(step).__name__} into the explanation")
    columns = imputer.columns if imputer is not None else [(i, False) for i in range(k)]
    w = np.asarray(final.coef_[0], dtype=np.float64)
    if w.size != len(columns):
        raise ValidationError(f"{w.size} coefficients for {len(columns)} model columns")
    shift = np.zeros(w.size)
    scale = np.ones(w.size)
    mean = np.zeros(w.size)
    if scaler is not None:
        if scaler.mean_ is not None:
            mean = np.asarray(scaler.mean_, dtype=np.float64)
            if scaler.with_mean:
                shift = mean
        if scaler.with_std and scaler.scale_ is not None:
            scale = np.asarray(scaler.scale_, dtype=np.float64)
    beta = w / scale  # the coefficient on the unscaled column
    # logit = b + Σ w (z − shift)/scale = b − Σ β shift + Σ β z; around the training mean:
    intercept = float(final.intercept_[0]) - float(beta @ shift) + float(beta @ mean)
    coef, mu = np.zeros(k), np.zeros(k)
    ind_coef, ind_mean = np.zeros(k), np.zeros(k)
    for c, (j, is_indicator) in enumerate(columns):
        if is_indicator:
            ind_coef[j], ind_mean[j] = beta[c], mean[c]
        else:
            coef[j], mu[j] = beta[c], mean[c]
    # a column the imputer dropped (empty in training) has no coefficient: any fill gives 0
    fill = imputer.fill.copy() if imputer is not None else np.full(k, np.nan)
    return {
        "kind": "linear",
        "link": "logit",
        "intercept": intercept,
        "coef": [float(v) for v in coef],
        "mean": [float(v) for v in mu],
        "fill": [_num(v) for v in fill],
        "indicator_coef": [float(v) for v in ind_coef],
        "indicator_mean": [float(v) for v in ind_mean],
    }


def _sklearn_tree(tree: Any, imputer: _Imputer | None, positive: int) -> dict[str, Any]:
    """One scikit-learn tree with the imputer's columns mapped back to served features."""
    t = tree.tree_
    n = int(t.node_count)
    value = np.asarray(t.value, dtype=np.float64)[:, 0, :]
    totals = value.sum(axis=1)
    proba = np.divide(value[:, positive], totals, out=np.zeros(n), where=totals > 0)
    feature = np.asarray(t.feature, dtype=np.int64)
    left = np.asarray(t.children_left, dtype=np.int64).copy()
    right = np.asarray(t.children_right, dtype=np.int64).copy()
    threshold: list[float | None] = []
    missing = np.zeros(n, dtype=np.int64)
    served = np.full(n, -1, dtype=np.int64)
    nan_left = getattr(t, "missing_go_to_left", np.zeros(n, dtype=np.uint8))
    for i in range(n):
        f = int(feature[i])
        if f < 0:
            threshold.append(None)
            missing[i] = -1
            continue
        thr = float(t.threshold[i])
        if imputer is None:
            served[i] = f
            threshold.append(thr)
            missing[i] = left[i] if nan_left[i] else right[i]
            continue
        j, is_indicator = imputer.columns[f]
        served[i] = j
        if is_indicator:  # 0 when present, 1 when missing: present rows all go one way
            orig_left, orig_right = int(left[i]), int(right[i])
            present = orig_left if thr >= 0.0 else orig_right
            absent = orig_left if thr >= 1.0 else orig_right
            # "left" is where present rows go (threshold null); which side a child is on
            # changes nothing else: its cover goes with it
            left[i], right[i] = present, orig_right if present == orig_left else orig_left
            threshold.append(None)
            missing[i] = absent
        else:
            threshold.append(thr)
            missing[i] = left[i] if imputer.fill[j] <= thr else right[i]
    return {
        "feature": [int(v) for v in served],
        "threshold": threshold,
        "left": [int(v) for v in left],
        "right": [int(v) for v in right],
        "missing": [int(v) for v in missing],
        "value": [float(v) for v in proba],
        "cover": [float(v) for v in t.weighted_n_node_samples],
    }


def _extra_trees(estimator: Any, k: int) -> dict[str, Any]:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer

    steps, final = _split_steps(estimator)
    if not isinstance(final, ExtraTreesClassifier | RandomForestClassifier):
        raise ValidationError("not a scikit-learn forest")
    if len(final.classes_) != 2 or final.n_outputs_ != 1:
        raise ValidationError("not a binary forest")
    imputer = None
    for step in steps:
        if isinstance(step, SimpleImputer) and imputer is None:
            imputer = _Imputer(step, k)
        else:
            raise ValidationError(f"cannot fold {type(step).__name__} into the explanation")
    trees = [_sklearn_tree(tree, imputer, 1) for tree in final.estimators_]
    return {
        "kind": "trees",
        "link": "identity",
        "scale": 1.0 / len(trees),
        "offset": 0.0,
        "trees": trees,
    }


_NODE_KEYS = ("feature", "threshold", "left", "right", "missing", "zero_missing", "value", "cover")


def _lightgbm_tree(structure: dict[str, Any]) -> dict[str, Any]:
    """One LightGBM tree (``dump_model`` JSON) as node arrays, root first."""
    nodes: dict[str, list[Any]] = {
        key: []
        for key in (
            "feature",
            "threshold",
            "left",
            "right",
            "missing",
            "zero_missing",
            "value",
            "cover",
        )
    }
    # parents are patched with their children's indices as these are numbered
    pending: list[tuple[int, str, dict[str, Any]]] = []
    order: list[dict[str, Any]] = []

    def add(node: dict[str, Any]) -> int:
        order.append(node)
        index = len(order) - 1
        if "split_index" in node:
            if node.get("decision_type") != "<=":
                raise ValidationError("categorical LightGBM splits cannot be explained")
            missing_type = node.get("missing_type", "None")
            default_left = bool(node.get("default_left", True))
            nodes["feature"].append(int(node["split_feature"]))
            threshold = float(node["threshold"])
            nodes["threshold"].append(threshold)
            nodes["left"].append(-1)
            nodes["right"].append(-1)
            if missing_type in ("NaN", "Zero"):  # Zero: NaN counts as 0, and 0 as missing
                nodes["missing"].append("left" if default_left else "right")
            else:  # None: NaN is compared as 0
                nodes["missing"].append("left" if threshold >= 0.0 else "right")
            nodes["zero_missing"].append(missing_type == "Zero")
            nodes["value"].append(0.0)
            nodes["cover"].append(float(node["internal_count"]))
            pending.append((index, "left", node["left_child"]))
            pending.append((index, "right", node["right_child"]))
        else:
            nodes["feature"].append(-1)
            nodes["threshold"].append(None)
            nodes["left"].append(-1)
            nodes["right"].append(-1)
            nodes["missing"].append(-1)
            nodes["zero_missing"].append(False)
            nodes["value"].append(float(node["leaf_value"]))
            nodes["cover"].append(float(node.get("leaf_count", 0)))
        return index

    add(structure)
    while pending:
        parent, side, child = pending.pop()
        nodes[side][parent] = add(child)
    for i, m in enumerate(nodes["missing"]):
        if m in ("left", "right"):
            nodes["missing"][i] = nodes[m][i]
    return nodes


def _lightgbm(estimator: Any, k: int) -> dict[str, Any]:
    import lightgbm

    steps, final = _split_steps(estimator)
    if steps or not isinstance(final, lightgbm.LGBMClassifier):
        raise ValidationError("not a bare LGBMClassifier")
    booster = final.booster_
    dump = booster.dump_model()
    objective = str(dump.get("objective", ""))
    if not objective.startswith("binary") or int(dump.get("num_class", 1)) != 1:
        raise ValidationError(f"LightGBM objective {objective!r} is not binary")
    sigmoid = 1.0
    for part in objective.split():
        if part.startswith("sigmoid:"):
            sigmoid = float(part.split(":", 1)[1])
    if int(dump.get("max_feature_idx", k - 1)) != k - 1:
        raise ValidationError("the booster's feature count differs from the model's")
    trees = [_lightgbm_tree(info["tree_structure"]) for info in dump["tree_info"]]
    # probability = 1 / (1 + exp(−sigmoid · Σ leaves)): the scale makes the raw score the logit
    return {"kind": "trees", "link": "logit", "scale": sigmoid, "offset": 0.0, "trees": trees}


def explanation_dump(estimator: Any, features: Sequence[str]) -> bytes:
    """The ``explain.json`` bytes for a fitted candidate; ValidationError when unsupported."""
    k = len(features)
    builders = (_linear, _lightgbm, _extra_trees)
    reasons = []
    body: dict[str, Any] | None = None
    for build in builders:
        try:
            body = build(estimator, k)
            break
        except ValidationError as exc:
            reasons.append(exc.message)
        except ImportError as exc:  # pragma: no cover - every candidate's library is in train
            reasons.append(str(exc))
    if body is None:
        raise ValidationError(
            f"cannot explain {type(estimator).__name__}: {'; '.join(reasons)}",
            reason="explain_unsupported",
        )
    body = {"format": EXPLAIN_FORMAT, "features": list(features), **body}
    raw = (json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode()
    parse_explainer(raw, list(features), EXPLAIN_FILE)  # what serving will read must parse
    return raw


def explanation_files(estimator: Any, features: Sequence[str]) -> dict[str, bytes]:
    """``{"explain.json": dump}`` for a bundle, or nothing (logged) when the model kind has no
    exact explanation: the bundle still serves, and ``explain=true`` answers it is unavailable."""
    try:
        return {EXPLAIN_FILE: explanation_dump(estimator, features)}
    except ValidationError as exc:
        _log.warning("no explanation dump in the bundle: %s", exc.message)
        return {}
