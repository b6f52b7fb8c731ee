"""The blocking and asyncio shells: a channel, a stub, and the I/O of sending a :class:`PreparedCall`.

Each typed client subclasses one of them, names its core and stub types, and defines its methods as one
line each: ask the core for a prepared call, send it with ``_unary`` or ``_stream``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

import grpc
import grpc.aio

from imagewire.client._channel import DEFAULT_MAX_ATTEMPTS, TlsConfig, aio_channel, sync_channel
from imagewire.client._core import PreparedCall, Received, ServiceCore

CoreT = TypeVar("CoreT", bound=ServiceCore)
ResultT = TypeVar("ResultT")


class _Shell(Generic[CoreT]):
    """The constructor every client shares.

    ``target`` is any gRPC target string (``host:port``, ``dns:///name:port``, ``ipv4:a:p,b:p``).
    ``timeout`` is the default deadline in seconds of the service's main call, ``control_timeout`` that of
    ListModels (see :class:`imagewire.client.ServiceCore`); every method also takes its own ``timeout``.
    ``auth_token`` is sent as a bearer token, ``metadata`` with every call; ``tls`` None means plaintext.
    ``max_attempts`` (1 to 5, default 5) bounds each call's attempts: calls that meet an unavailable replica
    (loading, draining, gone) are retried on another; 1 turns retries off. Calls spread over every address the
    target resolves to (round_robin), skipping replicas whose health check is not SERVING; ``health_check``
    False stops those checks (for a target that is a proxy checking the replicas itself, such as Envoy).
    Failed calls raise :class:`imagewire.client.ImagewireError`.
    """

    _core_type: ClassVar[type[ServiceCore]]
    # A class, not a Callable: mypy would bind a Callable class attribute as a method.
    _stub_type: ClassVar[type[Any]]

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        control_timeout: float | None = None,
        auth_token: str | None = None,
        tls: TlsConfig | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        health_check: bool = True,
    ) -> None:
        # A ClassVar cannot name CoreT, so _core_type is typed as the base; each subclass pairs them.
        self._core: CoreT = self._core_type(  # type: ignore[assignment]
            timeout=timeout, control_timeout=control_timeout, auth_token=auth_token, metadata=metadata,
            max_attempts=max_attempts, health_check=health_check,
        )
        self.target = target
        self._channel = self._open(target, tls)
        self._stub = self._stub_type(self._channel)
        # The stream being read (blocking shells): what interrupting a download cancels.
        self._in_flight: Any = None

    @property
    def timeout(self) -> float:
        """The default deadline of the service's main call, in seconds."""
        return self._core.timeout

    @property
    def control_timeout(self) -> float:
        """The default deadline of the control calls (ListModels), in seconds."""
        return self._core.control_timeout

    def _open(self, target: str, tls: TlsConfig | None) -> Any:
        raise NotImplementedError


class BlockingShell(_Shell[CoreT]):
    """Base of the blocking clients; a context manager that closes the channel."""

    def _open(self, target: str, tls: TlsConfig | None) -> grpc.Channel:
        return sync_channel(target, self._core.balancing, tls)

    def _unary(self, method: Callable[..., Any], call: PreparedCall[ResultT]) -> ResultT:
        with call.options.raising():
            return call.decode(call.start(method))

    def _stream(self, method: Callable[..., Any], call: PreparedCall[ResultT]) -> Iterator[ResultT]:
        rpc = self._in_flight = call.start(method)
        received = Received()
        try:
            with call.options.raising(received):
                for response in rpc:
                    yield call.count(received, call.decode(response))
        finally:
            # A no-op after a complete stream; stops the server's work if the caller left early. A call wrapped by
            # OpenTelemetry's instrumentation is a generator instead: closing it drops the call, and gRPC cancels
            # a call nobody holds.
            (rpc.cancel if hasattr(rpc, "cancel") else rpc.close)()
            if self._in_flight is rpc:
                self._in_flight = None

    def close(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncShell(_Shell[CoreT]):
    """Base of the asyncio clients; an async context manager that closes the channel."""

    def _open(self, target: str, tls: TlsConfig | None) -> grpc.aio.Channel:
        return aio_channel(target, self._core.balancing, tls)

    async def _unary(self, method: Callable[..., Any], call: PreparedCall[ResultT]) -> ResultT:
        with call.options.raising():
            return call.decode(await call.start(method))

    async def _stream(self, method: Callable[..., Any], call: PreparedCall[ResultT]) -> AsyncGenerator[ResultT, None]:
        rpc = call.start(method)
        received = Received()
        try:
            with call.options.raising(received):
                async for response in rpc:
                    yield call.count(received, call.decode(response))
        finally:
            rpc.cancel()

    async def close(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
