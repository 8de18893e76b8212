"""InvokeService's own logic (layotto-semantics.md §5), with a recording channel standing in for
the network: routing per app, filters, name resolution with round-robin and passive health,
the `rpc_target_address` and `rpc_request_timeout` headers, error passthrough. The channels
themselves are tested over real sockets in test_rpc_channels.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from layotto.builtin.name_resolvers import MeshResolver, StaticResolver, StaticResolverMetadata
from layotto.builtin.rpc_filters import DubboJsonRpcFilter
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig, RpcConfig
from layotto.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ErrorCategory,
    InvalidArgument,
    NotConfigured,
    PermissionDenied,
)
from layotto.plugin import ComponentSpec, Kind
from layotto.plugin.rpc import (
    InvokeFilter,
    RpcChannel,
    RpcRequest,
    RpcResponse,
    TargetError,
    TargetUnreachable,
)
from layotto.services.invoke import AddressPool, InvokeService, timeout_of

pytestmark = pytest.mark.anyio


class Recorder(RpcChannel):
    """Answers from `answers` (address -> response or exception), recording each call."""

    def __init__(self, answers: dict[str, Any] | None = None, delay: float = 0.0) -> None:
        self.answers = answers or {}
        self.delay = delay
        self.calls: list[tuple[str, RpcRequest]] = []

    async def invoke(self, request: RpcRequest, address: str) -> RpcResponse:
        self.calls.append((address, request))
        if self.delay:
            await anyio.sleep(self.delay)
        answer = self.answers.get(address, RpcResponse(data=f"from {address}".encode()))
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, RpcResponse)
        return answer


class Tag(InvokeFilter):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def before(self, request: RpcRequest) -> RpcRequest:
        self.log.append(f"before:{self.name}")
        return request.with_(headers={**request.headers, f"x-{self.name}": "1"})

    async def after(self, request: RpcRequest, response: RpcResponse) -> RpcResponse:
        self.log.append(f"after:{self.name}")
        return response.with_(data=response.data + f"+{self.name}".encode())


class Deny(InvokeFilter):
    async def before(self, request: RpcRequest) -> RpcRequest:
        raise PermissionDenied(f"app {request.app_id} may not be called")


def registry(**components: tuple[Kind, Any]) -> ComponentRegistry:
    reg = ComponentRegistry()
    for name, (kind, component) in components.items():
        spec = ComponentSpec(kind, "test", StaticResolverMetadata, "unused:factory")
        reg.add(BuiltComponent(ComponentConfig(name=name, kind=kind, type="test"), spec, component))
    return reg


def static(**apps: Sequence[str]) -> StaticResolver:
    return StaticResolver({app: list(addresses) for app, addresses in apps.items()})


def call(app: str = "b", method: str = "hello", **headers: str) -> RpcRequest:
    return RpcRequest(app_id=app, method=method, headers=headers, timeout=timeout_of(headers))


async def test_routes_through_the_resolved_address() -> None:
    channel = Recorder()
    service = InvokeService(
        registry(http=(Kind.RPC, channel), names=(Kind.NAMERESOLUTION, static(b=["h:1"]))),
        RpcConfig(),
    )
    response = await service.invoke(call())
    assert response.data == b"from h:1"
    assert [address for address, _ in channel.calls] == ["h:1"]


async def test_validation_and_configuration_errors() -> None:
    service = InvokeService(registry(), RpcConfig())
    with pytest.raises(InvalidArgument, match="'id'"):
        await service.invoke(call(app=""))
    with pytest.raises(NotConfigured, match="rpc is not configured"):
        await service.invoke(call())
    with pytest.raises(InvalidArgument, match="rpc_request_timeout"):
        timeout_of({"rpc_request_timeout": "soon"})
    assert timeout_of({"rpc_request_timeout": "250"}) == 0.25
    assert timeout_of({}) == 3.0
    two = registry(a=(Kind.RPC, Recorder()), b=(Kind.RPC, Recorder()))
    with pytest.raises(NotConfigured, match=r"rpc\.default_channel"):
        await InvokeService(two, RpcConfig()).invoke(call())
    with pytest.raises(ConfigError, match="no rpc component named 'nope'"):
        InvokeService(two, RpcConfig(default_channel="nope"))
    with pytest.raises(ConfigError, match="no rpcfilter component named 'f'"):
        InvokeService(two, RpcConfig(filters={"a": {"before": ["f"]}}))  # type: ignore[dict-item]
    no_resolver = InvokeService(registry(http=(Kind.RPC, Recorder())), RpcConfig())
    with pytest.raises(NotConfigured, match="rpc_target_address"):
        await no_resolver.invoke(call())


async def test_the_target_address_header_bypasses_resolution() -> None:
    channel = Recorder()
    service = InvokeService(registry(http=(Kind.RPC, channel)), RpcConfig())
    await service.invoke(call(rpc_target_address="10.0.0.9:80"))
    assert channel.calls[0][0] == "10.0.0.9:80"


async def test_per_app_channels() -> None:
    http, grpc = Recorder(), Recorder()
    service = InvokeService(
        registry(
            http=(Kind.RPC, http),
            grpc=(Kind.RPC, grpc),
            names=(Kind.NAMERESOLUTION, static(b=["h:1"], c=["h:2"])),
        ),
        RpcConfig(default_channel="http", app_channels={"c": "grpc"}),
    )
    await service.invoke(call("b"))
    await service.invoke(call("c"))
    assert [a for a, _ in http.calls] == ["h:1"]
    assert [a for a, _ in grpc.calls] == ["h:2"]


async def test_round_robin_and_failover_to_the_next_address() -> None:
    down = TargetUnreachable("connection refused")
    channel = Recorder({"h:2": down})
    service = InvokeService(
        registry(
            http=(Kind.RPC, channel), names=(Kind.NAMERESOLUTION, static(b=["h:1", "h:2", "h:3"]))
        ),
        RpcConfig(eject_seconds=60),
    )
    answers = [(await service.invoke(call())).data for _ in range(6)]
    # h:2 fails once, is skipped from then on; every call still succeeds.
    assert all(a in (b"from h:1", b"from h:3") for a in answers)
    assert [a for a, _ in channel.calls].count("h:2") == 1


async def test_every_address_down_is_unavailable() -> None:
    channel = Recorder({"h:1": TargetUnreachable("refused"), "h:2": TargetUnreachable("refused")})
    service = InvokeService(
        registry(http=(Kind.RPC, channel), names=(Kind.NAMERESOLUTION, static(b=["h:1", "h:2"]))),
        RpcConfig(),
    )
    with pytest.raises(BackendUnavailable):
        await service.invoke(call())
    assert len(channel.calls) == 2


async def test_a_call_lost_after_sending_is_not_sent_again() -> None:
    channel = Recorder({"h:1": BackendUnavailable("connection reset"), "h:2": RpcResponse()})
    service = InvokeService(
        registry(http=(Kind.RPC, channel), names=(Kind.NAMERESOLUTION, static(b=["h:1", "h:2"]))),
        RpcConfig(),
    )
    with pytest.raises(BackendUnavailable, match="reset"):
        await service.invoke(call())
    assert [a for a, _ in channel.calls] == ["h:1"]


def test_address_pool_tries_ejected_addresses_last() -> None:
    pool = AddressPool(eject_seconds=60)
    pool.failed("a")
    assert pool.order(["a", "b"])[-1] == "a"
    pool.succeeded("a")
    assert set(pool.order(["a", "b"])) == {"a", "b"}


async def test_deadline_exceeded_names_the_timeout() -> None:
    channel = Recorder(delay=1.0)
    service = InvokeService(registry(http=(Kind.RPC, channel)), RpcConfig())
    with pytest.raises(BackendTimeout, match="100 ms"):
        await service.invoke(call(rpc_target_address="h:1", rpc_request_timeout="100"))


async def test_a_target_error_passes_through() -> None:
    channel = Recorder({"h:1": TargetError(ErrorCategory.NOT_FOUND, "no such order")})
    service = InvokeService(registry(http=(Kind.RPC, channel)), RpcConfig())
    with pytest.raises(TargetError) as info:
        await service.invoke(call(rpc_target_address="h:1"))
    assert info.value.category is ErrorCategory.NOT_FOUND
    assert info.value.message == "no such order"


async def test_filters_run_in_order_and_may_reject() -> None:
    log: list[str] = []
    channel = Recorder()
    service = InvokeService(
        registry(
            http=(Kind.RPC, channel),
            one=(Kind.RPCFILTER, Tag("one", log)),
            two=(Kind.RPCFILTER, Tag("two", log)),
            deny=(Kind.RPCFILTER, Deny()),
        ),
        RpcConfig(filters={"http": {"before": ["one", "two"], "after": ["two", "one"]}}),  # type: ignore[dict-item]
    )
    response = await service.invoke(call(rpc_target_address="h:1"))
    assert log == ["before:one", "before:two", "after:two", "after:one"]
    assert channel.calls[0][1].headers["x-one"] == channel.calls[0][1].headers["x-two"] == "1"
    assert response.data == b"from h:1+two+one"

    denying = InvokeService(
        registry(http=(Kind.RPC, Recorder()), deny=(Kind.RPCFILTER, Deny())),
        RpcConfig(filters={"http": {"before": ["deny"]}}),  # type: ignore[dict-item]
    )
    with pytest.raises(PermissionDenied, match="may not be called"):
        await denying.invoke(call(rpc_target_address="h:1"))


async def test_dubbo_json_rpc_filter_and_mesh_resolver() -> None:
    channel = Recorder()
    service = InvokeService(
        registry(
            http=(Kind.RPC, channel),
            mesh=(Kind.NAMERESOLUTION, MeshResolver("127.0.0.1:15001")),
            dubbo=(Kind.RPCFILTER, DubboJsonRpcFilter()),
        ),
        RpcConfig(filters={"http": {"before": ["dubbo"]}}),  # type: ignore[dict-item]
    )
    await service.invoke(call("orders", "getOrder"))
    address, sent = channel.calls[0]
    assert address == "127.0.0.1:15001"
    assert sent.method == "orders"
    assert sent.headers["x-services"] == "orders"
    assert sent.headers["x-method"] == "getOrder"
    assert sent.headers["content-type"] == sent.headers["accept"] == "application/json"


def test_static_resolver_metadata_forms() -> None:
    native = StaticResolverMetadata.model_validate({"apps": {"b": ["h:1", "h:2"]}})
    dapr = StaticResolverMetadata.model_validate({"apps": "b=h:1|h:2; c=h:3"})
    as_json = StaticResolverMetadata.model_validate({"apps": '{"b": ["h:1", "h:2"]}'})
    assert native.apps == as_json.apps == {"b": ["h:1", "h:2"]}
    assert dapr.apps == {"b": ["h:1", "h:2"], "c": ["h:3"]}
    with pytest.raises(ValueError, match="host:port"):
        StaticResolverMetadata.model_validate({"apps": {"b": ["nohost"]}})
