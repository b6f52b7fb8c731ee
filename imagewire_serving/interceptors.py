"""The interceptor every RPC of both services passes through.

For each call it: checks the bearer token (health checks stay open for probes), binds the call record with
the client's request id, maps errors to gRPC statuses through status.py, counts and times the call, and writes
one structured log line (with the trace id when tracing is on). Request bytes that do not parse as the method's
message (garbage, a truncated message, invalid UTF-8 in a string field) are answered INVALID_ARGUMENT, on every
method, health and reflection included: gRPC itself would answer UNKNOWN, naming a Python exception.

Response headers go out with the first response, never before: a client (and Envoy) commits to an attempt when
headers arrive, so a call that fails before answering (UNAVAILABLE while loading or draining, or a replica that
died) reaches the caller as a trailers-only error, which its retry policy may send to another replica. So the
request id is echoed in the trailers of every call (a unary answer's headers, message and trailers leave
together), and in the headers of a stream, which go out with its first response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from imagewire_serving import calls, status, tracing
from imagewire_serving.errors import InvalidArgument, ServingError, Unavailable
from imagewire_serving.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
_MAX_REQUEST_ID = 128


class ServingInterceptor(grpc.aio.ServerInterceptor):
    """Auth, request ids, error mapping, metrics and access logging for unary and server-streaming RPCs."""

    def __init__(self, metrics: Metrics, *, auth_token: str | None = None) -> None:
        self._metrics = metrics
        self._expected_auth = f"Bearer {auth_token}".encode() if auth_token else None
        self._refusing = False
        # When the latest call (health checks aside) arrived: a draining server waits until they stop coming.
        self.last_call = time.monotonic()

    def refuse_new_calls(self) -> None:
        """From now on answer every new call UNAVAILABLE before it reaches a servicer (a draining server): the
        answer is trailers-only, so the caller's retry policy (or Envoy's) sends the call to another replica."""
        self._refusing = True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return None
        handler = _parsing_checked(handler, details.method)
        if details.method.startswith(HEALTH_PREFIX):
            return handler
        self.last_call = time.monotonic()
        metadata = {key: value for key, value in (details.invocation_metadata or ())}
        authorised = self._authorised(metadata.get("authorization"))
        request_id = _request_id(metadata.get(REQUEST_ID_KEY))
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, details.method, request_id, authorised),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, details.method, request_id, authorised),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if not authorised and handler.stream_stream is not None:
            # Reflection is a bidirectional stream: guard it with the token, nothing more.
            return grpc.stream_stream_rpc_method_handler(
                _reject_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _authorised(self, header: Any) -> bool:
        if self._expected_auth is None:
            return True
        given = header.encode() if isinstance(header, str) else b""
        return hmac.compare_digest(given, self._expected_auth)

    def _wrap_unary(self, behaviour: Any, method: str, request_id: str, authorised: bool) -> Any:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with self._call(method, request_id, authorised, context):
                return await behaviour(_parsed(request), context)

        return unary

    def _wrap_stream(self, behaviour: Any, method: str, request_id: str, authorised: bool) -> Any:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with self._call(method, request_id, authorised, context) as send_headers:
                async for response in behaviour(_parsed(request), context):
                    await send_headers()
                    yield response

        return stream

    @contextlib.asynccontextmanager
    async def _call(
        self, method: str, request_id: str, authorised: bool, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """The scope of one RPC: auth, the call record, error mapping, metrics and the log line. Yields the
        function a stream calls before each response: it sends the response headers, once."""
        record = self._open(method, request_id, context)
        calls.bind(record)
        code = grpc.StatusCode.OK
        echo = ((REQUEST_ID_KEY, request_id),)
        sent = False

        async def send_headers() -> None:
            nonlocal sent
            if not sent:
                sent = True
                await context.send_initial_metadata(echo)

        context.set_trailing_metadata(echo)
        try:
            if not authorised:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token", echo)
            if self._refusing:
                raise Unavailable("the server is shutting down; the call was not started")
            yield send_headers
        except ServingError as error:
            code = status.code_of(error)
            await context.abort_with_status(status.to_status(error, echo))
        except grpc.aio.AbortError:
            code = _aborted_code(context)  # the servicer (or the auth check above) chose the status
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # grpc cancels the handler both when the caller goes away and when its deadline passes: say which.
            expired = calls.deadline_passed(context.time_remaining())
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception as error:
            code = grpc.StatusCode.INTERNAL
            _LOGGER.exception("internal error in %s (request %s)", method, request_id)
            await context.abort_with_status(status.to_status(error, echo))
        finally:
            self._close(record, code)

    def _open(self, method: str, request_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> calls.CallRecord:
        self._metrics.inflight.labels(method).inc()
        return calls.CallRecord(method=method, request_id=request_id, peer=context.peer())

    def _close(self, record: calls.CallRecord, code: grpc.StatusCode) -> None:
        elapsed = record.elapsed()
        trace_id = tracing.finish_call(code)
        if trace_id is not None:
            record.annotate(trace_id=trace_id)
        self._metrics.inflight.labels(record.method).dec()
        self._metrics.requests.labels(record.method, code.name).inc()
        self._metrics.request_duration.labels(record.method).observe(elapsed)
        _LOGGER.info(
            "rpc %s %s %.1fms",
            record.method,
            code.name,
            elapsed * 1000,
            extra={
                "rpc": {
                    "method": record.method,
                    "code": code.name,
                    "request_id": record.request_id,
                    "peer": record.peer,
                    "duration_ms": round(elapsed * 1000, 3),
                    **record.fields,
                }
            },
        )


class _Malformed:
    """Request bytes that did not parse. A deserializer cannot choose the call's status (gRPC answers whatever it
    raises UNKNOWN), so it hands this on and the handler refuses it."""

    def __init__(self, method: str, error: DecodeError) -> None:
        self.error = InvalidArgument(f"the request is not a valid message for {method}: {error}")


def _parsed(request: Any) -> Any:
    """``request``, or InvalidArgument if its bytes did not parse."""
    if isinstance(request, _Malformed):
        raise request.error
    return request


def _parsing_checked(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with a deserializer that hands on unparsable bytes as a :class:`_Malformed` request. The
    serving interceptor's own wrappers refuse it inside the call's scope (logged and counted); the methods it
    does not wrap (health, reflection) are refused here."""
    deserialize = handler.request_deserializer
    if deserialize is None:
        return handler

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as error:
            return _Malformed(method, error)

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if isinstance(request, _Malformed):
            await context.abort_with_status(status.to_status(request.error))

    def checked(behaviour: Any) -> Any:
        # A stream's behaviour is an async generator, or a coroutine writing with context.write (health's Watch).
        if inspect.isasyncgenfunction(behaviour):
            async def generator(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await refuse(request, context)
                async for response in behaviour(request, context):
                    yield response

            return generator

        async def coroutine(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await refuse(request, context)
            return await behaviour(request, context)

        return coroutine

    def each_checked(behaviour: Any) -> Any:
        async def streams(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async def parsed() -> AsyncIterator[Any]:
                async for request in requests:
                    await refuse(request, context)
                    yield request

            async for response in behaviour(parsed(), context):
                yield response

        return streams

    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(checked(handler.unary_unary), tolerant, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(checked(handler.unary_stream), tolerant, serialize)
    if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
        return grpc.stream_stream_rpc_method_handler(each_checked(handler.stream_stream), tolerant, serialize)
    return handler


def _aborted_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


async def _reject_stream(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


def _request_id(given: Any) -> str:
    """Echo a sane client-supplied id; otherwise make one (never trust arbitrary lengths into logs)."""
    if isinstance(given, str) and 0 < len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return uuid.uuid4().hex
