"""Explanation dumps: exact per candidate kind, consistent with the served ONNX, hashed, safe.

Every trained candidate (logistic, lightgbm, extra_trees) is fitted on small data with nulls,
exported as a real bundle, and explained from the bundle's ``explain.json`` alone. The test
process holds the fitted estimator, so it checks the explanations against the model's own raw
output, LightGBM's own TreeSHAP, and a brute-force Shapley computation over scikit-learn's trees.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dockline.core.bundle import (
    Bundle,
    BundleScorer,
    Calibration,
    Lineage,
    ThresholdChoice,
    apply_calibration,
    load_bundle,
)
from dockline.core.config import TrainConfig
from dockline.core.errors import ContractError
from dockline.core.explain import EXPLAIN_FILE, load_explainer, parse_explainer
from dockline.train.candidates import TRAINED
from dockline.train.explain_dump import explanation_dump, explanation_files
from dockline.train.export import build_bundle

KINDS = ["logistic", "lightgbm", "extra_trees"]
NAMES = [f"f{i}" for i in range(6)]
T0 = datetime(2025, 3, 1, tzinfo=UTC)
SMALL: dict[str, dict[str, Any]] = {
    "logistic": {},
    "lightgbm": {"n_estimators": 40, "num_leaves": 15, "min_child_samples": 10},
    "extra_trees": {"n_estimators": 15, "max_depth": 7, "min_samples_leaf": 5},
}
# Platt for the logit-scored kinds, isotonic for the forest's probability: both as serving
# applies them.
CALIBRATION = {
    "logistic": Calibration(method="platt", a=1.3, b=-0.2),
    "lightgbm": Calibration(method="platt", a=0.8, b=0.1),
    "extra_trees": Calibration(method="isotonic", x=[0.0, 0.3, 0.6, 1.0], y=[0.0, 0.2, 0.7, 1.0]),
}


def _data(seed: int = 0, n: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    x[:, 3] = np.round(x[:, 3] * 3)  # discrete: ties at tree thresholds
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.4 * x[:, 3] + rng.normal(size=n) > 0.5).astype(np.int64)
    x[:, :3][rng.random((n, 3)) < 0.1] = np.nan
    x[:, 5] = np.where(rng.random(n) < 0.9, np.nan, x[:, 5])  # mostly null
    return x, y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = _data()
    x_test = x[800:].copy()
    # f4 never misses in training: LightGBM's "None" missing type (NaN compared as 0) and the
    # imputers' fill meet a null they never saw.
    x_test[::7, 4] = np.nan
    x_test[::5, 3] = 0.0
    x_test[1::11, 3] = np.nan
    return x[:800], y[:800], x_test


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, ...]) -> dict[str, Any]:
    x_train, y_train, _ = data
    return {kind: TRAINED[kind].make(SMALL[kind], seed=0).fit(x_train, y_train) for kind in KINDS}


def _build(root: Path, kind: str, estimator: Any, data: tuple[np.ndarray, ...]) -> Bundle:
    x_train, _, x_test = data
    return build_bundle(
        root,
        estimator=estimator,
        features=NAMES,
        x_test=x_test,
        x_train=x_train,
        train_scores=None,
        project="test",
        model_name="m",
        label="y",
        candidate=kind,
        params=SMALL[kind],
        calibration=CALIBRATION[kind],
        threshold=ThresholdChoice(
            policy="target_precision", threshold=0.5, precision=0.6, recall=0.5
        ),
        lineage=Lineage(
            dataset_name="d",
            dataset_hash="a" * 64,
            plan_hash="b" * 64,
            config_hash="c" * 64,
            code_version="0.1.0",
            seed=0,
        ),
        metrics={},
        train_start=T0,
        test_end=T0 + timedelta(days=7),
        tolerance=TrainConfig().parity_tolerance,
    )


@pytest.fixture(scope="module")
def bundles(
    fitted: dict[str, Any], data: tuple[np.ndarray, ...], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Bundle]:
    root = tmp_path_factory.mktemp("bundles")
    return {kind: _build(root, kind, fitted[kind], data) for kind in KINDS}


def _native_raw(kind: str, estimator: Any, x: np.ndarray) -> np.ndarray:
    """The fitted model's own score before calibration: logit, margin, or forest probability."""
    if kind == "logistic":  # float64 input: the reference is not rounded to float32 midway
        return np.asarray(estimator.decision_function(x.astype(np.float64)))
    if kind == "lightgbm":
        return np.asarray(estimator.booster_.predict(x, raw_score=True))
    return np.asarray(estimator.predict_proba(x)[:, 1])


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-v)))


