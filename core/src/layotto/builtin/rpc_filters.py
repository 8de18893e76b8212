"""Built-in InvokeService filters.

`rpcfilter.dubbo_json_rpc` (Layotto's): turns a call into Dubbo's JSON-RPC over HTTP for a
mesh that speaks Dubbo: `x-services = <app id>`, `x-method = <method>`, JSON content type and
accept, and the request path becomes the app id.
"""

from __future__ import annotations

from layotto.plugin import Component, ComponentContext, ComponentMetadata
from layotto.plugin.rpc import InvokeFilter, RpcRequest

JSON = "application/json"


class DubboJsonRpcMetadata(ComponentMetadata):
    pass


class DubboJsonRpcFilter(InvokeFilter):
    @classmethod
    def create(cls, metadata: DubboJsonRpcMetadata, context: ComponentContext) -> Component:
        return cls()

    async def before(self, request: RpcRequest) -> RpcRequest:
        headers = {
            **request.headers,
            "x-services": request.app_id,
            "x-method": request.method,
            "content-type": JSON,
            "accept": JSON,
        }
        return request.with_(method=request.app_id, headers=headers, content_type=JSON)
