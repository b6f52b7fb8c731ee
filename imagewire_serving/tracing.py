"""OpenTelemetry traces: a server span per call and a few spans of what the engines did inside it.

The server span comes from the well-kept gRPC instrumentation (``opentelemetry-instrumentation-grpc``), which
continues the caller's trace from its ``traceparent`` metadata (through Envoy too, which forwards it). Engines add
their phases (queue wait, batch, model compute, video encode) with :func:`span` and :func:`phase`, under the
call's span. Spans are exported over OTLP/gRPC when an endpoint is configured (``--otlp-endpoint`` or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT``); otherwise no provider is installed and every span is OpenTelemetry's
non-recording no-op, so tracing costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

_LOGGER = logging.getLogger(__name__)
_TRACER = trace.get_tracer("imagewire")
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Client mistakes are not the server's errors: only these codes mark a server span as failed.
_SERVER_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                            grpc.StatusCode.DATA_LOSS})


def endpoint(configured: str | None) -> str | None:
    """Where spans go: the flag, else the standard OTLP environment variables, else nowhere."""
    return configured or next((os.environ[name] for name in _ENDPOINT_VARIABLES if os.environ.get(name)), None)


def configure(configured_endpoint: str | None, service_name: str) -> list[grpc.aio.ServerInterceptor]:
    """Install the process's tracer provider exporting to the endpoint, if there is one; returns the server
    interceptors to add (none when tracing is off). Called once per server process."""
    target = endpoint(configured_endpoint)
    if target is None:
        return []
    # Imported only when tracing is on: the SDK and the exporter are not needed otherwise.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, where set, names the service instead (Resource.create reads it).
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target)))
    trace.set_tracer_provider(provider)
    _LOGGER.info("exporting traces over OTLP to %s", target)
    # Health checks (probes, Envoy, client-side health checking) would drown the calls that matter.
    return [aio_server_interceptor(tracer_provider=provider, filter_=filters.negate(filters.health_check()))]


def shutdown() -> None:
    """Export what is still buffered (the provider's shutdown flushes it); nothing to do when tracing is off."""
    provider = trace.get_tracer_provider()
    close = getattr(provider, "shutdown", None)
    if callable(close):
        close()


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A child span of the current one around a block (a no-op span when tracing is off)."""
    with _TRACER.start_as_current_span(name, attributes=attributes) as current:
        yield current


def phase(name: str, started: float, ended: float, **attributes: Any) -> None:
    """Record a finished phase of the current call measured elsewhere, as ``time.monotonic()`` instants (a
    batch runs for many calls at once, on another thread: each call gets its own span of it afterwards)."""
    current = trace.get_current_span()
    if not current.is_recording():
        return
    offset_ns = time.time_ns() - time.monotonic_ns()
    child = _TRACER.start_span(name, attributes=attributes, start_time=round(started * 1e9) + offset_ns)
    child.end(end_time=round(ended * 1e9) + offset_ns)


class Phases:
    """Consecutive phases of one call seen from its events (queued, computing, encoding...): entering a phase
    ends the one before; each becomes a span of the current call."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._started = 0.0

    def enter(self, name: str | None) -> None:
        """Begin phase ``name`` (None: end the current one); entering the current phase again changes nothing."""
        if name == self._name:
            return
        now = time.monotonic()
        if self._name is not None:
            phase(self._name, self._started, now)
        self._name, self._started = name, now


def finish_call(code: grpc.StatusCode) -> str | None:
    """Give the current server span the call's status; returns its trace id (hex) for the log line, or None."""
    current = trace.get_current_span()
    context = current.get_span_context()
    if not context.is_valid:
        return None
    current.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_FAULTS:
        current.set_status(Status(StatusCode.ERROR, code.name))
    return trace.format_trace_id(context.trace_id)
