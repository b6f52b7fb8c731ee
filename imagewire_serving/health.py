"""grpc.health.v1.Health with readiness, and Watch streams that close when the server drains.

The stock asyncio servicer keeps Watch streams open forever, so a load balancer watching health would hold
every graceful shutdown for the whole grace period. Here draining sends NOT_SERVING to every watcher and then
ends its stream, leaving only real work for the grace period.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

# A value of health_pb2.HealthCheckResponse.ServingStatus (typed as a plain int by the stubs).
ServingStatus: TypeAlias = int
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._statuses: dict[str, ServingStatus] = {}
        self._changed = asyncio.Condition()
        self._draining = False

    async def Check(  # noqa: N802 - gRPC method name
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802 - gRPC method name
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    ) -> None:
        sent: ServingStatus | None = None
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    # A default binds this round's status; mypy cannot infer a lambda's default-argument type.
                    lambda last=sent: self._current(request.service) != last or self._draining  # type: ignore[misc]
                )
                status, draining = self._current(request.service), self._draining
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if draining:
                return

    def _current(self, service: str) -> ServingStatus:
        return self._statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)

    async def set(self, service: str, status: ServingStatus) -> None:
        """Set one service's status ("" is the whole server); ignored once draining."""
        async with self._changed:
            if not self._draining:
                self._statuses[service] = status
                self._changed.notify_all()

    async def drain(self) -> None:
        """Report NOT_SERVING for everything, for good, and let Watch streams finish."""
        async with self._changed:
            self._draining = True
            for service in self._statuses:
                self._statuses[service] = NOT_SERVING
            self._changed.notify_all()
