"""Test data for the serving tests: feature vectors, real bundles, the product's server thread."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI

from dockline.core.bundle import Bundle
from dockline.core.config import DataDir
from dockline.core.contracts import GateVerdict
from dockline.pipeline.serve import BackgroundServer
from dockline.store import SqliteOnlineStore
from dockline.train.registry import MlflowRegistry

# tests/ holds the shared bundle builder; serve_child.py runs this module outside pytest
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bundles import gate_verdict, logistic_bundle

GROUP = "features"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a Wednesday
MODEL_FEATURES = ["f0", "f1", "f2", "hour_of_day", "day_of_week"]
# The store holds more columns than the model uses, in another order.
STORE_COLUMNS = ["station_extra", "f2", "day_of_week", "f0", "hour_of_day", "f1", "features__as_of"]
FRESH = [f"s{i:03d}" for i in range(60)]
STALE = [f"old{i}" for i in range(5)]
FRESH_AGE = timedelta(seconds=30)
STALE_AGE = timedelta(hours=2)
HOUR_OF_WEEK = [round(0.1 + 0.8 * h / 167, 6) for h in range(168)]


def _verdict() -> GateVerdict:
    return gate_verdict()


def make_bundle(
    root: Path,
    seed: int,
    *,
    baseline: bool,
    features: list[str] | None = None,
    plan_hash: str = "1" * 64,
) -> Bundle:
    """A logistic regression on synthetic data as a real bundle (ONNX, zipmap off), trained
    (says its lineage) on the feature plan ``plan_hash``."""
    extra = {"baseline.json": orjson.dumps({"global_rate": 0.25, "hour_of_week": HOUR_OF_WEEK})}
    return logistic_bundle(
        root,
        features or MODEL_FEATURES,
        seed=seed,
        rows=500,
        plan_hash=plan_hash,
        project="serve-tests",
        dataset_name="serve-test-set",
        dataset_hash=f"{seed:064d}",
        train_start=T0 - timedelta(days=30),
        test_end=T0 - timedelta(days=1),
        extra_files=extra if baseline else None,
    )


def vector(entity: str) -> dict[str, Any]:
    """The deterministic feature values stored for ``entity``."""
    rng = np.random.default_rng(sum(entity.encode()) * 7919 + len(entity))
    f = rng.normal(size=3)
    return {
        "station_extra": "x",
        "f0": float(f[0]),
        "f1": None if entity.endswith("7") else float(f[1]),  # some nulls: served as NaN
        "f2": float(f[2]),
        "hour_of_day": 9,
        "day_of_week": 2,
        "features__as_of": T0,
    }


@dataclass
class World:
    """The shared state: data directory, online store, registry, bundles."""

    data: DataDir
    store: SqliteOnlineStore
    registry: MlflowRegistry
    bundles: list[Bundle]
    staging: Path

    def register(self, name: str, bundle: Bundle) -> int:
        """Register ``bundle`` under ``name``; returns the version number."""
        return self.registry.register(name, bundle.path, run_id=None, gate=_verdict()).version

    def promote(self, name: str, version: int, alias: str = "champion") -> None:
        """Point ``alias`` at ``version``."""
        self.registry.set_alias(name, alias, version, actor="test", reason="test", action="promote")


Server = BackgroundServer


ServeFactory = Callable[..., tuple[Server, FastAPI]]
