"""What ``dockline demo`` prints and promises: the ingest accounting (simulator vs dockline, by
reason) and the report's tables."""

from __future__ import annotations

from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from dockline.core.contracts import TOPIC_STATION_STATUS, IngestSummary
from dockline.core.errors import ContractError
from dockline.pipeline.platform import Platform
from dockline.sim import REASON_BY_FAULT

__all__ = ["accounting_report", "check_accounting", "print_report"]


def accounting_report(
    platform: Platform, summary: IngestSummary, stats: dict[str, Any], sunk: dict[str, int]
) -> dict[str, Any]:
    """The demo's report of a followed feed: what the simulator served (``stats``, as
    ``/_sim/stats`` serves it) next to what dockline received, accepted and dead-lettered.

    Counts by reason list only reasons that occurred, on both sides: the simulator lists every
    rejecting reason (zeros included) and an ingest summary only those it met, so a reason that
    happened not to be injected in a short run must not read as a disagreement.
    """
    offline = platform.data.offline(TOPIC_STATION_STATUS)
    with duckdb.connect() as con:
        row = con.execute(
            "select count(*), count(distinct (station_id, event_ts))"
            " from read_parquet(?, hive_partitioning = true)",
            [f"{offline}/**/*.parquet"],
        ).fetchone()
    rows, distinct = row if row is not None else (0, 0)
    return {
        "data_dir": str(platform.data.root),
        "published_records": stats["published_records"],
        "held_records": stats["held_records"],
        "publications": stats["publications"],
        "injected": {k: v for k, v in stats["faults"].items() if v},
        "expected_dead_letters": _nonzero(stats["expected_rejections"]),
        "received": summary.received,
        "accepted": summary.accepted,
        "unchanged": summary.unchanged,
        "dead_letters": _nonzero(summary.dead_letters),
        "stations": summary.stations,
        "documents": summary.documents,
        "offline_rows": rows,
        "offline_distinct_rows": distinct,
        "offline_written_this_run": sunk,
        "sim_metrics": stats["metrics"],
    }


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {reason: n for reason, n in sorted(counts.items()) if n}


