"""Traces across the fleet: a call through Envoy is one trace, from the caller's span through the server's span to
the engine's phases (a caption's queue and batch, a video's queue, denoising and encoding), exported over OTLP to a
collector these tests run."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from imagewire.client import AnimateClient, AnimateResult, CaptionClient
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from animator import tiny
from imagewire_serving.frontdoor import Envoy, FrontDoor
from imagewire_serving.launcher import ServerProcess
from tests.fleet import ENV, IMAGE
from tests.gates import poll_until
from tests.support import script

CAPTIONER = "imagewire-captioner"
ANIMATOR = "imagewire-animator"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.endpoint = ""
        self._lock = threading.Lock()

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        with self._lock:
            self.spans.extend(span for resource in request.resource_spans for scope in resource.scope_spans
                              for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: int) -> dict[str, Any]:
        with self._lock:
            return {span.name: span for span in self.spans if int.from_bytes(span.trace_id, "big") == trace_id}


class TracedFleet:
    """A captioner and an animator exporting their spans to ``collector``, behind one Envoy."""

    def __init__(self, stack: contextlib.ExitStack, model: str, endpoint: str) -> None:
        self.logs: dict[str, list[dict[str, Any]]] = {CAPTIONER: [], ANIMATOR: []}
        # The standard variable, as an operator would set it; a short batch delay so spans arrive at once.
        env = {**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        commands = {CAPTIONER: [script(CAPTIONER), "--model", model], ANIMATOR: [script(ANIMATOR)]}
        servers = {name: stack.enter_context(ServerProcess.start(
            [*command, "--device", "cpu", "--log-format", "json"], name=name, env=env,
            on_stderr_line=lambda line, log=self.logs[name]: log.append(json.loads(line))
            if line.startswith("{") else None)) for name, command in commands.items()}
        for server in servers.values():
            server.wait_ready()
        self.envoy = stack.enter_context(Envoy.start(FrontDoor(
            captioners=(servers[CAPTIONER].target,), animators=(servers[ANIMATOR].target,), health_interval_s=0.25)))

    def logged(self, name: str, request_id: str) -> dict[str, Any]:
        (line,) = [entry["rpc"] for entry in self.logs[name] if entry.get("rpc", {}).get("request_id") == request_id]
        return line


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    servicer.endpoint = f"http://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield servicer
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def caller() -> Iterator[InMemorySpanExporter]:
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


@pytest.fixture(scope="module")
def fleet(tiny_caption_model: str, collector: Collector) -> Iterator[TracedFleet]:
    tiny.ensure_model("tiny")
    with contextlib.ExitStack() as stack:
        yield TracedFleet(stack, tiny_caption_model, collector.endpoint)


def traced(caller: InMemorySpanExporter, collector: Collector, method: str, phases: set[str]) -> tuple[Any, dict]:
    """The caller's span of its (one) call of ``method``, and the spans of its trace once ``phases`` and the
    server's span of the call arrived (the server's span ends after its phases, so it may be exported later)."""
    (span,) = [span for span in caller.get_finished_spans() if span.name.endswith(method)]
    wanted = {*phases, span.name}
    poll_until(lambda: wanted <= set(collector.of_trace(span.context.trace_id)), what=f"the spans of {method}")
    return span, collector.of_trace(span.context.trace_id)


def test_a_caption_through_envoy_is_one_trace(fleet: TracedFleet, collector: Collector,
                                              caller: InMemorySpanExporter) -> None:
    with CaptionClient(fleet.envoy.target, health_check=False) as client:
        client.caption(IMAGE, request_id="traced-1")
    client_span, found = traced(caller, collector, "CaptionService/Caption", {"caption.queue_wait", "caption.batch"})
    server = found["/imagewire.caption.v1.CaptionService/Caption"]
    # Envoy forwarded the caller's context: the server's span is the caller's span's child.
    assert int.from_bytes(server.parent_span_id, "big") == client_span.context.span_id
    for name in ("caption.decode_image", "caption.queue_wait", "caption.batch"):
        assert found[name].parent_span_id == server.span_id
    batch = {item.key: item.value for item in found["caption.batch"].attributes}
    assert batch["batch_size"].int_value == 1
    # Health checks are not traced.
    assert not [span for span in collector.spans if "Health" in span.name]
    # The request id and the trace id are in the replica's log line and Envoy's access log.
    trace_id = f"{client_span.context.trace_id:032x}"
    assert fleet.logged(CAPTIONER, "traced-1")["trace_id"] == trace_id
    poll_until(lambda: any('"traced-1"' in line for line in fleet.envoy.access_log()), what="Envoy's access log")
    (entry,) = [json.loads(text) for text in fleet.envoy.access_log() if '"traced-1"' in text]
    assert trace_id in entry["traceparent"]


def test_a_video_through_envoy_is_one_trace_of_its_phases(fleet: TracedFleet, collector: Collector,
                                                          caller: InMemorySpanExporter) -> None:
    with AnimateClient(fleet.envoy.target, health_check=False) as client:
        events = list(client.animate(IMAGE, request_id="traced-2", width=64, height=64, num_frames=4,
                                     num_inference_steps=2))
    assert isinstance(events[-1], AnimateResult)
    phases = {"animate.queue_wait", "animate.denoise", "animate.video_encode"}
    client_span, found = traced(caller, collector, "AnimateService/Animate", phases)
    server = found["/imagewire.animate.v1.AnimateService/Animate"]
    assert int.from_bytes(server.parent_span_id, "big") == client_span.context.span_id
    spans = sorted((found[name] for name in phases), key=lambda span: span.start_time_unix_nano)
    assert [span.name for span in spans] == ["animate.queue_wait", "animate.denoise", "animate.video_encode"]
    assert all(span.parent_span_id == server.span_id for span in spans)
    assert fleet.logged(ANIMATOR, "traced-2")["trace_id"] == f"{client_span.context.trace_id:032x}"
