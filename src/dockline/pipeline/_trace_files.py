"""The file span exporter: OpenTelemetry spans as JSON lines (imports the SDK)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["FileSpanExporter"]


class FileSpanExporter(SpanExporter):
    """Spans as JSON lines, one file per UTC day under ``root`` (the OTLP field names)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines: dict[str, list[str]] = {}
        for s in spans:
            day = datetime.fromtimestamp((s.start_time or 0) / 1e9, UTC).strftime("%Y-%m-%d")
            lines.setdefault(day, []).append(json.dumps(_record(s), sort_keys=True))
        try:
            with self._lock:
                self.root.mkdir(parents=True, exist_ok=True)
                for day, rows in lines.items():
                    with (self.root / f"spans-{day}.jsonl").open("a", encoding="utf-8") as f:
                        f.write("\n".join(rows) + "\n")
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing held open: each export appends and closes."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Exports are written synchronously."""
        return True


def _record(s: Any) -> dict[str, Any]:
    context = s.get_span_context()
    return {
        "name": s.name,
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
        "parentSpanId": format(s.parent.span_id, "016x") if s.parent is not None else None,
        "startTimeUnixNano": s.start_time,
        "endTimeUnixNano": s.end_time,
        "status": s.status.status_code.name,
        "attributes": dict(s.attributes or {}),
        "resource": dict(s.resource.attributes),
    }
