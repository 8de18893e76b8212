"""Resiliency policies where the sidecar calls out: components (outbound), the app (inbound
pub/sub deliveries and input binding events)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

import anyio
import pytest
import yaml
from layotto.builtin.memory_pubsub import InMemoryPubSub
from layotto.builtin.memory_state import InMemoryStateMetadata
from layotto.builtin.secret_stores import InMemorySecretStore
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.errors import BackendTimeout, BackendUnavailable, ComponentError, ErrorCategory
from layotto.plugin import (
    ComponentSpec,
    DeleteRequest,
    ETagMismatch,
    GetRequest,
    GetResponse,
    Kind,
    PublishRequest,
    SetRequest,
    StateStore,
)
from layotto.resiliency import CircuitBreakerOpen, Resiliency, merge_specs, parse_resiliency_spec
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub import PubSubService
from layotto.services.pubsub_delivery import DeliveryPolicy
from layotto.services.secrets import SecretService
from layotto.services.state import StateService
from layotto.testing.conformance.pubsub import ComponentHarness, Recorder
from layotto_api_test_helpers import until

pytestmark = pytest.mark.anyio

APP = "app1"

SPEC = """
policies:
  timeouts:
    quick: 50ms
  retries:
    thrice:
      policy: constant
      duration: 5ms
      maxRetries: 3
    once:
      policy: constant
      duration: 5ms
      maxRetries: 1
    DefaultStatestoreComponentOutboundRetryPolicy:
      policy: constant
      duration: 5ms
      maxRetries: 2
  circuitBreakers:
    trips:
      maxRequests: 1
      timeout: 60s
      trip: consecutiveFailures >= 2
targets:
  components:
    flaky:
      outbound:
        retry: thrice
    fragile:
      outbound:
        retry: once
    breakable:
      outbound:
        circuitBreaker: trips
    slow:
      outbound:
        timeout: quick
"""


def resiliency(text: str = SPEC) -> Resiliency:
    spec = parse_resiliency_spec(yaml.safe_load(text), "test.yaml")
    return Resiliency.from_spec(merge_specs([("test.yaml", spec)]))


class FlakyStore(StateStore):
    """Fails its first `failures` calls with a foreign error, then answers from a dict."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.calls = 0
        self.data: dict[str, bytes] = {}

    async def _enter(self) -> None:
        self.calls += 1
        if self.delay:
            await anyio.sleep(self.delay)
        if self.calls <= self.failures:
            raise ConnectionError("connection reset by 10.0.0.7")

    async def get(self, request: GetRequest) -> GetResponse | None:
        await self._enter()
        value = self.data.get(request.key)
        return None if value is None else GetResponse(value, "1")

    async def set(self, request: SetRequest) -> None:
        await self._enter()
        if request.etag is not None:
            raise ETagMismatch("etag mismatch")
        self.data[request.key] = request.value

    async def delete(self, request: DeleteRequest) -> None:
        await self._enter()
        self.data.pop(request.key, None)


def state_service(res: Resiliency, **stores: StateStore) -> StateService:
    registry = ComponentRegistry(res)
    for name, store in stores.items():
        config = ComponentConfig(name=name, kind=Kind.STATE, type="fake")
        registry.add(BuiltComponent(config, _spec(Kind.STATE), store))
    return StateService(registry, APP)


async def test_outbound_retries_recover_from_transient_failures() -> None:
    store = FlakyStore(failures=3)
    states = state_service(resiliency(), flaky=store)
    assert await states.get("flaky", "k") is None
    assert store.calls == 4  # three failures, three retries, then the answer


async def test_outbound_retries_give_up_with_the_last_error() -> None:
    store = FlakyStore(failures=3)
    states = state_service(resiliency(), fragile=store)
    with pytest.raises(ComponentError) as caught:
        await states.get("fragile", "k")
    assert caught.value.category is ErrorCategory.INTERNAL
    assert "10.0.0.7" not in caught.value.message  # foreign errors still translated
    assert store.calls == 2  # one try, one retry


