"""OpenTelemetry traces (``[tracing]``) across materialize → serve → decide, on the serving
tests' simulated city: a decision cycle's span is the parent of the serving requests it makes,
and each served prediction's trace id is in its prediction-log row."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_serve_monitoring import City, city  # noqa: F401  (the fixture, reused)

from dockline.core import tracing
from dockline.monitor.predictions import read_prediction_log
from dockline.pipeline.decide_run import read_predictions
from dockline.pipeline.features import materialize
from dockline.pipeline.serve import BackgroundServer, create_serving_app
from dockline.pipeline.tracing import read_spans

pytestmark = pytest.mark.slow  # the city: an archive ingested, materialized, a model registered


@pytest.fixture
def traced(city: City) -> Iterator[City]:  # noqa: F811
    config = city.platform.config.model_copy(
        update={"tracing": city.platform.config.tracing.model_copy(update={"enabled": True})}
    )
    yield City(dataclasses.replace(city.platform, config=config), city.stations)
    tracing.install(None)


def test_a_decision_cycle_traces_through_serving_into_the_prediction_log(traced: City) -> None:
    platform, stations = traced.platform, traced.stations
    materialize(platform)
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        with tracing.span("decide.cycle") as cycle:
            cycle_trace = tracing.current_trace_id()
            scored, _ = read_predictions(client, server.url, stations)  # carries traceparent
        assert len(scored) == len(stations)
        alone = client.post("/v1/predict", json={"entity": stations[0]})
        assert alone.status_code == 200
    tracing.install(None)  # flushes the batch processor
    spans = read_spans(platform.data.root / "traces")
    by_name: dict[str, list[dict[str, object]]] = {}
    for s in spans:
        by_name.setdefault(str(s["name"]), []).append(s)
    assert {"features.materialize", "decide.cycle", "serve.predict_batch", "serve.predict"} <= set(
        by_name
    )
    (parent,) = [s for s in by_name["decide.cycle"] if s["traceId"] == cycle_trace]
    (child,) = [s for s in by_name["serve.predict_batch"] if s["traceId"] == cycle_trace]
    assert (
        child["parentSpanId"]
        == parent["spanId"]
        == format(cycle.get_span_context().span_id, "016x")
    )
    assert child["resource"]["role"] == "serve"  # type: ignore[index]
    rows = read_prediction_log(platform.data.serving_predictions, columns=["trace_id", "endpoint"])
    traces = dict(zip(rows["endpoint"].to_pylist(), rows["trace_id"].to_pylist(), strict=False))
    batch = [
        t
        for e, t in zip(rows["endpoint"].to_pylist(), rows["trace_id"].to_pylist(), strict=True)
        if e == "/v1/predict/batch"
    ]
    assert batch and set(batch) == {cycle_trace}, "every batch row carries the cycle's trace"
    single = traces["/v1/predict"]
    assert single and single != cycle_trace  # its own trace: no caller sent one
    assert single in {s["traceId"] for s in by_name["serve.predict"]}


def test_without_tracing_no_span_is_recorded_and_rows_have_no_trace(city: City) -> None:  # noqa: F811
    tracing.install(None)
    with tracing.span("decide.cycle") as nothing:
        assert nothing is None and tracing.current_trace_id() is None
    assert tracing.inject({}) == {}


def test_configuring_again_keeps_the_provider_a_new_role_replaces_it(tmp_path: Path) -> None:
    from dockline.pipeline.platform import Platform
    from dockline.pipeline.tracing import configure_tracing

    (tmp_path / "dockline.toml").write_text("[tracing]\nenabled = true\n")
    platform = Platform.open(tmp_path)
    try:
        assert configure_tracing(platform, "materialize")
        first = tracing.installed()
        assert configure_tracing(platform, "materialize") and tracing.installed() is first
        assert configure_tracing(platform, "serve") and tracing.installed() is not first
    finally:
        tracing.install(None)
    assert configure_tracing(platform, "serve") and tracing.installed() is not None
    tracing.install(None)