def check_accounting(report: dict[str, Any]) -> None:
    """The demo's promise: every published record is accounted for, exactly (raises
    :class:`ContractError` ``accounting`` otherwise)."""
    if report["received"] != report["published_records"]:
        raise ContractError(
            f"received {report['received']} records but the simulator published"
            f" {report['published_records']}",
            reason="accounting",
        )
    if report["dead_letters"] != report["expected_dead_letters"]:
        raise ContractError(
            f"dead letters {report['dead_letters']} differ from the injected faults"
            f" {report['expected_dead_letters']}",
            reason="accounting",
        )


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The demo's report as tables and lines (``--json`` prints the dict instead)."""
    table = Table(title="ingest accounting", title_justify="left")
    table.add_column("")
    table.add_column("simulator", justify="right")
    table.add_column("dockline", justify="right")
    table.add_row("station records", f"{report['published_records']:,}", f"{report['received']:,}")
    table.add_row("accepted", "", f"{report['accepted']:,}")
    table.add_row(
        "unchanged (a quiet station re-seen)",
        f"{report['held_records']:,} held",
        f"{report['unchanged']:,}",
    )
    # every rejecting reason, injected or not, and any other reason dockline met
    every = {str(reason) for reason in REASON_BY_FAULT.values()}
    reasons = sorted(every | set(report["expected_dead_letters"]) | set(report["dead_letters"]))
    for reason in reasons:
        table.add_row(
            f"  dead letter: {reason}",
            f"{report['expected_dead_letters'].get(reason, 0):,} injected",
            f"{report['dead_letters'].get(reason, 0):,}",
        )
    table.add_row("offline rows (distinct)", "", f"{report['offline_distinct_rows']:,}")
    console.print(table)
    metrics = report["sim_metrics"]
    console.print(
        f"stations: {report['stations']} · failed rentals: {metrics.get('failed_rentals', 0):,}"
        f" · empty station-minutes: {metrics.get('empty_station_minutes', 0):,}"
    )
    feats = report["features"]
    training = (
        f"training set {feats['dataset_rows']:,} rows × {feats['dataset_features']} features"
        f" (empty_next_hour rate {feats['label_rate']})"
        if feats["dataset"]
        else "no training set (run more than an hour: labels look one hour ahead)"
    )
    console.print(
        f"features: {feats['online_vectors']:,} online vectors for {feats['online_entities']}"
        f" stations · {training} · online = offline at {feats['consistency_points']} sampled"
        f" points: {feats['consistency_match_rate']:.2%}"
    )
    model = report.get("model")
    for trained in (model, report.get("model_full")):
        if not trained:
            continue
        metric = trained["primary_metric"]
        baselines = ", ".join(f"{k} {v}" for k, v in trained["baselines"].items())
        console.print(
            f"model: {trained['model_name']} v{trained['version']} ({trained['selected']}),"
            f" test {metric} {trained['test_metrics'].get(metric)} vs baselines {baselines};"
            f" gate {'passed' if trained['gate_passed'] else 'failed'}"
            f" → {trained['alias'] or 'not promoted'} · bundle {trained['bundle_id']}"
        )
    serving = report.get("serving")
    if serving:
        console.print(
            f"serving: {serving['requests']} requests to {serving['url']}/v1/predict →"
            f" {serving['statuses']} (client p50 {serving['client_p50_ms']} ms); batch of"
            f" {serving['batch_items']} → {serving['batch_status']}; unknown station →"
            f" {serving['unknown_entity'][0]} {serving['unknown_entity'][1]}; malformed →"
            f" {serving['malformed'][0]} {serving['malformed'][1]}"
        )
        for example in serving["examples"]:
            console.print(f"  {example}", markup=False)
        for cycle in serving.get("decisions", []):
            console.print(
                f"  decision {cycle['decision_id'][:12]} ({cycle['policy']}, gate {cycle['gate']},"
                f" models {' '.join(cycle.get('models', []))}):"
                f" {cycle['actions']} moves, {cycle['bikes']} bikes; truck API accepted"
                f" {cycle['accepted']}, refused {cycle['refused']}; {', '.join(cycle['reasons'])}",
                markup=False,
            )
        evaluation = serving.get("evaluation")
        if evaluation:
            forecaster = serving.get("evaluation_forecaster", "")
            table = Table(
                title="one simulated day, same budget: empty+full station-minutes"
                f" (predictive acts on {forecaster})",
                title_justify="left",
            )
            for column in ("policy", "empty+full min", "outage $", "failed rentals", "truck-km"):
                table.add_column(column, justify="left" if column == "policy" else "right")
            for policy, kpis in evaluation.items():
                table.add_row(
                    policy,
                    f"{kpis.get('empty_full_minutes', 0):,.0f}",
                    f"{kpis.get('outage_cost_usd', 0):,.0f}",
                    f"{kpis.get('failed_rentals', 0):,.0f}",
                    f"{kpis.get('truck_km', 0):,.0f}",
                )
            console.print(table)
        served = serving.get("consistency")
        if served:
            console.print(
                f"served vectors recomputed offline at their request times:"
                f" {served['mismatches']} mismatching of {served['compared']:,} points"
            )
    if report.get("monitor"):
        _print_monitor(console, report["monitor"])
    root = report["data_dir"]
    console.print(
        "[bold]where to look[/bold]\n"
        f"  offline store   {root}/offline/station_status/date=*/  (+ _manifest.json)\n"
        f"  1-min aggregate {root}/offline/raw_station_metrics_1min/\n"
        f"  dead letters    dockline --data-dir {root} deadletters\n"
        f"  event log       {root}/log/log.sqlite\n"
        f"  online store    {root}/online.sqlite\n"
        f"  training set    {feats['dataset'] or '-'}/data.parquet (+ _metadata.json)\n"
        f"  model report    {model['report'] if model else '-'}\n"
        f"  serving logs    {root}/serving/metrics/ and {root}/serving/predictions/\n"
        f"  serve it        dockline --data-dir {root} serve  (then open /docs)\n"
        f"  models          dockline --data-dir {root} models list|history"
        f" {model['model_name'] if model else 'NAME'}"
    )


def _print_monitor(console: Console, monitor: dict[str, Any]) -> None:
    canary = monitor["canary"]
    console.print(
        f"monitor loop: bad challenger v{canary['version']} → [bold]{canary['action']}[/bold]"
        f" after {canary['windows']} analysis windows ({', '.join(canary['verdicts'])});"
        f" routing {canary['routing_after']}, champion v{canary['champion_after']}"
    )
    console.print(f"  reason (alias history): {canary['reason']}", markup=False)
    for state in monitor["health"]:
        console.print(f"  health {state['deployment']}: {state['status']} — {state['detail']}")
    for run in monitor["drift"]:
        drifted = run["drifted"]
        names = ", ".join(drifted[:4]) + (f" +{len(drifted) - 4} more" if len(drifted) > 4 else "")
        console.print(
            f"  drift {run.get('model', '')} v{run['model_version']} over {run['rows']:,}"
            " predictions in the last hour:"
            f" {'drift' if run['window_drift'] else 'no drift'}"
            f" ({len(drifted)} features moved{': ' + names if drifted else ''})"
        )
    for window in monitor["performance"]:
        console.print(
            f"  live performance v{window['model_version']}: {window['predictions']:,}"
            f" predictions, {window['labelled']:,} labelled, pr_auc {window['pr_auc']},"
            f" estimated precision {window['estimated_precision']}"
        )
