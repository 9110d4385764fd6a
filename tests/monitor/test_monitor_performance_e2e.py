"""``dockline monitor performance`` end to end: a simulated city's offline store gives the labels
of logged predictions once their horizon has passed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from monitor_helpers import make_bundle, root, runner

from dockline.core.time import to_micros
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.serve._predlog import PredictionLog
from dockline.sim import CityConfig, write_archive

START = datetime(2024, 5, 6, 5, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_live_performance_from_the_offline_store(tmp_path: Path) -> None:
    write_archive(CityConfig(stations=8, seed=3, start=START), 2.0, tmp_path / "archive")
    data = tmp_path / "data"
    platform = Platform.open(data)
    (data / "dockline.toml").write_text(
        f'[features]\nproject = "{REPO / "examples" / "bikeshare"}"\n'
    )
    platform = Platform.open(data)
    ingest_archive(platform, tmp_path / "archive")
    sink_offline(platform)
    rng = np.random.default_rng(0)
    bundle_id = make_bundle(data / "bundles", ["a"], rng.normal(0, 1, (1000, 1)), rng.random(1000))
    log = PredictionLog(
        data / "serving" / "predictions", flush_rows=10**6, flush_interval_s=60, max_queue=10**6
    )
    first = START + timedelta(days=1)
    stations = [f"{i}" for i in range(8)]
    n = 0
    for minute in range(0, 180, 5):  # three hours of predictions, every 5 min per station
        for s in stations:
            t = first + timedelta(minutes=minute)
            log.append(
                (
                    f"r{n}",
                    to_micros(t),
                    "/v1/predict",
                    s,
                    "champion",
                    True,
                    "m",
                    2,
                    bundle_id,
                    float(rng.random()),
                    False,
                    "ok",
                    None,
                    "model",
                    None,
                    10.0,
                    1.0,
                    [0.0],
                    None,
                    None,
                )
            )
            n += 1
    log.flush()
    # Labels need an hour after each prediction: at first + 2h, only the first hour is known.
    at = (first + timedelta(hours=2)).isoformat()
    out = runner.invoke(
        root,
        ["--data-dir", str(data), "monitor", "performance", "--window", "1h", "--at", at, "--json"],
    )
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert payload["rows"] == 8 * 24  # the two hours before --at
    windows = payload["windows"]
    assert [w["model_version"] for w in windows] == [2, 2]
    assert windows[0]["labelled"] == windows[0]["predictions"] == 96
    assert set(windows[0]["metrics"]) == {"pr_auc", "brier", "ece", "precision", "recall"}
    # In the second hour only the predictions made exactly at its start (label available at
    # --at exactly) are labelled; the rest have the label-free estimate only.
    assert (windows[1]["predictions"], windows[1]["labelled"]) == (96, 8)
    assert windows[1]["estimate"]["precision"] is not None
    assert payload["reference"] == {bundle_id: {}}
