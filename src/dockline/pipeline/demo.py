"""``dockline demo``: the loop so far, on a simulated city with embedded defaults.

1. import a week of the city's history (a simulated archive, as a user would import theirs);
2. simulate the city live with feed faults switched on and serve its GBFS feed on 127.0.0.1;
3. follow the feed for a few simulated hours at high speed (progress bar);
4. land the log in the offline store (Parquet + manifests + 1-minute aggregate);
5. print the accounting: what the simulator published and injected vs what dockline accepted
   and dead-lettered, by reason — they must agree exactly;
6. materialize online features, build a point-in-time training set over the history, check
   online = offline;
7. train candidates and baselines, export the ONNX bundle, gate it and register the champion;
8. serve it over HTTP and check the served vectors against offline;
9. run a monitor cycle: a deliberately bad challenger goes through shadow and canary and is
   rolled back automatically, with the reason in the alias history; health, drift, live
   performance.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dockline.core.contracts import IngestSummary
from dockline.core.errors import ConfigError, ContractError
from dockline.core.time import FixedClock, ScaledClock
from dockline.pipeline.demo_report import accounting_report, check_accounting, print_report
from dockline.pipeline.features import (
    build_dataset,
    check_consistency,
    check_served_consistency,
    materialize,
)
from dockline.pipeline.ingest import ingest_archive, ingest_feed, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import (
    City,
    CityConfig,
    FaultConfig,
    SimServer,
    write_archive,
)

__all__ = ["accounting_report", "check_accounting", "run_demo"]

DEMO_FAULT_RATE = 0.004
DEMO_START = datetime(2024, 5, 6, 11, tzinfo=UTC)
"""Monday 06:00 in Chicago: the demo's hours cover the morning rush."""
HISTORY_DAYS = 7
"""History imported before going live: what the model trains on."""
DEMO_TRIALS = 2
"""Optuna trials per candidate in the demo (the config's default is for real runs)."""


def run_demo(
    platform: Platform,
    *,
    stations: int = 200,
    hours: float = 4.0,
    speed: float = 900.0,
    seed: int = 7,
    history_days: float = HISTORY_DAYS,
    train: bool = True,
    json_out: bool = False,
) -> dict[str, Any]:
    """Run the demo and return its report (also printed, as tables or one JSON object).

    Needs an empty data dir: the simulated city starts at the same instant every run, so a log
    from an earlier run would make the feed's documents look already ingested.
    """
    if platform.data.log.exists():
        raise ConfigError(
            "the demo needs an empty data dir, and this one already holds an event log from an"
            " earlier run (remove it, or pass another --data-dir)",
            reason="data_dir_not_empty",
            where=str(platform.data.root),
        )
    console = Console(stderr=json_out, highlight=False)
    if not platform.data.config_file.exists():
        # the data runs on the simulated clock: serving it later starts from its last instant
        # the data runs on the simulated clock (serving it later starts from its last
        # instant); the full_next_hour model is served beside empty_next_hour (P7's p_full)
        platform.data.config_file.write_text(
            "# written by dockline demo: the data is simulated\n"
            '[clock]\nkind = "data"\n[serve]\ncompanions = ["full_next_hour"]\n',
            encoding="utf-8",
        )
        platform = dataclasses.replace(platform, config=platform.data.config())
    city = City(
        CityConfig(
            stations=stations,
            seed=seed,
            start=DEMO_START,
            faults=FaultConfig.all(DEMO_FAULT_RATE),
        )
    )
    start = city.time
    end = start + timedelta(hours=hours)
    clock = ScaledClock(start, speed)
    console.print(
        f"[bold]dockline demo[/bold] — {stations} stations: {history_days:g} days of history,"
        f" then {hours:g} simulated hours live at {speed:g}× with feed faults;"
        f" data in {platform.data.root}"
    )
    history = _import_history(platform, stations, seed, history_days, console)
    with SimServer(city, speed=speed, clock=clock) as server:
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        with progress:
            total = hours * 60.0
            task = progress.add_task("following the feed", total=total, info="")

            def update(summary: IngestSummary) -> None:
                done = (clock.now() - start).total_seconds() / 60.0
                progress.update(
                    task,
                    completed=min(done, total),
                    info=f"{summary.accepted:,} accepted · {summary.rejected:,} dead letters",
                )

            summary = ingest_feed(
                platform,
                f"{server.url}/gbfs.json",
                stop=lambda: clock.now() >= end,
                clock_source="feed",
                on_progress=update,
            )
            progress.update(task, completed=total)
        stats = server.stats()
    reports = sink_offline(platform)
    report = accounting_report(platform, summary, stats, {t: r.records for t, r in reports.items()})
    check_accounting(report)
    report["history"] = history
    console.print("materializing features, building a training set, checking consistency …")
    history_start = start - timedelta(days=history_days)
    report["features"] = _features(platform, history_start, start)
    report["model"] = None
    report["serving"] = None
    if train and report["features"]["dataset"]:
        console.print("training candidates and baselines, exporting, gating, registering …")
        report["model"] = _train(platform, Path(report["features"]["dataset"]))
        if report["features"].get("full_dataset"):
            # one candidate for the second model keeps the demo under three minutes
            # (`dockline train` on the same dataset tries all of them)
            one = platform.config.train.model_copy(update={"candidates": ("lightgbm",)})
            full = dataclasses.replace(
                platform, config=platform.config.model_copy(update={"train": one})
            )
            report["model_full"] = _train(full, Path(report["features"]["full_dataset"]))
        if report["model"]["alias"] == "champion":
            console.print("serving the champion and sending a burst of requests …")
            # requests at simulated times after the feed stopped: every station is quiet, its
            # windows slide and its age grows; the served vectors are checked against offline
            serving = dataclasses.replace(platform, clock=FixedClock(end + timedelta(seconds=30)))
            report["serving"] = _serve(serving, list(city.station_ids), city)
            served = check_served_consistency(platform)
            report["serving"]["consistency"] = {
                "compared": served.compared,
                "mismatches": served.mismatches,
            }
            if served.mismatches:
                raise ContractError(
                    f"served vectors differ from offline at {served.mismatches} of"
                    f" {served.compared} request points",
                    reason="consistency",
                )
            # P6: a monitor cycle canaries a deliberately bad challenger; the loop rolls it back
            console.print("monitor cycle: canarying a deliberately bad challenger …")
            from dockline.pipeline.demo_loop import run_loop_demo

            report["monitor"] = run_loop_demo(
                serving, report["model"]["model_name"], list(city.station_ids)
            )
    if json_out:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_SORT_KEYS).decode() + "\n")
    else:
        print_report(console, report)
    return report