@pytest.mark.parametrize("kind", KINDS)
def test_contributions_reproduce_the_models_raw_score(
    kind: str, fitted: dict[str, Any], bundles: dict[str, Bundle], data: tuple[np.ndarray, ...]
) -> None:
    _, _, x_test = data
    bundle = bundles[kind]
    assert EXPLAIN_FILE in bundle.manifest.lineage.files  # hashed like every bundle file
    explainer = load_explainer(bundle)
    assert explainer is not None
    explained = explainer.explain(x_test)
    native = _native_raw(kind, fitted[kind], x_test)
    assert explained.contributions.shape == (len(x_test), len(NAMES))
    np.testing.assert_allclose(
        explained.base_value + explained.contributions.sum(axis=1), native, atol=1e-6, rtol=0
    )
    np.testing.assert_allclose(explained.raw, native, atol=1e-6, rtol=0)
    assert np.isnan(x_test).any(axis=0).all()  # every column's null handling was exercised
    # Not a constant split of the score: the features the label depends on matter.
    spread = np.abs(explained.contributions).mean(axis=0)
    assert spread[0] > spread[2] and spread[1] > spread[2]
    # The raw score is the served probability's: the bundle's link and calibration on it give
    # what the ONNX model serves (float32 inside ONNX).
    uncalibrated = explained.raw if explainer.link == "identity" else _sigmoid(explained.raw)
    expected = apply_calibration(bundle.manifest.calibration, uncalibrated)
    np.testing.assert_allclose(BundleScorer(bundle).score(x_test), expected, atol=2e-5, rtol=0)
    assert explainer.link == ("identity" if kind == "extra_trees" else "logit")