async def test_caller_errors_are_not_retried() -> None:
    store = FlakyStore()
    states = state_service(resiliency(), flaky=store)
    with pytest.raises(ETagMismatch):
        await states.save("flaky", [SetRequest("k", b"v", etag="7")])
    assert store.calls == 1


async def test_the_default_policy_for_state_stores_applies_to_unnamed_stores() -> None:
    store = FlakyStore(failures=2)
    states = state_service(resiliency(), other=store)
    assert await states.get("other", "k") is None
    assert store.calls == 3  # DefaultStatestoreComponentOutboundRetryPolicy: 2 retries


async def test_an_open_breaker_fails_fast_without_calling_the_store() -> None:
    store = FlakyStore(failures=100)
    states = state_service(resiliency(), breakable=store)
    for _ in range(2):
        with pytest.raises(ComponentError):
            await states.get("breakable", "k")
    with pytest.raises(CircuitBreakerOpen) as caught:
        await states.get("breakable", "k")
    assert caught.value.reason == "ERR_CIRCUIT_BREAKER_OPEN"
    assert caught.value.category is ErrorCategory.UNAVAILABLE
    assert "breakable" in caught.value.message
    assert store.calls == 2


async def test_the_timeout_policy_bounds_each_attempt() -> None:
    store = FlakyStore(delay=1.0)
    states = state_service(resiliency(), slow=store)
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await states.get("slow", "k")
    assert time.monotonic() - started < 0.5


async def test_no_resiliency_is_one_plain_attempt() -> None:
    store = FlakyStore(failures=1)
    states = state_service(Resiliency.empty(), flaky=store)
    with pytest.raises(ComponentError):
        await states.get("flaky", "k")
    assert store.calls == 1


async def test_other_blocks_use_their_component_policy() -> None:
    """The lock and secret services look their policies up too (kind-specific defaults)."""
    res = resiliency(
        """
policies:
  retries:
    DefaultSecretstoreComponentOutboundRetryPolicy: {policy: constant, duration: 5ms, maxRetries: 2}
"""
    )
    store = InMemorySecretStore()
    calls = 0
    original = store.get_secret

    async def flaky_get(key: str, metadata: Mapping[str, str]) -> dict[str, str]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise BackendUnavailable("secret backend restarting")
        return await original(key, metadata)

    store.get_secret = flaky_get  # type: ignore[method-assign]
    registry = ComponentRegistry(res)
    config = ComponentConfig(name="vault", kind=Kind.SECRETSTORES, type="in-memory")
    registry.add(BuiltComponent(config, _spec(Kind.SECRETSTORES), store))
    secrets = SecretService(registry)
    with pytest.raises(ComponentError):  # the store has no such secret: not retried
        await secrets.get("vault", "missing")
    assert calls == 3  # two unavailable answers retried, then the store's own answer
    # The default names the secret store kind only: a lock store gets no retries.
    assert registry.outbound_policy(Kind.LOCK, "locks").retry is None


def _spec(kind: Kind) -> ComponentSpec:
    return ComponentSpec(kind, "fake", InMemoryStateMetadata, lambda m, c: None)  # type: ignore[arg-type,return-value]


# -- inbound: pub/sub deliveries ---------------------------------------------------------


@pytest.fixture
async def pubsub() -> AsyncIterator[InMemoryPubSub]:
    component = InMemoryPubSub(app_id=APP)
    yield component
    await component.close()


INBOUND = """
policies:
  retries:
    twice: {policy: constant, duration: 5ms, maxRetries: 2}
  timeouts:
    quick: 50ms
  circuitBreakers:
    app: {maxRequests: 1, timeout: 60s, trip: consecutiveFailures >= 2}
targets:
  components:
    retrying: {inbound: {retry: twice}}
    timing: {inbound: {timeout: quick}}
    breaking: {inbound: {retry: twice, circuitBreaker: app}}
"""


