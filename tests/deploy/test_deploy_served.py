"""deploy/ against the real serving app: the dashboard, the health check and the probes.

The Grafana dashboard (deploy/grafana/dockline.json) shows only what dockline exports.

Its queries are parsed by a maintained PromQL parser (``promql-parser``); the metric names they
select are checked against a real scrape of ``/metrics`` of the serving app built by the product
wiring (``create_serving_app``: serving telemetry plus the monitor's collector) over a simulated
city; and a real Prometheus, configured from deploy/prometheus/prometheus.yml, evaluates every
query against that app. The image's HEALTHCHECK command and the Kubernetes probes are run
against the same app.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pyarrow.parquet as pq
import pytest
from deploy_helpers import DASHBOARD, DEPLOY, load_yaml, load_yaml_all, promql, require_binary
from dockerfile_parse import DockerfileParser
from prometheus_client.parser import text_string_to_metric_families
from test_serve_monitoring import City, free_port

from dockline.core.time import FixedClock
from dockline.pipeline.serve import BackgroundServer, create_serving_app

DS_VAR = "${DS_PROMETHEUS}"
# Series names each metric type exposes beside (or instead of) its family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def _dashboard() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return value


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {p['id']} {p.get('title')!r} {t['refId']}", t["expr"])
        for p in _panels(dashboard["panels"])
        for t in p.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert m, f"variable {var['name']}: expected label_values(selector, label): {query}"
            found.append((f"variable {var['name']}", m.group(1)))
    return found


def _selected(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (every selector must name one)."""
    names: set[str] = set()
    problems: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if name is None:
                by_name = [m for m in node.matchers.matchers if m.name == "__name__"]
                if len(by_name) == 1 and by_name[0].op == promql_parser.MatchOp.Equal:
                    name = by_name[0].value
            if name is None:
                problems.append(str(node))
            else:
                names.add(name)
        return True

    promql_parser.walk(promql_parser.parse(promql(expr)), visit)
    assert not problems, f"selectors without a metric name: {problems} in {expr}"
    return names


# -- the file ------------------------------------------------------------------------------------


def test_the_dashboard_loads_with_unique_ids_and_its_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), ids
    (ds,) = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        area = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": DS_VAR}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DS_VAR and t["expr"].strip()
            used = set(re.findall(r"\$\{?([A-Za-z]\w*)", t["expr"]))
            assert used <= variables, f"{p['title']}: undefined variables {used - variables}"


def test_every_query_parses_as_promql_and_names_its_metrics() -> None:
    queries = _queries(_dashboard())
    assert len(queries) >= 20
    for where, expr in queries:
        try:
            assert _selected(expr), f"{where}: selects no metric"
        except ValueError as exc:  # the parser's syntax error
            pytest.fail(f"{where}: not PromQL: {exc}\n{expr}")


def test_a_query_naming_an_unknown_metric_is_caught() -> None:
    """The checks below can fail: a misspelt name is a selected name, a bad query no PromQL."""
    assert _selected('histogram_quantile(0.9, sum by (le) (rate(x_bucket{a=~"$a"}[5m])))') == {
        "x_bucket"
    }
    with pytest.raises(ValueError):
        _selected("sum(rate(x_total[5m])")


# -- against the real app -------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(city: City) -> Iterator[str]:
    """The city's app after a little traffic: predictions (the drift input), a batch and an
    unknown station (an error outcome), then a minute on (a metrics window: the health input);
    yields its base URL."""
    assert isinstance(city.platform.clock, FixedClock)
    clock = FixedClock(city.platform.clock.now())
    platform = replace(city.platform, clock=clock)
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for station in city.stations:
            assert client.post("/v1/predict", json={"entity": station}).status_code == 200
        batch = client.post("/v1/predict/batch", json={"entities": city.stations[:3]})
        assert batch.status_code == 200, batch.text
        assert client.post("/v1/predict", json={"entity": "no-such-station"}).status_code == 404
        now = clock.now().isoformat()
        stations = [
            {"station_id": s, "bikes": 0, "docks": 9, "capacity": 9, "lat": 41.9, "lon": -87.6}
            | {"as_of": now, "age_s": 0.0}
            for s in city.stations
        ]
        decided = client.post("/v1/decide", json={"stations": stations})
        assert decided.status_code == 200, decided.text  # the decision metrics' input
        assert client.post("/v1/decide", json={"stations": []}).status_code == 422
        clock.advance(timedelta(seconds=61))
        rows, windows = platform.data.serving_predictions, platform.data.serving_metrics
        deadline = time.monotonic() + 15
        while sum(
            pq.ParquetFile(p).metadata.num_rows for p in rows.rglob("*.parquet")
        ) < 13 or not any(windows.rglob("*.jsonl")):
            assert time.monotonic() < deadline, "serving wrote no prediction log or window"
            time.sleep(0.2)
        yield server.url


