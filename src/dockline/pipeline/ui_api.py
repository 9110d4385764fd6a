"""The read-only JSON the dashboard (``/ui``) reads, added to the serving app.

Each endpoint answers from a function the CLI already uses, so the page and ``dockline ... --json``
say the same thing:

=======================================  ==================================================
``GET /v1/stations``                     station information + latest status + latest
                                         logged prediction (offline store, prediction log)
``GET /v1/stations/{id}/history?hours=`` bikes, predictions with their outcome once known
                                         (``monitor.performance``'s label join), decisions
``GET /v1/models``                       ``dockline models list`` + ``models history``
``GET /v1/decisions?since=&limit=``      ``dockline decide log --json``
``GET /v1/monitoring/performance``       ``dockline monitor performance --json``
``GET /v1/monitoring/windows?hours=``    the serving windows ``monitor health`` judges
``GET /v1/lineage/{id}``                 ``dockline lineage trace ID --json``
=======================================  ==================================================

Errors are JSON with a machine-readable ``reason`` (the serving app's error body). Handlers are
plain functions: FastAPI runs them in its thread pool, so a scan never blocks the predict path.

>>> add_ui_routes(create_serving_app(platform), platform)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import msgspec
import pyarrow.compute as pc
from fastapi import FastAPI
from fastapi.responses import Response

from dockline.core.contracts import TOPIC_STATION_INFORMATION, TOPIC_STATION_STATUS
from dockline.core.errors import DocklineError, NotFoundError, ValidationError
from dockline.core.time import ensure_utc
from dockline.monitor.predictions import read_prediction_log
from dockline.monitor.windows import read_windows
from dockline.pipeline import lineage
from dockline.pipeline.platform import Platform

__all__ = [
    "add_ui_routes",
    "decisions",
    "models",
    "performance",
    "station_history",
    "stations",
    "trace",
    "windows",
]

_MAX_HOURS = 24 * 31
_LOG_COLUMNS = ["request_id", "entity", "served", "source", "probability", "label"]
_LOG_COLUMNS += ["model_version", "bundle_id", "role"]
_STATUS = {"not_found": 404, "unknown_id": 404, "unknown_station": 404, "no_data": 404}


def _json(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def _error(exc: DocklineError) -> Response:
    status = _STATUS.get(exc.reason, 404 if isinstance(exc, NotFoundError) else 422)
    return _json({"reason": exc.reason, "message": exc.message, "field": exc.where}, status)


def _answer(compute: Callable[[], Any]) -> Response:
    try:
        return _json(compute())
    except DocklineError as exc:
        return _error(exc)


def _hours(value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        hours = float(value)
    except ValueError:
        raise ValidationError(
            f"hours must be a number; got {value!r}", reason="bad_value", where="hours"
        ) from None
    if not 0 < hours <= _MAX_HOURS:
        raise ValidationError(
            f"hours must be in (0, {_MAX_HOURS}]; got {value}", reason="bad_value", where="hours"
        )
    return hours


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{name} must be an ISO-8601 time; got {value!r}", reason="bad_time", where=name
        ) from None
    return ensure_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def _count(value: str | None) -> int:
    try:
        count = 0 if value is None else int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise ValidationError(
            f"limit must be a whole number >= 0; got {value!r}", reason="bad_value", where="limit"
        )
    return count


# ------------------------------------------------------------------------------ the stations


def _files(platform: Platform, source: str, since: date | None = None) -> list[str]:
    store = platform.open_offline()
    return [
        str(path)
        for day in store.dates(source)
        if since is None or day >= since
        for path in store.files(source, day)
    ]


def _query(sql: str, files: list[str], *params: Any) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        rel = con.execute(sql.replace("$files", "$1"), [files, *params])
        names = [d[0] for d in rel.description]
        return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]
    finally:
        con.close()


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _latest_predictions(platform: Platform, since: datetime) -> dict[str, dict[str, Any]]:
    rows = read_prediction_log(
        platform.data.serving_predictions,
        start=since,
        columns=_LOG_COLUMNS,
    )
    if rows.num_rows == 0:
        return {}
    rows = rows.filter(pc.and_(rows["served"], pc.is_valid(rows["probability"])))
    latest: dict[str, dict[str, Any]] = {}
    for row in rows.to_pylist():  # sorted by logged_at: the last one per entity wins
        latest[row["entity"]] = {
            "request_id": row["request_id"],
            "logged_at": _iso(row["logged_at"]),
            "probability": row["probability"],
            "label": row["label"],
            "source": row["source"],
            "model_version": row["model_version"],
            "bundle_id": row["bundle_id"],
        }
    return latest


def stations(platform: Platform) -> dict[str, Any]:
    """Every station with its information (name, position, capacity), its latest status in the
    offline store and its latest served prediction of the last day (None when there is none)."""
    info_files = _files(platform, TOPIC_STATION_INFORMATION)
    if not info_files:
        raise NotFoundError(
            "no station information in the offline store (ingest, then sink it)",
            reason="no_data",
            where=TOPIC_STATION_INFORMATION,
        )
    info = _query(
        "SELECT station_id, arg_max(name, event_ts) AS name, arg_max(lat, event_ts) AS lat,"
        " arg_max(lon, event_ts) AS lon, arg_max(capacity, event_ts) AS capacity"
        " FROM read_parquet($files, union_by_name = true) GROUP BY station_id ORDER BY station_id",
        info_files,
    )
    status_dates = platform.open_offline().dates(TOPIC_STATION_STATUS)
    latest: dict[str, dict[str, Any]] = {}
    if status_dates:  # the newest two dates hold every station that still reports
        files = _files(platform, TOPIC_STATION_STATUS, status_dates[-min(2, len(status_dates))])
        for row in _query(
            "SELECT station_id, max(event_ts) AS at,"
            " arg_max(num_bikes_available, event_ts) AS bikes,"
            " arg_max(num_docks_available, event_ts) AS docks,"
            " arg_max(is_renting, event_ts) AS renting"
            " FROM read_parquet($files, union_by_name = true) GROUP BY station_id",
            files,
        ):
            latest[row.pop("station_id")] = {k: _iso(v) for k, v in row.items()}
    now = platform.clock.now()
    predictions = _latest_predictions(platform, now - timedelta(days=1))
    return {
        "as_of": now.isoformat(),
        "stations": [
            {
                **row,
                "status": latest.get(row["station_id"]),
                "prediction": predictions.get(row["station_id"]),
            }
            for row in info
        ],
    }


def station_history(platform: Platform, station_id: str, hours: float) -> dict[str, Any]:
    """A station's bikes, its served predictions (with the outcome once the label is known)
    and the decisions that moved bikes to or from it, over the last ``hours``."""
    from dockline.pipeline.decide import decision_log
    from dockline.pipeline.monitor import _labels_for

    end = platform.clock.now()
    start = end - timedelta(hours=hours)
    files = _files(platform, TOPIC_STATION_STATUS, (start - timedelta(days=1)).date())
    status = (
        _query(
            "SELECT event_ts AS t, num_bikes_available AS bikes, num_docks_available AS docks,"
            " capacity FROM read_parquet($files, union_by_name = true)"
            " WHERE station_id = $2 AND event_ts >= $3 AND event_ts <= $4 ORDER BY event_ts",
            files,
            station_id,
            start,
            end,
        )
        if files
        else []
    )
    known = {r["station_id"] for r in stations(platform)["stations"]}
    if station_id not in known:
        raise NotFoundError("no such station", reason="unknown_station", where=station_id)
    rows = read_prediction_log(
        platform.data.serving_predictions,
        start=start,
        end=end + timedelta(microseconds=1),
        columns=_LOG_COLUMNS,
    )
    predictions: list[dict[str, Any]] = []
    if rows.num_rows:
        rows = rows.filter(
            pc.and_(pc.equal(rows["entity"], station_id), pc.is_valid(rows["probability"]))
        )
    if rows.num_rows:
        # the label join monitor performance uses: NaN until label_available_at has passed
        outcomes = _labels_for(platform, rows.select(["entity", "logged_at"]), end)
        for row, outcome in zip(rows.to_pylist(), outcomes.tolist(), strict=True):
            row["t"] = _iso(row.pop("logged_at"))
            row["outcome"] = None if outcome != outcome else bool(outcome)  # NaN: not yet known
            predictions.append(row)
    decisions = []
    for d in decision_log(platform.data.root).read(since=start):
        moves = [
            msgspec.to_builtins(a)
            for a in d.actions
            if station_id in (a.from_station, a.to_station)
        ]
        if moves:
            decisions.append(
                {
                    "decision_id": d.decision_id,
                    "cycle_time": d.cycle_time.isoformat(),
                    "policy": d.policy,
                    "reasons": list(d.reasons),
                    "actions": moves,
                }
            )
    return {
        "station_id": station_id,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "label": platform.config.train.label,
        "status": [{k: _iso(v) for k, v in r.items()} for r in status],
        "predictions": predictions,
        "decisions": decisions,
    }


# ------------------------------------------------------------------------- models, monitoring


def models(platform: Platform) -> dict[str, Any]:
    """Every registered model: versions with aliases and gate verdicts, and the alias history
    (``dockline models list --json`` and ``models history --json`` in one answer)."""
    from dockline.pipeline.train import open_registry
    from dockline.train.registry import mlflow_client

    if not platform.data.mlflow_db.exists():
        return {"models": []}
    registry = open_registry(platform)
    found = mlflow_client(registry.tracking_uri).search_registered_models()
    out = []
    for name in sorted(str(m.name) for m in found):
        out.append(
            {
                "model": name,
                "versions": [v.model_dump(mode="json") for v in registry.versions(name)],
                "history": [e.model_dump(mode="json") for e in registry.history(name)],
            }
        )
    return {"models": out}


def decisions(platform: Platform, since: datetime | None, limit: int) -> dict[str, Any]:
    """The audit log (``dockline decide log --json``), newest last, at most ``limit`` (0: all)."""
    from dockline.pipeline.decide import decision_log

    found = decision_log(platform.data.root).read(since=since)
    if limit > 0:
        found = found[-limit:]
    return {"decisions": msgspec.to_builtins(found)}


def performance(platform: Platform) -> dict[str, Any]:
    """Live performance (``dockline monitor performance --json``), not recorded as a run."""
    from dockline.pipeline import monitor

    with lineage.suppressed():  # a page view is not a monitor run of record
        run = monitor.performance(platform)
    return {
        "start": run.start.isoformat(),
        "end": run.end.isoformat(),
        "rows": run.rows,
        "windows": [{"bundle_id": b, **w.to_dict()} for b, w in run.windows],
        "reference": run.reference,
    }


def windows(platform: Platform, hours: float, deployment: str | None) -> dict[str, Any]:
    """The serving metrics windows of the last ``hours`` (what the health verdict judged)."""
    scan = read_windows(platform.data.serving_metrics)
    since = platform.clock.now() - timedelta(hours=hours)
    kept = [
        w.model_dump(mode="json")
        for w in scan.windows
        if w.window_end >= since and (deployment is None or w.deployment_id == deployment)
    ]
    bad = [{"file": b.file, "line": b.line, "reason": b.reason} for b in scan.bad_lines]
    return {"windows": kept, "bad_lines": bad, "duplicates": scan.duplicates}


def trace(platform: Platform, ident: str) -> dict[str, Any]:
    """``dockline lineage trace ID --json``."""
    result: dict[str, Any] = lineage.trace(platform, ident).to_dict()
    return result


class _Ttl:
    """A few seconds' cache per key: a page reloading does not rescan the data dir each time."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl = ttl_s
        self.lock = threading.Lock()
        self.values: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self.lock:
            hit = self.values.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
        value = compute()
        with self.lock:
            self.values[key] = (time.monotonic(), value)
        return value


