"""A TCP proxy on loopback that a test can kill (every connection reset at once, the port closed) and restart on
the same port: a real connection drop between a client and a server, with neither of them told."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator


class TcpProxy:
    """Forwards each connection to ``127.0.0.1:<upstream_port>``; counts the bytes sent back to clients."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0
        self.bytes_to_clients = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (on the port of the last start, or a free one the first time)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def kill(self) -> None:
        """Stop listening and reset every open connection, both sides, mid-stream."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close with a reset (RST), as a crashed peer would
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()
        self._writers.clear()
        for pump in list(self._pumps):
            pump.cancel()

    async def close(self) -> None:
        self.kill()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, upstream_writer))
        pumps = [asyncio.create_task(self._pump(reader, upstream_writer, to_client=False)),
                 asyncio.create_task(self._pump(upstream_reader, writer, to_client=True))]
        self._pumps.update(pumps)
        for pump in pumps:
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_client: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                if to_client:
                    self.bytes_to_clients += len(data)
        writer.transport.abort()
        self._writers.discard(writer)


@contextlib.asynccontextmanager
async def tcp_proxy(upstream_port: int) -> AsyncIterator[TcpProxy]:
    """A started proxy to a loopback port, closed on exit."""
    proxy = TcpProxy(upstream_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
