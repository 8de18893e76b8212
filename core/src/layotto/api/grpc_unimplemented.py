"""Services the sidecar knows by name but does not implement yet: every RPC is present and
answers UNIMPLEMENTED, built from the generated service index so their (large) message
modules are never imported. The handler never reads the request, so it needs no types."""

from __future__ import annotations

from typing import Any

import grpclib.const
from grpclib import GRPCError
from grpclib.const import Cardinality, Status

from layotto._proto.service_index import SERVICES

_CARDINALITY = {
    (False, False): Cardinality.UNARY_UNARY,
    (False, True): Cardinality.UNARY_STREAM,
    (True, False): Cardinality.STREAM_UNARY,
    (True, True): Cardinality.STREAM_STREAM,
}


async def _unimplemented(stream: Any) -> None:
    raise GRPCError(Status.UNIMPLEMENTED)  # the call guard words the message


class UnimplementedService:
    def __init__(self, full_name: str) -> None:
        if full_name not in SERVICES:
            raise KeyError(f"no service {full_name} in the generated service index")
        self.full_name = full_name

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            f"/{self.full_name}/{method}": grpclib.const.Handler(
                _unimplemented, _CARDINALITY[shape], None, None
            )
            for method, shape in SERVICES[self.full_name].items()
        }