def add_ui_routes(app: FastAPI, platform: Platform, *, ttl_s: float = 5.0) -> None:
    """Add the dashboard's read-only GET endpoints (see the module docstring) to ``app``."""
    cache = _Ttl(ttl_s)

    @app.get("/v1/stations", summary="Stations: position, capacity, latest status and prediction")
    def get_stations() -> Response:
        return _answer(lambda: cache.get("stations", lambda: stations(platform)))

    @app.get("/v1/stations/{station_id}/history", summary="A station's bikes, predictions, moves")
    def get_history(station_id: str, hours: str | None = None) -> Response:
        return _answer(lambda: station_history(platform, station_id, _hours(hours, 24.0)))

    @app.get("/v1/models", summary="Model versions, aliases, alias history and gate verdicts")
    def get_models() -> Response:
        return _answer(lambda: cache.get("models", lambda: models(platform)))

    @app.get("/v1/decisions", summary="The decision audit log")
    def get_decisions(since: str | None = None, limit: str | None = None) -> Response:
        def compute() -> Any:
            return decisions(platform, _time(since, "since"), _count(limit))

        return _answer(compute)

    @app.get("/v1/monitoring/performance", summary="Live performance per bundle and window")
    def get_performance() -> Response:
        return _answer(lambda: cache.get("performance", lambda: performance(platform)))

    @app.get("/v1/monitoring/windows", summary="Serving metrics windows (what health judges)")
    def get_windows(hours: str | None = None, deployment: str | None = None) -> Response:
        return _answer(lambda: windows(platform, _hours(hours, 1.0), deployment))

    @app.get("/v1/lineage/{ident}", summary="Lineage of a prediction (request id) or a bundle")
    def get_lineage(ident: str) -> Response:
        return _answer(lambda: trace(platform, ident))
