"""MLflow's registry and Optuna's studies on a PostgreSQL backend (the session's private cluster).

``[registry] tracking_uri`` puts runs and model versions in PostgreSQL, where another machine's
registry sees them; ``[train] tuning_storage`` puts studies there, where two tuning workers share
one study and stop together at its trial budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_train_registry import T0, _bundle, _verdict

from dockline.core.config import DataDir
from dockline.core.time import FixedClock
from dockline.pipeline.platform import Platform
from dockline.pipeline.train import open_registry
from dockline.train._db import sqlalchemy_url

psycopg2 = pytest.importorskip("psycopg2")


def _database(server: Any, name: str) -> str:
    conn = psycopg2.connect(server.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return str(server.url(name))


@pytest.fixture(scope="module")
def mlflow_url(postgres: Any) -> str:
    return _database(postgres, "mlflow_registry")


@pytest.fixture(scope="module")
def optuna_url(postgres: Any) -> str:
    return _database(postgres, "optuna_studies")


@pytest.mark.slow
def test_registry_on_postgres_is_shared_by_two_data_dirs(mlflow_url: str, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        (root / "dockline.toml").write_text(
            f'[registry]\ntracking_uri = "{mlflow_url}"\n', encoding="utf-8"
        )
    clock = FixedClock(T0)
    registry = open_registry(Platform.open(a, clock=clock))
    assert registry.tracking_uri == mlflow_url
    bundle = _bundle(tmp_path / "staging", 0)
    version = registry.register("pg-model", bundle.path, run_id=None, gate=_verdict(True))
    registry.set_alias(
        "pg-model", "champion", version.version, actor="t", reason="first", action="promote"
    )
    assert not DataDir(a).mlflow_db.exists()  # nothing went to the SQLite default

    other = open_registry(Platform.open(b, clock=clock))  # another machine, same database
    resolved = other.resolve("pg-model", "champion")
    assert resolved is not None and resolved.bundle_id == bundle.bundle_id
    assert [v.version for v in other.versions("pg-model")] == [1]


WORKER = """
import sys, orjson
from pathlib import Path
from dockline.core.config import TrainConfig
from dockline.train.data import load_training_set
from dockline.train.trainer import train_candidates

data = load_training_set(Path(sys.argv[1]), None)
config = TrainConfig(n_trials=int(sys.argv[3]), cv_folds=2, seed=5, candidates=("logistic",))
out = train_candidates(data, config, storage=sys.argv[2], out_dir=Path(sys.argv[4]))
tuning = out.best.tuning
print(orjson.dumps({"study": tuning.study_name, "n_trials": tuning.n_trials}).decode())
"""


@pytest.mark.slow
def test_two_tuning_workers_share_one_study_and_its_budget(optuna_url: str, tmp_path: Path) -> None:
    import optuna
    from train_synth import write_synthetic

    data = write_synthetic(tmp_path / "synth", stations=6, days=3)
    budget = 8
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(data), optuna_url, str(budget), str(tmp_path / w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in ("w1", "w2")
    ]
    results = []
    try:
        for proc in workers:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            results.append(orjson.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in workers:
            proc.kill()
            proc.communicate()
    assert results[0]["study"] == results[1]["study"]  # one study, found by name
    study = optuna.load_study(study_name=results[0]["study"], storage=sqlalchemy_url(optuna_url))
    finished = [
        t
        for t in study.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    # the study stops at its budget, plus at most the other worker's trial in flight — not
    # each worker's own budget (2 × 8)
    assert budget <= len(finished) <= budget + 1


@pytest.mark.slow
def test_dockline_train_uses_the_configured_postgres_registry_and_study(
    mlflow_url: str, optuna_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dockline train`` with both settings writes nothing to the data dir's SQLite files."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    import optuna
    from train_synth import write_synthetic

    from dockline.pipeline.monitor import _champion_training_data
    from dockline.pipeline.train import has_registry, train_model

    root = tmp_path / "data"
    root.mkdir()
    (root / "dockline.toml").write_text(
        f'[registry]\ntracking_uri = "{mlflow_url}"\n\n'
        f'[train]\ncandidates = ["logistic"]\nn_trials = 2\ncv_folds = 2\n'
        f'tuning_storage = "{optuna_url}"\n',
        encoding="utf-8",
    )
    platform = Platform.open(root)
    dataset = write_synthetic(tmp_path / "ds", stations=6, days=3, project="pgcity")
    summary = train_model(platform, dataset=dataset, actor="test")
    data = DataDir(root)
    assert not data.tuning_db.exists() and not data.mlflow_db.exists()
    studies = optuna.get_all_study_names(storage=sqlalchemy_url(optuna_url))
    assert studies  # the study is in PostgreSQL
    versions = open_registry(platform).versions(summary.model_name)
    assert [v.version for v in versions] == [summary.version]
    # run artifacts stay in the data dir, never in the working directory
    assert list((data.mlruns / "artifacts").rglob("report*"))
    assert list(cwd.iterdir()) == []
    assert has_registry(platform)
    # the monitor looks in the configured registry, not for the absent SQLite file
    assert "no model registry" not in str(_champion_training_data(platform, datetime.now(UTC)))


def test_a_bare_postgresql_url_names_an_installed_driver() -> None:
    import importlib.util

    url = sqlalchemy_url("postgresql://u@h:5/db")
    if importlib.util.find_spec("psycopg") is None:
        assert url == "postgresql+psycopg2://u@h:5/db"
    else:
        assert url == "postgresql://u@h:5/db"
    assert sqlalchemy_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert sqlalchemy_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
