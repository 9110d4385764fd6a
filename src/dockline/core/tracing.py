"""Traces across ingest → materialize → serve → decide: the one tracer every layer asks for.

Stages import only ``core``, so the tracer lives here: :func:`span` opens an OpenTelemetry span
when the wiring has installed a provider (:func:`install`, from ``[tracing]``), and costs one
attribute check otherwise. The provider is dockline's own, not OpenTelemetry's global one, so a
process (or a test) can reconfigure it. W3C ``traceparent`` headers carry a trace across HTTP
(:func:`inject`, :func:`extract`), from a decision cycle into the serving app's requests.

>>> with span("features.materialize", {"events": 120}):  # doctest: +SKIP
...     ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager, nullcontext
from typing import Any

__all__ = ["current_trace_id", "enabled", "extract", "inject", "install", "installed", "span"]

_state: dict[str, Any] = {"provider": None, "tracers": {}}


def install(provider: Any | None) -> None:
    """Use ``provider`` (an OpenTelemetry ``TracerProvider``) from now on; None turns tracing
    off. The previous provider is flushed and shut down."""
    old = _state["provider"]
    _state["provider"], _state["tracers"] = provider, {}
    if old is not None and old is not provider:
        old.shutdown()


def installed() -> Any | None:
    """The provider spans go to (None: tracing is off)."""
    return _state["provider"]


def enabled() -> bool:
    """Whether spans are recorded (a provider is installed)."""
    return _state["provider"] is not None


def _tracer(name: str) -> Any:
    tracers: dict[str, Any] = _state["tracers"]
    tracer = tracers.get(name)
    if tracer is None:
        tracer = tracers[name] = _state["provider"].get_tracer(f"dockline.{name}")
    return tracer


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: Mapping[str, str] | None = None,
) -> Any:
    """A context manager: the span ``name`` (its layer is the part before the first dot) under
    the current span, or under the remote parent in ``parent``'s ``traceparent`` header;
    a no-op when tracing is off."""
    if _state["provider"] is None:
        return nullcontext()
    return _span(name, attributes, parent)


@contextmanager
def _span(
    name: str, attributes: Mapping[str, Any] | None, parent: Mapping[str, str] | None
) -> Iterator[Any]:
    context = extract(parent) if parent is not None else None
    tracer = _tracer(name.split(".", 1)[0])
    with tracer.start_as_current_span(name, context=context, attributes=attributes) as current:
        yield current


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or None outside a recorded span."""
    if _state["provider"] is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current span's ``traceparent`` to ``headers`` (unchanged when tracing is off)."""
    if _state["provider"] is not None:
        from opentelemetry.propagate import inject as _inject

        _inject(headers)
    return headers


def extract(headers: Mapping[str, str]) -> Any:
    """The OpenTelemetry context a request's ``traceparent`` header carries."""
    from opentelemetry.propagate import extract as _extract

    return _extract(headers)
