"""The served captioners the load generator drives: the gRPC captioner and the HTTP baseline, behind one Protocol."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Protocol

from bench.caption.stats import Reply


class Target(Protocol):
    """A served captioner the load generator can drive."""

    name: str
    # The dtype its model runs in: in-process calls in the same dtype are its reference.
    dtype: str

    async def send(self, image: bytes) -> Reply:
        """Caption one encoded image; raises on any failure."""
        ...

    def server_times(self) -> dict[str, tuple[float, float]]:
        """Request id -> (queue seconds, model seconds) as the server measured them."""
        ...

    async def close(self) -> None:
        """Close the client's connections."""
        ...


class GrpcTarget:
    """The captioner through the typed asyncio client, one channel for every caller (HTTP/2 multiplexes them)."""

    def __init__(self, name: str, address: str, max_new_tokens: int, server_log: Sequence[str], *,
                 health_check: bool = True) -> None:
        """``server_log``: the server's stderr lines so far (it runs with ``--log-format json``), kept growing.
        ``address`` may be any gRPC target (several replicas, or a proxy: then ``health_check`` False)."""
        from imagewire.client import AsyncCaptionClient

        self.name = name
        self.dtype = ""  # read from ListModels by connect()
        self.compiled_parts: tuple[str, ...] = ()  # for every batch
        self.lone_parts: tuple[str, ...] = ()  # for a batch of one, where the same copy runs it
        self._client = AsyncCaptionClient(address, timeout=3600, health_check=health_check)
        self._max_new_tokens = max_new_tokens
        self._server_log = server_log

    async def connect(self) -> str:
        """Ask the server which dtype its model runs in (what --dtype auto chose); returns it."""
        models = await self._client.list_models()
        info = models.models[0]
        self.dtype = info.dtype
        self.compiled_parts = tuple(info.compiled_parts)
        self.lone_parts = next((tuple(r.compiled_parts) for r in info.batch_ranges
                                if r.first_batch_size == 1 and r.dtype == self.dtype), self.compiled_parts)
        return self.dtype

    async def send(self, image: bytes) -> Reply:
        request_id = uuid.uuid4().hex
        caption = await self._client.caption(image, max_new_tokens=self._max_new_tokens, request_id=request_id)
        return Reply(request_id, caption.batch_size)

    def server_times(self) -> dict[str, tuple[float, float]]:
        # The server writes one JSON log line per RPC with its queue and model time; parsed only when asked, so
        # the parsing never competes with the load generator during a measurement.
        times: dict[str, tuple[float, float]] = {}
        for line in list(self._server_log):
            if not line.startswith("{"):
                continue
            rpc = json.loads(line).get("rpc")
            if isinstance(rpc, dict) and "compute_ms" in rpc:
                times[rpc["request_id"]] = (rpc["queue_ms"] / 1000, rpc["compute_ms"] / 1000)
        return times

    async def close(self) -> None:
        await self._client.close()


class HttpTarget:
    """The baseline through httpx with a connection per caller, as a multipart form."""

    name = "http"
    dtype = "float32"  # the reference runs float32

    def __init__(self, address: str, max_new_tokens: int, connections: int) -> None:
        import httpx

        from bench.http_baseline import COMPUTE_HEADER

        self._compute_header = COMPUTE_HEADER
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = httpx.AsyncClient(base_url=f"http://{address}", timeout=3600, limits=limits)
        self._max_new_tokens = str(max_new_tokens)
        self._times: dict[str, tuple[float, float]] = {}

    async def send(self, image: bytes) -> Reply:
        response = await self._client.post(
            "/image-to-text",
            files={"image": ("image.png", image, "image/png")},
            data={"max_new_tokens": self._max_new_tokens},
        )
        response.raise_for_status()
        if not isinstance(response.json().get("text"), str):
            raise ValueError(f"malformed answer: {response.text[:200]}")
        request_id = uuid.uuid4().hex
        compute_ms = response.headers.get(self._compute_header)  # so its transport overhead can be isolated
        if compute_ms is not None:
            self._times[request_id] = (0.0, float(compute_ms) / 1000)
        return Reply(request_id)

    def server_times(self) -> dict[str, tuple[float, float]]:
        return self._times

    async def close(self) -> None:
        await self._client.aclose()
