"""``[tracing]`` wired: an OpenTelemetry provider for this process, OTLP or files.

:func:`configure_tracing` installs the provider :mod:`dockline.core.tracing` hands spans to:
an OTLP/HTTP exporter when ``[tracing] endpoint`` is set, else a file exporter
(``<data-dir>/traces/spans-YYYY-MM-DD.jsonl``, one span per line; the SDK is imported only
when tracing is on). Spans leave through a batch
processor, off the request path; ``shutdown`` at exit flushes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dockline.core import tracing
from dockline.pipeline.platform import Platform

__all__ = ["configure_tracing", "read_spans"]


def configure_tracing(platform: Platform, role: str) -> bool:
    """Install a provider for ``platform``'s ``[tracing]`` in this process (``role`` names it:
    ingest, materialize, serve, decide); returns whether tracing is on. Off: uninstalls.

    Called again with the same settings, data dir and role (a loop materializing every cycle),
    it keeps the provider it installed rather than flushing it and building another.
    """
    config = platform.config.tracing
    if not config.enabled:
        tracing.install(None)
        return False
    key = (config, str(platform.data.root), role)
    if _installed and _installed[0] == key and tracing.installed() is _installed[1]:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter: SpanExporter
    if config.endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{config.endpoint.rstrip('/')}/v1/traces")
    else:
        from dockline.pipeline._trace_files import FileSpanExporter

        exporter = FileSpanExporter(platform.data.root / "traces")
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": config.service_name, "service.namespace": "dockline", "role": role}
        ),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    tracing.install(provider)
    _installed[:] = [key, provider]
    return True


_installed: list[Any] = []
"""The key and provider :func:`configure_tracing` installed last in this process."""


def read_spans(root: Path) -> list[dict[str, Any]]:
    """Every span the file exporter wrote under ``root``, oldest file first."""
    out: list[dict[str, Any]] = []
    for path in sorted(root.glob("spans-*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out
