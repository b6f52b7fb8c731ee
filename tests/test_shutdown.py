"""SIGTERM while a video is streaming: the stream finishes, new calls are refused, the process exits 0."""

from __future__ import annotations

import signal
from pathlib import Path

import av
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagewire.client import AnimateClient, AnimateResult, ImagewireError, Progress, VideoSink

from imagewire_serving.launcher import launch
from tests.support import script, solid


def test_sigterm_during_an_animate_stream_lets_it_finish_and_exits_zero(tmp_path: Path) -> None:
    command = [script("imagewire-animator"), "--grace", "120"]
    with launch(command, name="imagewire-animator") as server, AnimateClient(server.target) as client:
        sink = VideoSink(tmp_path / "out.mp4")
        result = None
        signalled = False
        for event in client.animate(solid(), width=64, height=64, num_frames=6, num_inference_steps=12, seed=5):
            if isinstance(event, Progress) and not signalled:
                with grpc.insecure_channel(server.target) as channel:
                    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
                    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                    server.process.send_signal(signal.SIGTERM)
                    signalled = True
                    # Watchers hear NOT_SERVING once draining has begun.
                    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
                # Draining: a new call is refused, the one in flight goes on.
                with AnimateClient(server.target, timeout=10) as late, pytest.raises(ImagewireError) as caught:
                    list(late.animate(solid(), width=64, height=64, num_frames=2, num_inference_steps=1))
                assert caught.value.code is grpc.StatusCode.UNAVAILABLE
            result = sink.feed(event) or result
        assert signalled and isinstance(result, AnimateResult)
        assert server.process.wait(timeout=60) == 0
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
