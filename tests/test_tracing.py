"""Traces across the fleet: a caption through Envoy is one trace, from the caller's span through the captioner's
server span to its queue and batch spans, exported over OTLP to a collector this test runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from imagewire.client import CaptionClient
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from imagewire_serving.frontdoor import Envoy, FrontDoor
from imagewire_serving.launcher import launch
from tests.fleet import ENV, IMAGE, NAME
from tests.gates import poll_until
from tests.support import script


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        with self._lock:
            self.spans.extend(span for resource in request.resource_spans for scope in resource.scope_spans
                              for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: int) -> dict[str, Any]:
        with self._lock:
            return {span.name: span for span in self.spans if int.from_bytes(span.trace_id, "big") == trace_id}


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)


@pytest.fixture
def traced_client() -> Iterator[InMemorySpanExporter]:
    """The caller's side: the gRPC client instrumentation, spans kept in memory.

    The process's tracer provider, as ``opentelemetry-instrument`` or an application would install it (the
    instrumentor's channels take the global one). Installed once: nothing else in the tests records spans.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrumentor = GrpcInstrumentorClient()
    instrumentor.instrument()
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


def test_a_caption_through_envoy_is_one_trace(tiny_caption_model: str, collector: tuple[Collector, str],
                                              traced_client: InMemorySpanExporter) -> None:
    spans, endpoint = collector
    log: list[dict[str, Any]] = []
    # The standard variable, as an operator would set it; a short batch delay so the spans arrive at once.
    env = {**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    command = [script(NAME), "--model", tiny_caption_model, "--device", "cpu", "--log-format", "json"]
    with (launch(command, name=NAME, env=env, on_stderr_line=lambda line: log.append(json.loads(line))
                 if line.startswith("{") else None) as replica,
          Envoy.start(FrontDoor(captioners=(replica.target,), animators=(), health_interval_s=0.25)) as envoy,
          CaptionClient(envoy.target, health_check=False) as client):
        client.caption(IMAGE, request_id="traced-1")
        (caller,) = [span for span in traced_client.get_finished_spans() if span.name.endswith("/Caption")]
        trace_id = caller.context.trace_id
        poll_until(lambda: {"caption.queue_wait", "caption.batch"} <= set(spans.of_trace(trace_id)),
                   what="the server's spans at the collector")
        poll_until(lambda: any('"traced-1"' in line for line in envoy.access_log()), what="Envoy's access log")
        access = envoy.access_log()
    found = spans.of_trace(trace_id)
    server = found["/imagewire.caption.v1.CaptionService/Caption"]
    # Envoy forwarded the caller's context: the server's span is the caller's span's child.
    assert int.from_bytes(server.parent_span_id, "big") == caller.context.span_id
    for name in ("caption.decode_image", "caption.queue_wait", "caption.batch"):
        assert found[name].parent_span_id == server.span_id
    batch = {item.key: item.value for item in found["caption.batch"].attributes}
    assert batch["batch_size"].int_value == 1
    # Health checks are not traced.
    assert not [span for span in spans.spans if "Health" in span.name]
    # The request id and the trace id are in the replica's log line and Envoy's access log.
    (line,) = [entry["rpc"] for entry in log if entry.get("rpc", {}).get("request_id") == "traced-1"]
    assert line["trace_id"] == f"{trace_id:032x}"
    (entry,) = [json.loads(text) for text in access if '"traced-1"' in text]
    assert f"{trace_id:032x}" in entry["traceparent"]
