"""The demo's monitor cycle: a deliberately bad challenger, canaried and rolled back automatically.

After the demo has served its champion, :func:`run_loop_demo` registers a challenger that
answers the same probability for every station (a model that learned nothing: what training
on shuffled labels converges to, built directly so the demo stays fast), serves both, runs the
loop's cycles over analysis windows of simulated traffic and reports how it ended — with the
reason from the alias history — plus the monitor's health, drift and live performance.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dockline.core.bundle import Bundle, Calibration, OnnxSpec, load_bundle, write_bundle
from dockline.core.time import FixedClock
from dockline.pipeline.platform import Platform

__all__ = ["BAD_PROBABILITY", "constant_bundle", "constant_onnx", "run_loop_demo", "wait_for_log"]

BAD_PROBABILITY = 0.9
"""What the bad challenger answers for every station: "it will be empty"."""
DEMO_TOKEN = "dockline-demo-admin"
WINDOW = timedelta(minutes=2)
MIN_ROUNDS = 2
"""Requests per station per analysis window, at least (kept small: the demo stays under 3
minutes); more for a small city, so each side of the canary reaches ``min_requests``."""


def wait_for_log(platform: Platform, since: datetime, served: int, timeout: float = 30.0) -> int:
    """Wait until the prediction log holds ``served`` served rows logged at or after ``since``
    (the writer flushes on its own thread and interval); the count found. A request's shadow
    row is queued with its served row, so it is on disk by then too."""
    import pyarrow.compute as pc

    from dockline.monitor import read_prediction_log

    deadline = time.monotonic() + timeout
    while True:
        table = read_prediction_log(
            platform.data.serving_predictions, start=since, columns=["served"]
        )
        found = int(pc.sum(table["served"]).as_py() or 0) if table.num_rows else 0
        if found >= served or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def constant_onnx(width: int, probability: float) -> bytes:
    """An ONNX model taking ``[n, width]`` float32 and answering ``[1 − p, p]`` for every row
    (missing values included: it never looks at them)."""
    import onnx
    from onnx import TensorProto, helper

    pair = helper.make_tensor("pair", TensorProto.FLOAT, [1, 2], [1 - probability, probability])
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["X"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
            helper.make_node("Concat", ["rows", "two"], ["target"], axis=0),
            helper.make_node("Constant", [], ["p"], value=pair),
            helper.make_node("Expand", ["p", "target"], ["probabilities"]),
        ],
        "constant",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        [
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dockline"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def constant_bundle(champion: Bundle, root: Path, probability: float) -> Bundle:
    """A bundle over the champion's features whose model answers ``probability`` for anything
    (NaN: a model whose every prediction serving must refuse)."""
    manifest = champion.manifest.model_copy(
        update={
            "candidate": "constant",
            "params": {"probability": probability},
            "onnx": OnnxSpec(input_name="X", output_name="probabilities", opset=17),
            "calibration": Calibration(method="none"),
            "metrics": {},
        }
    )
    width = len(champion.manifest.features)
    files = {"model.onnx": constant_onnx(width, probability)}
    return write_bundle(root, manifest, files, champion.drift_baseline())


def run_loop_demo(platform: Platform, model_name: str, stations: list[str]) -> dict[str, Any]:
    """Canary a constant challenger against the champion; return what the loop did and why."""
    import httpx

    from dockline.pipeline import monitor
    from dockline.pipeline.loop import HttpServingControl, run_cycle
    from dockline.pipeline.serve import BackgroundServer, create_serving_app
    from dockline.pipeline.train import open_registry

    clock = platform.clock
    assert isinstance(clock, FixedClock)
    config = platform.config
    canary = config.monitor.canary.model_copy(update={"analysis_window": WINDOW})
    config = config.model_copy(
        update={
            "serve": config.serve.model_copy(
                update={
                    "admin_token": DEMO_TOKEN,
                    "prediction_flush_interval": timedelta(milliseconds=100),
                }
            ),
            "monitor": config.monitor.model_copy(update={"canary": canary}),
        }
    )
    platform = dataclasses.replace(platform, config=config)
    registry = open_registry(platform)
    champion = registry.resolve(model_name, "champion")
    assert champion is not None
    with tempfile.TemporaryDirectory(prefix="dockline-demo-bad-") as tmp:
        bad = constant_bundle(load_bundle(Path(champion.bundle_path)), Path(tmp), BAD_PROBABILITY)
        # no gate verdict: a version without one can never be promoted, whatever the canary says
        version = registry.register(model_name, bad.path, run_id=None, gate=None).version
    registry.set_alias(
        model_name,
        "challenger",
        version,
        actor="dockline demo",
        reason=f"demo: a deliberately bad challenger (answers {BAD_PROBABILITY} for everything)",
        action="register",
    )
    canary_config = config.monitor.canary
    side = len(stations) * min(canary_config.canary_share, 1 - canary_config.canary_share)
    rounds = max(MIN_ROUNDS, math.ceil(1.5 * canary_config.min_requests / max(side, 1.0)))
    windows: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}
    began = time.perf_counter()
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        control = HttpServingControl(server.url, DEMO_TOKEN)
        run_cycle(platform, control)  # adopts the challenger: shadow
        for _ in range(4):
            began_window = clock.now()
            answered = wait_for_log(platform, began_window, 0)  # rows already there at its start
            for _ in range(rounds):
                for station in stations:
                    r = client.post("/v1/predict", json={"entity": station})
                    answered += r.status_code == 200
                clock.advance(WINDOW / rounds)
            clock.advance(timedelta(seconds=1))
            wait_for_log(platform, began_window, answered)
            report = run_cycle(platform, control)
            windows.extend(a.to_dict() for a in report.analyses)
            if report.phase == "idle":
                break
        routing = client.get(
            "/v1/admin/routing", headers={"authorization": f"Bearer {DEMO_TOKEN}"}
        ).json()
    history = registry.history(model_name)
    last = history[-1]
    outcome = {
        "version": version,
        "action": last.action,
        "alias": last.alias,
        "reason": last.reason,
        "windows": len(windows),
        "verdicts": [w["verdict"] for w in windows],
        "routing_after": routing.get("mode"),
        "champion_after": registry.peek(model_name, "champion").version,  # type: ignore[union-attr]
        "seconds": round(time.perf_counter() - began, 1),
    }
    health = monitor.health(platform)
    drift = monitor.drift_live(platform)
    perf = monitor.performance(platform, lookback=timedelta(hours=2))
    return {
        "canary": outcome,
        "analyses": windows,
        "health": [
            {"deployment": s.deployment_id, "status": s.status, "detail": s.detail}
            for s in health.states
        ],
        "drift": [
            {
                "model": r.model_name,
                "model_version": r.model_version,
                "rows": r.rows,
                "window_drift": r.result.drift,
                "drifted": sorted(n for n, f in r.result.features.items() if f.drift),
                "prediction_drift": None
                if r.result.prediction is None
                else r.result.prediction.drift,
            }
            for r in drift
        ],
        "performance": [
            {
                "model_version": w.model_version,
                "predictions": w.predictions,
                "labelled": w.labelled,
                "pr_auc": None if w.metrics.get("pr_auc") is None else w.metrics["pr_auc"].value,
                "estimated_precision": w.estimate.get("precision"),
            }
            for _, w in perf.windows
        ],
    }
