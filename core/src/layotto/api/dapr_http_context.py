"""What every Dapr HTTP endpoint shares: the building blocks, the call gate, and the guard that
admits a call through the gate and turns its errors into daprd's answers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from layotto.api.gate import CallGate
from layotto.api.grpc_services import ApiServices
from layotto.api.http_errors import HttpError, error_body, from_layotto
from layotto.errors import LayottoError

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class ConfigUpdates(Protocol):
    """Who delivers configuration updates to the app (`actors.config_pusher`)."""

    async def subscribe(
        self, store: str, keys: Sequence[str], metadata: Mapping[str, str]
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class DaprHttpContext:
    services: ApiServices
    gate: CallGate
    app_id: str
    set_metadata: Callable[[str, str], None]  # PUT /v1.0/metadata/{key}
    shutdown: Callable[[], None]  # POST /v1.0/shutdown: begin the graceful shutdown
    # GET /v1.0/configuration/{store}/subscribe: None without an app channel (no app port).
    config_updates: ConfigUpdates | None = None

    def guarded(self, endpoint: Endpoint) -> Endpoint:
        """`endpoint` as an API call: counted by the gate (so the drain waits for it, and a
        call arriving while draining is answered 503), its errors answered as daprd does."""

        async def guarded(request: Request) -> Response:
            try:
                async with self.gate.call():
                    return await endpoint(request)
            except HttpError as err:
                return err.response()
            except LayottoError as err:
                return from_layotto(err).response()
            except Exception:
                log.exception("unexpected error in %s %s", request.method, request.url.path)
                return JSONResponse(error_body("ERR_INTERNAL", "internal error"), status_code=500)

        return guarded
