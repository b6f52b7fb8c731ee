"""Bug 7 of issue 24: eight concurrent 280 KB PNGs of 6000 x 6000 16-bit RGBA pixels (36 MP, within the limits)
took a captioner from 0.4 to 4.2 GB and it kept 2.9 GB. Decoding now shares one memory budget, a decoded image is
reduced to what models look at, and the memory goes back to the system: the peak stays under the documented
bound (docs/scaling.md: idle + the decode budget + the model's working memory), and the process returns to within
20% of its idle size within 10 s."""

from __future__ import annotations

import concurrent.futures
import struct
import threading
import time
import zlib

import grpc
import psutil
from imagewire.caption.v1 import caption_pb2, caption_pb2_grpc

from imagewire_serving.images import DECODE_BUDGET_BYTES
from imagewire_serving.launcher import launch
from tests.support import script, solid

# What the model's batch of eight (reduced) images takes besides the decodes: the processors' float arrays.
MODEL_WORKING_BYTES = 640 * 2**20


def huge_png(side: int = 6000) -> bytes:
    """A ``side`` x ``side`` 16-bit RGBA PNG, black and transparent: a few hundred KB encoded."""
    rows = b"".join(b"\0" + bytes(side * 8) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def test_eight_huge_images_at_once_stay_within_the_budget_and_memory_returns() -> None:
    image = huge_png()
    assert len(image) < 400_000
    with launch([script("imagewire-captioner")], name="imagewire-captioner") as server:
        process = psutil.Process(server.process.pid)
        with grpc.insecure_channel(server.target) as channel:  # a first call's one-time allocations count as idle
            caption_pb2_grpc.CaptionServiceStub(channel).Caption(caption_pb2.CaptionRequest(image=solid()), timeout=60)
        time.sleep(2.0)
        idle = process.memory_info().rss
        peak, sampling = [idle], threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            options = [("grpc.max_send_message_length", 64 * 2**20)]
            with grpc.insecure_channel(server.target, options=options) as channel:
                stub = caption_pb2_grpc.CaptionServiceStub(channel)
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    replies = list(pool.map(lambda _: stub.Caption(caption_pb2.CaptionRequest(image=image),
                                                                   timeout=240), range(8)))
        finally:
            sampling.set()
            sampler.join()
        assert all(reply.text for reply in replies)
        assert all(reply.usage.input_pixels == 36_000_000 for reply in replies)  # counted as sent
        assert peak[0] - idle < DECODE_BUDGET_BYTES + MODEL_WORKING_BYTES, (idle / 2**20, peak[0] / 2**20)
        settled = time.monotonic() + 10.0
        while process.memory_info().rss > 1.2 * idle:
            assert time.monotonic() < settled, (idle / 2**20, process.memory_info().rss / 2**20)
            time.sleep(0.5)