def test_lightgbm_contributions_equal_lightgbms_own_treeshap(
    fitted: dict[str, Any],
    bundles: dict[str, Bundle],
    data: tuple[np.ndarray, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, x_test = data
    explainer = load_explainer(bundles["lightgbm"])
    assert explainer is not None
    explained = explainer.explain(x_test)
    reference = fitted["lightgbm"].booster_.predict(x_test, pred_contrib=True)
    np.testing.assert_allclose(explained.contributions, reference[:, :-1], atol=1e-9, rtol=0)
    np.testing.assert_allclose(explained.base_value, reference[0, -1], atol=1e-9, rtol=0)
    # A batch computed a row at a time (as large batches are) gives the same values (to the
    # last bits: BLAS sums in another order).
    monkeypatch.setattr("dockline.core.explain._CHUNK", 1)
    chunked = explainer.explain(x_test[:20])
    np.testing.assert_allclose(chunked.contributions, explained.contributions[:20], atol=1e-12)
    np.testing.assert_allclose(chunked.raw, explained.raw[:20], atol=1e-12)
    # ...and so does a forest too large for one pass, explained in groups of a few leaves.
    monkeypatch.setattr("dockline.core.explain._CHUNK", 60)
    bundle = bundles["lightgbm"]
    small = parse_explainer((bundle.path / EXPLAIN_FILE).read_bytes(), NAMES, "test")
    assert len(small._groups) > len(explainer._groups)  # type: ignore[attr-defined]
    grouped = small.explain(x_test[:20])
    np.testing.assert_allclose(grouped.contributions, explained.contributions[:20], atol=1e-12)
    np.testing.assert_allclose(grouped.raw, explained.raw[:20], atol=1e-12)
    assert grouped.base_value == pytest.approx(explained.base_value, abs=1e-12)


def test_lightgbm_zero_as_missing_is_explained_as_lightgbm_scores_it(
    data: tuple[np.ndarray, ...],
) -> None:
    x_train, y_train, x_test = data
    model = TRAINED["lightgbm"].make(SMALL["lightgbm"], seed=0)
    model.set_params(zero_as_missing=True)
    model.fit(x_train, y_train)
    explainer = parse_explainer(explanation_dump(model, NAMES), NAMES, "test")
    assert '"zero_missing":[' in explanation_dump(model, NAMES).decode()
    explained = explainer.explain(x_test)
    reference = model.booster_.predict(x_test, pred_contrib=True)
    np.testing.assert_allclose(explained.contributions, reference[:, :-1], atol=1e-9, rtol=0)
    raw = model.booster_.predict(x_test, raw_score=True)
    np.testing.assert_allclose(explained.raw, raw, atol=1e-9, rtol=0)


def _expected_value(
    tree: Any, layout: list[tuple[int, bool]], z: np.ndarray, known: set[int]
) -> float:
    """Path-dependent E[tree(x) | x_known] straight from scikit-learn's arrays (Lundberg's
    Algorithm 1): a split on a known feature follows ``z`` (the imputer's output), any other
    split averages its children by training cover."""
    t = tree.tree_

    def visit(node: int) -> float:
        if t.children_left[node] < 0:
            value = t.value[node, 0]
            return float(value[1] / value.sum())
        left, right = t.children_left[node], t.children_right[node]
        column = t.feature[node]
        if layout[column][0] in known:
            return visit(left if z[column] <= t.threshold[node] else right)
        cover = t.weighted_n_node_samples
        return (cover[left] * visit(left) + cover[right] * visit(right)) / cover[node]

    return visit(0)


def test_extra_trees_contributions_are_the_exact_shapley_values(
    data: tuple[np.ndarray, ...],
) -> None:
    """Brute force over all 2^6 coalitions of served features, for a small forest whose imputer
    adds missing indicators: the indicator and the imputed value are one served feature."""
    x_train, y_train, x_test = data
    forest = TRAINED["extra_trees"].make(
        {"n_estimators": 3, "max_depth": 4, "min_samples_leaf": 5, "max_features": 1.0}, seed=1
    )
    forest.fit(x_train, y_train)
    imputer, model = forest.steps[0][1], forest.steps[-1][1]
    k = len(NAMES)
    layout = [(j, False) for j in range(k)] + [(int(j), True) for j in imputer.indicator_.features_]
    explainer = parse_explainer(explanation_dump(forest, NAMES), NAMES, "test")
    rows = x_test[:6]
    explained = explainer.explain(rows)
    for r, x in enumerate(rows):
        z = imputer.transform(x[None, :])[0].astype(np.float64)

        def v(known: set[int], z: np.ndarray = z) -> float:
            trees = model.estimators_
            return sum(_expected_value(t, layout, z, known) for t in trees) / len(trees)

        values = {
            s: v(set(s)) for size in range(k + 1) for s in itertools.combinations(range(k), size)
        }
        for i in range(k):
            phi = 0.0
            for s, value in values.items():
                if i in s:
                    continue
                weight = math.factorial(len(s)) * math.factorial(k - len(s) - 1) / math.factorial(k)
                with_i = tuple(sorted((*s, i)))
                phi += weight * (values[with_i] - value)
            assert explained.contributions[r, i] == pytest.approx(phi, abs=1e-12)
        assert explained.base_value == pytest.approx(values[()], abs=1e-12)
    assert np.isnan(rows).any()


@pytest.mark.parametrize("kind", KINDS)
def test_the_dump_is_deterministic_json(kind: str, data: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, _ = data
    first = explanation_dump(TRAINED[kind].make(SMALL[kind], 0).fit(x_train, y_train), NAMES)
    again = explanation_dump(TRAINED[kind].make(SMALL[kind], 0).fit(x_train, y_train), NAMES)
    assert first == again
    assert json.loads(first)["format"] == "dockline-explain/1"  # plain JSON: nothing to unpickle


def test_a_tampered_dump_fails_the_bundle_load(bundles: dict[str, Bundle], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / bundles["extra_trees"].path.name
    shutil.copytree(bundles["extra_trees"].path, copy)
    dump = copy / EXPLAIN_FILE
    # The raw score shifted: still a valid dump, a different explanation.
    text = dump.read_text()
    assert '"offset":0.0,' in text
    dump.write_text(text.replace('"offset":0.0,', '"offset":0.5,', 1))
    parse_explainer(dump.read_bytes(), NAMES, "test")  # would parse: only the digest tells
    with pytest.raises(ContractError, match=f"{EXPLAIN_FILE}: SHA-256") as err:
        load_bundle(copy)
    assert err.value.reason == "bundle_tampered"
    dump.unlink()  # removing it is no way around the manifest either
    with pytest.raises(ContractError, match=f"{EXPLAIN_FILE} is missing"):
        load_bundle(copy)


def test_malformed_dumps_are_refused_with_a_reason() -> None:
    good = b'{"format":"dockline-explain/1","features":["a"],"kind":"linear","link":"logit"'
    cases = {
        b"not json": "not JSON",
        b'{"format":"other"}': "format must be",
        good.replace(b'["a"]', b'["b"]') + b"}": "features must be the manifest",
        good + b"}": "malformed",
        good + b',"intercept":0,"coef":[1,2],"mean":[0],"fill":[null],'
        b'"indicator_coef":[0],"indicator_mean":[0]}': "coef must be a list of 1",
    }
    for raw, message in cases.items():
        with pytest.raises(ContractError, match=message) as err:
            parse_explainer(raw, ["a"], "test")
        assert err.value.reason == "bundle_invalid"


def test_a_model_kind_without_an_exact_explanation_gets_no_dump(
    data: tuple[np.ndarray, ...],
) -> None:
    from sklearn.naive_bayes import GaussianNB

    x_train, y_train, _ = data
    model = GaussianNB().fit(np.nan_to_num(x_train), y_train)
    assert explanation_files(model, NAMES) == {}
