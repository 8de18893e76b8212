"""bindings.redis against the output-binding kit (layotto.testing.conformance), on the private
redis-server. Items are Redis keys (request metadata `key`); a `get` of an absent key answers
empty data, the kit's default "missing". `list` is not an operation of this binding and skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from layotto.plugin import ComponentContext, OutputBinding
from layotto.testing.conformance import OutputBindingConformance
from layotto_redis import RedisBinding, RedisBindingMetadata
from layotto_redis_test_support import RedisServer

pytestmark = pytest.mark.integration


class TestRedisOutputBinding(OutputBindingConformance):
    expected_operations = frozenset({"create", "get", "delete", "increment"})

    def item_metadata(self, item: str) -> dict[str, str]:
        return {"key": item}

    @pytest.fixture
    async def output_binding(self, redis_server: RedisServer) -> AsyncIterator[OutputBinding]:
        binding = RedisBinding(
            RedisBindingMetadata.model_validate({"redisHost": redis_server.address}),
            ComponentContext("cache", "app"),
        )
        await binding.init()
        yield binding
        await binding.close()
