"""grpc.health.v1.Health, fed from readiness: SERVING exactly when readiness is UP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import anyio
from grpclib import GRPCError
from grpclib.const import Status

from layotto._proto.grpc.health import v1 as pb

_SERVING = pb.HealthCheckResponseServingStatus.SERVING
_NOT_SERVING = pb.HealthCheckResponseServingStatus.NOT_SERVING


class HealthService(pb.HealthBase):
    def __init__(self, services: Iterable[str], stopping: anyio.Event) -> None:
        self._services = frozenset({"", *services})  # "" = the server as a whole
        self._serving = False
        self._changed = anyio.Event()
        self._stopping = stopping  # Watch streams end when the sidecar starts draining

    def set_serving(self, serving: bool) -> None:
        if serving != self._serving:
            self._serving = serving
            self._changed.set()
            self._changed = anyio.Event()

    def _status(self) -> pb.HealthCheckResponseServingStatus:
        return _SERVING if self._serving else _NOT_SERVING

    async def check(self, message: pb.HealthCheckRequest) -> pb.HealthCheckResponse:
        if message.service not in self._services:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {message.service!r}")
        return pb.HealthCheckResponse(status=self._status())

    async def list(self, message: pb.HealthListRequest) -> pb.HealthListResponse:
        return pb.HealthListResponse(
            statuses={s: pb.HealthCheckResponse(status=self._status()) for s in self._services}
        )

    async def watch(self, message: pb.HealthCheckRequest) -> AsyncIterator[pb.HealthCheckResponse]:
        if message.service not in self._services:
            yield pb.HealthCheckResponse(status=pb.HealthCheckResponseServingStatus.SERVICE_UNKNOWN)
            return
        while True:
            yield pb.HealthCheckResponse(status=self._status())
            changed = self._changed
            async with anyio.create_task_group() as tg:

                async def end_on_stop() -> None:
                    await self._stopping.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(end_on_stop)
                await changed.wait()
                tg.cancel_scope.cancel()
            if self._stopping.is_set():
                yield pb.HealthCheckResponse(status=_NOT_SERVING)
                return