def _import_history(
    platform: Platform, stations: int, seed: int, days: float, console: Console
) -> dict[str, Any]:
    """Write ``days`` of the city's past as an archive and import it (no faults: a clean export)."""
    if days <= 0:
        return {"rows": 0}
    # the live city's config, earlier: same layout and station ids
    config = CityConfig(
        stations=stations,
        seed=seed,
        start=DEMO_START - timedelta(days=days),
        faults=FaultConfig.all(DEMO_FAULT_RATE),
    )
    with tempfile.TemporaryDirectory(prefix="dockline-demo-history-") as tmp:
        archive = write_archive(config, days, tmp)
        console.print(
            f"importing {archive.rows:,} station-minutes of history"
            f" ({archive.first_ts:%Y-%m-%d} … {archive.last_ts:%Y-%m-%d})"
        )
        summary = ingest_archive(platform, tmp, source="archive:demo-history")
    summary.check_accounting()
    return {"rows": archive.rows, "accepted": summary.accepted, "days": days}


DEMO_REQUESTS = 300


def _serve(platform: Platform, stations: list[str], city: City) -> dict[str, Any]:
    """P5: serve the champion over real HTTP and send it single, batch and bad requests; then
    P7: a few decision cycles against the city over HTTP, and a simulated day scored."""
    import httpx

    from dockline.pipeline.serve import BackgroundServer, create_serving_app

    statuses: dict[str, int] = {}
    latencies: list[float] = []
    examples: list[dict[str, Any]] = []
    clock = platform.clock
    assert isinstance(clock, FixedClock)
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        # decision cycles first, while the features are seconds old (the burst then ages them)
        decisions = _decide_live(platform, city, server.url)
        for i in range(DEMO_REQUESTS):
            if i and i % 20 == 0:
                clock.advance(timedelta(seconds=61))  # 15 simulated minutes over the burst
            began = time.perf_counter()
            response = client.post("/v1/predict", json={"entity": stations[i % len(stations)]})
            latencies.append((time.perf_counter() - began) * 1000)
            key = str(response.status_code)
            statuses[key] = statuses.get(key, 0) + 1
            if len(examples) < 3 and response.status_code == 200:
                body = response.json()
                examples.append(
                    {k: body[k] for k in ("entity", "probability", "label", "status", "age_s")}
                    | {"model": f"{body['model']['name']} v{body['model']['version']}"}
                )
        batch = client.post("/v1/predict/batch", json={"entities": stations[:50]})
        unknown = client.post("/v1/predict", json={"entity": "no-such-station"})
        malformed = client.post("/v1/predict", json={"entity": 42})
    latencies.sort()
    return {
        "url": server.url,
        "requests": DEMO_REQUESTS,
        "statuses": statuses,
        "client_p50_ms": round(latencies[len(latencies) // 2], 2),
        "examples": examples,
        "batch_status": batch.status_code,
        "batch_items": len(batch.json().get("predictions", [])) if batch.is_success else 0,
        "unknown_entity": [unknown.status_code, unknown.json().get("reason")],
        "malformed": [malformed.status_code, malformed.json().get("reason")],
        "decisions": decisions,
        **_evaluate_day(platform, len(stations)),
    }


DEMO_DECISION_CYCLES = 3


def _decide_live(platform: Platform, city: City, serve_url: str) -> list[dict[str, Any]]:
    """P7 over HTTP: the city (its GBFS feed and truck API) and serving, as `decide run` would."""
    from dockline.pipeline.decide_run import run_once
    from dockline.sim.fleet import Fleet

    clock = FixedClock(city.time)
    cycles: list[dict[str, Any]] = []
    with SimServer(city, speed=1.0, clock=clock, fleet=Fleet(city, trucks=4)) as sim:
        for _ in range(DEMO_DECISION_CYCLES):
            result = run_once(
                platform.data.root, platform.config.decide, serve_url=serve_url, sim_url=sim.url
            )
            decision = result.decision
            applied = result.applied or {}
            cycles.append(
                {
                    "decision_id": decision.decision_id,
                    "policy": decision.policy,
                    "actions": len(decision.actions),
                    "bikes": sum(a.bikes for a in decision.actions),
                    "gate": str(decision.health_gate),
                    "models": list(decision.model_versions),
                    "reasons": list(decision.reasons)[:3],
                    "accepted": int(applied.get("accepted", 0)),
                    "refused": int(applied.get("refused", 0)),
                }
            )
            clock.advance(timedelta(minutes=15))
    return cycles


def _evaluate_day(platform: Platform, stations: int) -> dict[str, Any]:
    """The four policies on one held-out simulated day at the same budget (common random
    numbers), the predictive one acting on the champions just trained; `dockline decide
    evaluate` does this over weeks and seeds."""
    from dockline.pipeline.decide import EvalConfig, evaluate
    from dockline.pipeline.decide_model import ModelSource

    try:
        config = EvalConfig(
            stations=stations,
            days=1.0,
            seeds=1,
            seed=100,
            forecaster="model",
            models=ModelSource.from_platform(platform),
        )
    except ConfigError:  # no champion (the demo without training): the simulator's rates
        config = EvalConfig(stations=stations, days=1.0, seeds=1, seed=100)
    result = evaluate(config)
    keep = ("empty_full_minutes", "outage_cost_usd", "failed_rentals", "truck_km", "moves")
    return {
        "evaluation": {
            policy: {k: round(v[k], 1) for k in keep if k in v}
            for policy, v in result.summary().items()
        },
        "evaluation_forecaster": result.forecaster_label,
    }


def _train(platform: Platform, dataset: Path) -> dict[str, Any]:
    """P4: train on the history's training set and register a champion."""
    from dockline.pipeline.train import train_model  # heavy (scikit-learn, LightGBM, MLflow)

    summary = train_model(platform, dataset=dataset, n_trials=DEMO_TRIALS, actor="dockline demo")
    return {
        "model_name": summary.model_name,
        "version": summary.version,
        "alias": summary.alias,
        "bundle_id": summary.bundle_id,
        "selected": summary.selected,
        "primary_metric": summary.primary_metric,
        "test_metrics": {k: round(v, 4) for k, v in summary.test_metrics.items()},
        "baselines": {
            name: round(values[summary.primary_metric], 4)
            for name, values in summary.baselines.items()
        },
        "gate_passed": summary.gate.passed,
        "gate_reasons": summary.gate.reasons,
        "report": summary.report,
        "seconds": summary.seconds,
    }


def _features(platform: Platform, start: datetime, end: datetime) -> dict[str, Any]:
    """P2/P3 on the ingested city: online vectors, a PIT training set, consistency."""
    materialized = materialize(platform)
    out = platform.data.datasets / "demo-empty_next_hour"
    # the last hour's labels are not known yet: its spine would look one hour past the data;
    # the first day gives windows and profiles some history
    spine_start, spine_end = start + timedelta(days=1), end - timedelta(hours=1)
    dataset: dict[str, Any] = {"dataset": None, "dataset_rows": 0, "dataset_features": 0}
    if spine_end > spine_start:
        meta = build_dataset(
            platform,
            label="empty_next_hour",
            start=spine_start,
            end=spine_end,
            every=timedelta(minutes=10),
            out=out,
        )
        full = platform.data.datasets / "demo-full_next_hour"
        full_meta = build_dataset(
            platform,
            label="full_next_hour",
            start=spine_start,
            end=spine_end,
            every=timedelta(minutes=10),
            out=full,
        )
        dataset = {
            "dataset": str(out),
            "dataset_rows": meta.row_count,
            "dataset_features": meta.feature_count,
            "label_rate": round(float(meta.extra.get("label_rate") or 0.0), 4),
            "plan_hash": meta.extra.get("plan_hash"),
            "full_dataset": str(full),
            "full_label_rate": round(float(full_meta.extra.get("label_rate") or 0.0), 4),
        }
    consistency = check_consistency(platform, sample=300, seed=0)
    if consistency.overall_match_rate < 1.0:
        raise ContractError(
            f"online and offline features disagree: match rate {consistency.overall_match_rate}",
            reason="consistency",
        )
    return {
        "online_vectors": materialized.vectors,
        "online_entities": materialized.entities,
        **dataset,
        "consistency_points": consistency.points,
        "consistency_match_rate": consistency.overall_match_rate,
    }
