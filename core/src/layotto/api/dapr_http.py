"""Dapr's HTTP API (`/v1.0/...`) on the sidecar's HTTP port: one module per building block,
all on the same services as the gRPC surfaces (dapr-compat.md sections 4, 5, 8)."""

from __future__ import annotations

from starlette.routing import Route

from layotto.api import (
    dapr_http_bindings,
    dapr_http_config,
    dapr_http_lock,
    dapr_http_pubsub,
    dapr_http_runtime,
    dapr_http_secrets,
    dapr_http_state,
)
from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_invoke import InvokeRoutes


def dapr_routes(ctx: DaprHttpContext) -> list[Route]:
    """Every Dapr API route; `fallback_route` goes after all the others."""
    return [
        *dapr_http_state.routes(ctx),
        *dapr_http_pubsub.routes(ctx),
        *InvokeRoutes(ctx).routes(),
        *dapr_http_config.routes(ctx),
        *dapr_http_lock.routes(ctx),
        *dapr_http_secrets.routes(ctx),
        *dapr_http_bindings.routes(ctx),
        *dapr_http_runtime.routes(ctx),
    ]


def fallback_route(ctx: DaprHttpContext) -> Route:
    """Any other path: an invocation when it carries `dapr-app-id` (daprd's fallback route),
    else 404 `ERR_DIRECT_INVOKE`."""
    return InvokeRoutes(ctx).fallback()
