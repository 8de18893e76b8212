"""bindings.redis against a private redis-server, directly and through BindingService."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.plugin import (
    BackendUnavailable,
    BindingRequest,
    ComponentContext,
    ComponentSpec,
    InvalidArgument,
    Kind,
)
from layotto.plugins import load_catalog
from layotto.services.bindings import BindingService
from layotto_redis import RedisBinding, RedisBindingMetadata
from layotto_redis_test_support import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def binding(redis_server: RedisServer) -> AsyncIterator[RedisBinding]:
    component = RedisBinding(
        RedisBindingMetadata.model_validate({"redisHost": redis_server.address}),
        ComponentContext("cache", "app"),
    )
    await component.init()
    try:
        yield component
    finally:
        await component.close()


async def invoke(binding: RedisBinding, operation: str, data: bytes = b"", **md: str) -> bytes:
    response = await binding.invoke(BindingRequest(operation, data, md))
    return response.data


def test_operations_match_upstream() -> None:
    component = RedisBinding(
        RedisBindingMetadata.model_validate({"redisHost": "127.0.0.1:6379"}),
        ComponentContext("cache", "app"),
    )
    assert list(component.operations()) == ["create", "get", "delete", "increment"]


async def test_create_get_delete(binding: RedisBinding, prefix: str) -> None:
    key = prefix + "k"
    assert await invoke(binding, "get", key=key) == b""  # absent: empty data
    assert await invoke(binding, "create", b"\x00value\xff", key=key) == b""
    assert await binding.client.get(key) == b"\x00value\xff"
    assert await binding.client.ttl(key) == -1  # no expiry without ttlInSeconds
    assert await invoke(binding, "get", key=key) == b"\x00value\xff"
    await invoke(binding, "delete", key=key)
    assert await binding.client.exists(key) == 0
    assert await invoke(binding, "get", key=key) == b""


async def test_create_with_ttl(binding: RedisBinding, prefix: str) -> None:
    key = prefix + "ttl"
    await invoke(binding, "create", b"v", key=key, ttlInSeconds="1")
    assert 0 < await binding.client.pttl(key) <= 1000
    deadline = time.monotonic() + 5
    while await invoke(binding, "get", key=key) != b"":
        assert time.monotonic() < deadline, "the key did not expire"
        await asyncio.sleep(0.15)


async def test_get_with_delete(binding: RedisBinding, prefix: str) -> None:
    key = prefix + "once"
    await invoke(binding, "create", b"v", key=key)
    assert await invoke(binding, "get", key=key, delete="true") == b"v"
    assert await binding.client.exists(key) == 0


async def test_increment(binding: RedisBinding, prefix: str) -> None:
    key = prefix + "n"
    await invoke(binding, "increment", key=key)
    await invoke(binding, "increment", key=key)
    assert await invoke(binding, "get", key=key) == b"2"
    assert await binding.client.ttl(key) == -1
    await invoke(binding, "increment", key=key, ttlInSeconds="100")
    assert await invoke(binding, "get", key=key) == b"3"
    assert 90 < await binding.client.ttl(key) <= 100


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({}, "missing key"),
        ({"key": ""}, "missing key"),
        ({"key": "k", "ttlInSeconds": "soon"}, "must be a valid integer"),
        ({"key": "k", "ttlInSeconds": "0"}, "must be higher than zero"),
        ({"key": "k", "ttlInSeconds": "-5"}, "must be higher than zero"),
    ],
)
async def test_bad_requests(binding: RedisBinding, metadata: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await binding.invoke(BindingRequest("create", b"v", metadata))
    assert await binding.client.exists("k") == 0


async def test_wrong_type_is_a_component_error(binding: RedisBinding, prefix: str) -> None:
    key = prefix + "hash"
    await binding.client.hset(key, "f", "v")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await invoke(binding, "increment", key=key)


async def test_closed_binding_fails_cleanly(redis_server: RedisServer, prefix: str) -> None:
    component = RedisBinding(
        RedisBindingMetadata.model_validate({"redisHost": redis_server.address}),
        ComponentContext("cache", "app"),
    )
    await component.init()
    await component.close()
    with pytest.raises(BackendUnavailable):
        await invoke(component, "get", key=prefix + "k")


async def test_through_the_binding_service(redis_server: RedisServer, prefix: str) -> None:
    """Registered under `bindings.redis`; the service checks the operation before any I/O and
    wraps errors with the binding's name."""
    spec: ComponentSpec = load_catalog().resolve(Kind.BINDINGS, "redis", where="test")
    config = ComponentConfig(
        name="cache",
        kind=Kind.BINDINGS,
        type="redis",
        metadata={"redisHost": redis_server.address, "direction": "output"},
    )
    metadata = spec.metadata_model.model_validate(config.metadata)
    assert not metadata.model_extra
    component = spec.create(metadata, ComponentContext("cache", "app"))
    registry = ComponentRegistry()
    await registry.start([BuiltComponent(config, spec, component)])
    try:
        service = BindingService(registry)
        assert service.output_names() == ["cache"]
        assert service.inputs() == {}
        await service.invoke("cache", "create", b"hello", {"key": prefix + "s"})
        response = await service.invoke("cache", "get", b"", {"key": prefix + "s"})
        assert response.data == b"hello"
        with pytest.raises(InvalidArgument, match="does not support operation list"):
            await service.invoke("cache", "list", b"", {"key": prefix + "s"})
        with pytest.raises(
            InvalidArgument, match="error when invoke output binding cache: redis binding: missing"
        ):
            await service.invoke("cache", "get")
    finally:
        await registry.close()