@pytest.fixture(scope="module")
def exported(served: str) -> dict[str, set[str]]:
    """Family name → the series names it exposes, from one scrape of ``/metrics``."""
    text = httpx.get(served + "/metrics", timeout=120).text
    families = {
        family.name: {family.name + suffix for suffix in _SUFFIXES[family.type]}
        | {s.name for s in family.samples}
        for family in text_string_to_metric_families(text)
    }
    # prometheus_client exposes each counter's and histogram's creation time as a gauge
    # family of its own (x_created): a timestamp of the metric, not a metric to chart
    return {
        name: series
        for name, series in families.items()
        if not (name.endswith("_created") and name.removesuffix("_created") in families)
    }


@pytest.mark.slow
def test_every_query_names_only_metrics_the_served_app_exports(
    exported: dict[str, set[str]],
) -> None:
    names = set().union(*exported.values())
    assert "ml_deployment_health" in names and "dockline_serve_requests_total" in names
    assert "ml_drift_score" in names, "the monitor's drift verdict is missing from the scrape"
    unknown = {
        where: sorted(_selected(expr) - names)
        for where, expr in _queries(_dashboard())
        if _selected(expr) - names
    }
    assert not unknown, f"queries name metrics dockline does not export: {unknown}"


@pytest.mark.slow
def test_every_metric_dockline_exports_is_on_the_dashboard(exported: dict[str, set[str]]) -> None:
    shown = set().union(*(_selected(expr) for _, expr in _queries(_dashboard())))
    missing = sorted(family for family, series in exported.items() if not series & shown)
    assert not missing, f"add a panel for: {missing}"


@pytest.mark.slow
def test_a_real_prometheus_configured_from_deploy_evaluates_every_query(
    served: str, tmp_path: Path
) -> None:
    """deploy/prometheus/prometheus.yml with its target pointed at the app: every dashboard
    query is valid for Prometheus itself, and one whose selectors all match series answers."""
    binary = require_binary(
        "prometheus", "Prometheus is not installed: apt-get install prometheus (or make servers)"
    )
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    (job,) = config["scrape_configs"]
    job["static_configs"][0]["targets"] = [served.removeprefix("http://")]
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom:
            _wait_for_scrapes(prom, proc, log, job["job_name"], scrapes=4)
            failed, empty = [], []
            for where, expr in _queries(_dashboard()):
                r = prom.get("/api/v1/query", params={"query": promql(expr)})
                if r.status_code != 200 or r.json()["status"] != "success":
                    failed.append(f"{where}: {r.text[:200]}")
                    continue
                if not r.json()["data"]["result"] and _all_selectors_match(prom, expr):
                    empty.append(where)
            assert not failed, failed
            assert not empty, f"queries whose series exist but answer nothing: {empty}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for_scrapes(
    prom: httpx.Client, proc: subprocess.Popen[bytes], log: Path, job: str, scrapes: int
) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if prom.get("/-/ready").status_code == 200:
                r = prom.get(
                    "/api/v1/query", params={"query": f'count_over_time(up{{job="{job}"}}[1m])'}
                )
                result = r.json()["data"]["result"]
                up = prom.get("/api/v1/query", params={"query": f'up{{job="{job}"}}'}).json()
                if (
                    result
                    and float(result[0]["value"][1]) >= scrapes
                    and up["data"]["result"][0]["value"][1] == "1"
                ):
                    return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "Prometheus never scraped the app"
        time.sleep(0.5)


def _all_selectors_match(prom: httpx.Client, expr: str) -> bool:
    """Whether each vector selector of ``expr`` matches at least one series right now."""
    selectors: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(str(node))
        return True

    promql_parser.walk(promql_parser.parse(promql(expr)), visit)
    for selector in selectors:
        r = prom.get("/api/v1/query", params={"query": f"count({selector})"})
        if not r.json()["data"]["result"]:
            return False
    return True


@pytest.mark.slow
def test_the_image_health_check_and_the_probes_answer_on_the_served_app(served: str) -> None:
    """The Dockerfile's HEALTHCHECK command, run as the container would (its port pointed at the
    app), and the paths the Kubernetes probes ask."""
    df = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    (check,) = [i["value"] for i in df.structure if i["instruction"] == "HEALTHCHECK"]
    command = json.loads(check.split("CMD", 1)[1])
    port = served.rsplit(":", 1)[1]
    command = [a.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in command]
    assert command[0] == "python"
    ok = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    gone = [a.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}") for a in command]
    assert subprocess.run([sys.executable, *gone[1:]], capture_output=True).returncode != 0

    (serve,) = [
        d for d in load_yaml_all(DEPLOY / "k8s" / "serve.yaml") if d["kind"] == "Deployment"
    ]
    (container,) = serve["spec"]["template"]["spec"]["containers"]
    with httpx.Client(base_url=served, timeout=30) as client:
        for probe in ("livenessProbe", "startupProbe"):
            r = client.get(container[probe]["httpGet"]["path"])
            assert r.status_code == 200, (probe, r.text)
        ready = client.get(container["readinessProbe"]["httpGet"]["path"])
        assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
