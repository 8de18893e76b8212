"""Helpers shared by the Kafka tests.

`conftest.py` loads this module under the unique name `layotto_kafka_test_support` (the
workspace runs pytest with --import-mode=importlib, and other test folders have support modules
too).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from layotto.plugin import Message, Subscription
from layotto.testing import skip_or_fail
from layotto_kafka import KafkaMetadata, KafkaPubSub
from layotto_kafka.testing import KafkaBackendMissing, MockKafkaCluster, TansuBroker

# Group timeouts for tests: a rebalance waits for members on the order of these.
FAST_GROUP = {"sessionTimeout": "2s", "heartbeatInterval": "200ms"}

PubSubFactory = Callable[..., Awaitable[KafkaPubSub]]


def start_tansu(workdir: Path) -> TansuBroker:
    try:
        return TansuBroker(workdir).start()
    except KafkaBackendMissing as err:
        skip_or_fail(f"Tansu is not available: {err}")


def start_mock_cluster(brokers: int = 1) -> MockKafkaCluster:
    try:
        return MockKafkaCluster(brokers).start()
    except KafkaBackendMissing as err:
        skip_or_fail(f"librdkafka's mock cluster is not available: {err}")


class Names:
    """Unique topic and group names for one test."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}"

    def __call__(self, what: str) -> str:
        return f"{self.prefix}-{what}"


def kafka_metadata(bootstrap: str, **metadata: str) -> KafkaMetadata:
    """Validated metadata as from Dapr YAML (strings), with the fast group timeouts."""
    return KafkaMetadata.model_validate({"brokers": bootstrap, **FAST_GROUP, **metadata})


async def receive_n(subscription: Subscription, count: int, within: float = 15.0) -> list[Message]:
    """The next `count` messages, or fail after `within` seconds with what arrived."""
    got: list[Message] = []
    try:
        async with asyncio.timeout(within):
            while len(got) < count:
                got.append(await subscription.receive())
    except TimeoutError:
        raise AssertionError(
            f"received {len(got)} of {count} messages within {within} s: {[m.data for m in got]}"
        ) from None
    return got


async def receive_quiet(subscription: Subscription, quiet: float) -> list[Message]:
    """Everything that arrives until nothing did for `quiet` seconds."""
    got: list[Message] = []
    while True:
        try:
            async with asyncio.timeout(quiet):
                got.append(await subscription.receive())
        except TimeoutError:
            return got


async def receive_until(
    subscription: Subscription, done: Callable[[list[Message]], bool], within: float
) -> list[Message]:
    """Receive until `done(received)` holds; fail after `within` seconds."""
    got: list[Message] = []
    deadline = time.monotonic() + within
    while not done(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"condition not met within {within} s: {[m.data for m in got]}")
        try:
            async with asyncio.timeout(remaining):
                got.append(await subscription.receive())
        except TimeoutError:
            continue
    return got