def harness(pubsub: InMemoryPubSub, name: str) -> ComponentHarness:
    inbound = resiliency(INBOUND).component_inbound(name, Kind.PUBSUB)
    assert inbound, name
    # The native budget says 50 retries: the Resiliency policy must win.
    policy = DeliveryPolicy(retry_initial_interval=0.005, max_retries=50, inbound=inbound)
    return ComponentHarness(pubsub, policy=policy)


async def test_inbound_retries_then_dead_letter(pubsub: InMemoryPubSub) -> None:
    h = harness(pubsub, "retrying")
    calls = 0
    dead = Recorder()

    async def fail(event: TopicEvent) -> EventStatus:
        nonlocal calls
        calls += 1
        return EventStatus.RETRY

    async with h.subscribe("dlq", dead), h.subscribe("t", fail, dead_letter_topic="dlq"):
        await h.publish("t", b"x")
        await until(lambda: len(dead.deliveries) == 1)
    assert calls == 3  # the first delivery and maxRetries: 2


async def test_inbound_policy_without_retries_dead_letters_at_once(pubsub: InMemoryPubSub) -> None:
    h = harness(pubsub, "timing")
    calls = 0
    dead = Recorder()

    async def slow(event: TopicEvent) -> EventStatus:
        nonlocal calls
        calls += 1
        await anyio.sleep(1)  # past the 50 ms inbound timeout
        return EventStatus.SUCCESS

    async with h.subscribe("dlq", dead), h.subscribe("t", slow, dead_letter_topic="dlq"):
        await h.publish("t", b"x")
        await until(lambda: len(dead.deliveries) == 1)
    assert calls == 1


async def test_inbound_retries_recover(pubsub: InMemoryPubSub) -> None:
    h = harness(pubsub, "retrying")
    calls = 0
    delivered = anyio.Event()

    async def flaky(event: TopicEvent) -> EventStatus:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("app hiccup")
        delivered.set()
        return EventStatus.SUCCESS

    async with h.subscribe("t", flaky, dead_letter_topic="dlq"):
        await h.publish("t", b"x")
        with anyio.fail_after(5):
            await delivered.wait()
    assert calls == 3
    assert h.loops[-1].stats.dead_lettered == 0


async def test_an_open_inbound_breaker_holds_deliveries_back(pubsub: InMemoryPubSub) -> None:
    """Once the app failed twice the breaker opens: later attempts do not reach the app (they
    use up the retry budget), so the message is dead-lettered after 2 app calls, not 3. The
    breaker belongs to the pubsub component: its other topics are held back as well."""
    h = harness(pubsub, "breaking")
    calls = 0

    async def fail(event: TopicEvent) -> EventStatus:
        nonlocal calls
        calls += 1
        return EventStatus.RETRY

    async with h.subscribe("t", fail, dead_letter_topic="dlq"):
        await h.publish("t", b"x")
        await until(lambda: h.loops[-1].stats.dead_lettered == 1)
    assert calls == 2


# -- pub/sub through the service --------------------------------------------------------------


async def test_the_pubsub_service_applies_both_directions(pubsub: InMemoryPubSub) -> None:
    res = resiliency(
        """
policies:
  retries:
    twice: {policy: constant, duration: 5ms, maxRetries: 2}
targets:
  components:
    events: {outbound: {retry: twice}, inbound: {retry: twice}}
"""
    )
    registry = ComponentRegistry(res)
    config = ComponentConfig(name="events", kind=Kind.PUBSUB, type="in-memory")
    registry.add(BuiltComponent(config, _spec(Kind.PUBSUB), pubsub))
    service = PubSubService(registry)
    attempts = 0
    original = pubsub.publish

    async def flaky_publish(request: PublishRequest) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("broker restarting")
        await original(request)

    pubsub.publish = flaky_publish  # type: ignore[method-assign]
    await service.publish("events", "orders", b"{}")
    assert attempts == 3  # two failures retried by the outbound policy

    async def deliver(event: TopicEvent) -> EventStatus:
        return EventStatus.SUCCESS

    loop = service.delivery("events", "orders", deliver)
    assert loop.policy.inbound is res.component_inbound("events", Kind.PUBSUB)
    assert loop.policy.inbound.retry is not None
