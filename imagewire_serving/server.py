"""The server lifecycle both services share: bind, health, reflection, load, serve, drain, exit.

Health goes NOT_SERVING -> SERVING once the app's models are loaded and warmed, and back to NOT_SERVING
when draining. On SIGTERM/SIGINT, in this order: every health status turns NOT_SERVING (health watchers, such as
clients with client-side health checking, hear it at once and their Watch streams end; Envoy at its next health
check); late calls, from callers that have not heard yet, are answered UNAVAILABLE before they start, which the
callers' retry policies (and Envoy's) send to another replica; once no call has come for half a second (at most
``--drain-window``), gRPC sends GOAWAY on every connection and closes the listening socket (a call that still
races it is refused, and retried); the calls in flight finish within ``--grace`` (counted from the signal); the
process exits 0. Closing the port at once instead would let gRPC cancel the calls it had received but not yet
started, with a CANCELLED that no retry policy retries.

Connections are aged (``--max-connection-age``): a GOAWAY makes clients reconnect, and re-resolve a ``dns:///``
target, so callers spread onto replicas started after they connected; calls in flight on an aged connection go
on to their end.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from imagewire.limits import MAX_IMAGE_BYTES, MAX_REQUEST_OVERHEAD_BYTES

from imagewire_serving import logs, tracing
from imagewire_serving.announce import listening_line, ready_line
from imagewire_serving.errors import ServingError
from imagewire_serving.health import HealthServicer
from imagewire_serving.interceptors import ServingInterceptor
from imagewire_serving.metrics import Metrics
from imagewire_serving.settings import ServerSettings

_LOGGER = logging.getLogger(__name__)

# Room for the largest image plus the rest of the request message.
MAX_RECEIVE_BYTES = MAX_IMAGE_BYTES + MAX_REQUEST_OVERHEAD_BYTES
# Responses are captions and <= 1 MiB video chunks.
MAX_SEND_BYTES = 4 * 1024 * 1024
OVERALL = ""
# A draining server closes its port once no call came for this long.
LATE_CALL_QUIET_S = 0.5
_QUIET_POLL_S = 0.05


class StartupError(Exception):
    """The server cannot serve what it was given (a busy port, a missing model, no such device): said in one
    line naming the flag or the cause, and the process exits with status 2."""


class App(Protocol):
    """What a service plugs into the runtime."""

    @property
    def service_names(self) -> tuple[str, ...]:
        """The gRPC services it registers, by full name (health and reflection report them)."""
        ...

    def register(self, server: grpc.aio.Server) -> None:
        """Add the service's servicers to the server."""

    async def load(self) -> None:
        """Load and warm up the models; the server reports SERVING after this returns."""

    async def close(self) -> None:
        """Stop background workers; called after the server has drained."""


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Accept client pings as often as every 10 s (the client sends them every 30 s during long streams).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC's default SO_REUSEPORT lets a second server bind a busy port and silently take part of its calls.
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age_s:
        # gRPC adds +-10% jitter, so a fleet's connections do not all move at once. Without a grace (gRPC's own
        # default) an aged connection stays open until its last call ends, however long a video takes.
        options.append(("grpc.max_connection_age_ms", round(settings.max_connection_age_s * 1000)))
        if settings.max_connection_age_grace_s:
            options.append(("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_s * 1000)))
    return options


class GrpcServer:
    """One gRPC server process hosting one App, with health, reflection and the serving interceptor."""

    def __init__(self, settings: ServerSettings, app: App, *, metrics: Metrics,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        self.settings = settings
        self._serving = ServingInterceptor(metrics, auth_token=settings.auth_token)
        # Outermost first: the tracing interceptor (when on) opens the call's span around everything else.
        self.interceptors = (*interceptors, self._serving)
        self.app = app
        self.metrics = metrics
        self.health = HealthServicer()
        self.port = 0
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start serving health (NOT_SERVING) and reflection; returns the bound port."""
        server = grpc.aio.server(
            interceptors=self.interceptors,
            options=server_options(self.settings),
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        self.app.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for name in (OVERALL, *self.app.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.reflection:
            names = (*self.app.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                     reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            self.port = server.add_secure_port(address, self._credentials()) if self.settings.tls else (
                server.add_insecure_port(address))
        except (RuntimeError, OSError) as error:
            raise StartupError(f"--port {self.settings.port}: cannot listen on {address}: {error}") from error
        if self.settings.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve_http(self.settings.host, self.settings.metrics_port)
            except OSError as error:
                raise StartupError(f"--metrics-port {self.settings.metrics_port}: {error.strerror}") from error
        await server.start()
        self._server = server
        return self.port

    def _credentials(self) -> grpc.ServerCredentials:
        s = self.settings
        assert s.tls_cert is not None and s.tls_key is not None
        return grpc.ssl_server_credentials(
            [(Path(s.tls_key).read_bytes(), Path(s.tls_cert).read_bytes())],
            root_certificates=Path(s.tls_client_ca).read_bytes() if s.tls_client_ca else None,
            require_client_auth=s.tls_client_ca is not None,
        )

    async def load(self) -> None:
        """Load and warm the app's models, then report SERVING."""
        await self.app.load()
        for name in (OVERALL, *self.app.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Drain within ``grace`` seconds (default ``--grace``): report NOT_SERVING, answer late calls UNAVAILABLE
        until callers have moved away, then GOAWAY and let the calls in flight finish; clean up."""
        deadline = time.monotonic() + (self.settings.grace_s if grace is None else grace)
        await self.health.drain()
        self._serving.refuse_new_calls()
        if self._server is not None:
            await self._until_calls_stop(min(deadline, time.monotonic() + self.settings.drain_window_s))
            await self._server.stop(max(0.0, deadline - time.monotonic()))
            self._server = None
        await self.app.close()
        self.metrics.close()

    async def _until_calls_stop(self, limit: float) -> None:
        """Keep the port open while calls still come (callers that have not yet heard NOT_SERVING: Envoy between
        two health checks, a client whose pick raced the news), up to ``limit``. gRPC's own shutdown would cancel
        the calls it had received but not yet started, which no retry policy retries; refused here, they are."""
        started = time.monotonic()
        while (now := time.monotonic()) < limit and now - max(started, self._serving.last_call) < LATE_CALL_QUIET_S:
            await asyncio.sleep(_QUIET_POLL_S)


async def serve(settings: ServerSettings, app: App, metrics: Metrics, *, name: str) -> int:
    """Run until SIGTERM/SIGINT: bind, announce, load, announce ready, drain on a signal. Returns 0."""
    server = GrpcServer(settings, app, metrics=metrics, interceptors=tracing.configure(settings.otlp_endpoint, name))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    _check_port_free(settings.host, settings.port)
    await server.start()
    _announce(listening_line(name, server.address))
    started = time.perf_counter()
    load = asyncio.create_task(server.load(), name="load")
    signalled = asyncio.create_task(stopping.wait(), name="signal")
    await asyncio.wait({load, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if load.done() and load.exception() is not None:
        signalled.cancel()
        await server.stop(0)
        raise StartupError(_cause(load.exception())) from load.exception()
    if load.done():
        _announce(ready_line(name, time.perf_counter() - started))
        await signalled
    else:
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
    _LOGGER.info("%s: signal received, draining for up to %.1fs", name, settings.grace_s)
    await server.stop()
    tracing.shutdown()
    _LOGGER.info("%s: stopped", name)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, in one line naming the flag (gRPC's own bind error is a C-core
    log line; SO_REUSEPORT is off in server_options, so gRPC would refuse too)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"--host {host}: {error.strerror}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: the connections of a server that just stopped on this port (TIME_WAIT) do not
            # keep its replacement out; a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                raise StartupError(f"--port {port}: cannot listen on {host}:{port}: {error.strerror}") from None


def _cause(error: BaseException | None) -> str:
    """One line for a failed start: the message of an error that names its flag, else the error's type too."""
    if isinstance(error, StartupError | ValueError | ServingError):
        return str(error)
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"loading the models failed: {type(error).__name__}: {first}"


def _announce(line: str) -> None:
    # Supervisors and tests read this from stdout to learn the bound port (with --port 0) and readiness; the log
    # (stderr) gets it at DEBUG only, so a terminal does not show every line twice.
    print(line, flush=True)
    _LOGGER.debug(line)


def run(settings: ServerSettings, app: App, metrics: Metrics, *, name: str) -> int:
    """The body of a server's main(): configure logging, serve until a signal; 2 when it cannot start."""
    logs.configure(settings.log_format, settings.log_level)
    try:
        return asyncio.run(serve(settings, app, metrics, name=name))
    except KeyboardInterrupt:
        return 0
    except StartupError as error:
        _LOGGER.debug("start-up failed", exc_info=error.__cause__ or error)
        return fail_startup(name, error)


def fail_startup(name: str, error: Exception) -> int:
    """Report a start-up error the way argparse does and return the exit status."""
    print(f"{name}: error: {error}", file=sys.stderr)
    return 2
