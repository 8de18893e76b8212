"""Binding conformance (conformance.md §7): output bindings (the component, and the sidecar's
`BindingService` over it for the operation checks) and input bindings.

**Output.** Subclass `OutputBindingConformance` and provide `output_binding`, an initialised
binding closed on teardown (a fresh one per test)::

    import pytest
    from layotto.plugin import ComponentContext
    from layotto.testing.conformance import OutputBindingConformance

    class TestRedisBinding(OutputBindingConformance):
        expected_operations = frozenset({"create", "get", "delete", "increment"})

        def item_metadata(self, item):
            return {"key": item}  # how a request names the item it creates, gets, deletes

        @pytest.fixture
        async def output_binding(self, redis_url):
            binding = RedisBinding.create(RedisBindingMetadata(...), ComponentContext("b", "app"))
            await binding.init()
            yield binding
            await binding.close()

The create / get / list / delete scenarios run when the binding lists those operations and skip
with the reason otherwise. Hooks (methods to override): `item_metadata(item)` (request metadata
addressing one item; default none), `is_missing(outcome)` (whether a `get` after `delete`
reports the item missing; default: empty data or `NotFound`), `lists(response, item)` (whether a
`list` response includes the item; default: its name occurs in the data). Knob:
`expected_operations` (None: any non-empty list; else exactly these).

**Input.** Subclass `InputBindingConformance` and provide `input_binding` (initialised, closed on
teardown) and, unless events come by themselves (cron), `input_binding_trigger`: an async
callable that makes the backend produce one event carrying the given bytes, written from
outside the binding under test (produce to the topic, push to the queue). `read` runs while it
is called, so a backend that only delivers what is written after the subscription needs a
binding that reads from the start (Kafka: `initialOffset: oldest`). Knobs: `event_count` (3),
`read_window` (30 s: how long an event may take), `quiet_period` (1 s: how long the kit waits to
be sure nothing more arrives), `redelivers` (False: a backend that hands an event the handler
failed to the handler again sets it True, and the redelivery scenario runs).

Items, topics and payloads are unique per test (`conformance_prefix`); created items are
deleted afterwards when the binding lists `delete`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import anyio
import pytest

from layotto.errors import ErrorCategory
from layotto.plugin import (
    BindingEvent,
    BindingRequest,
    BindingResponse,
    HealthStatus,
    InputBinding,
    InvalidArgument,
    Kind,
    LayottoError,
    NotFound,
    OutputBinding,
)
from layotto.services.bindings import BindingService
from layotto.testing.conformance._services import registry_with
from layotto.testing.conformance._support import ConformanceBase, Names, poll_until

BindingTrigger = Callable[[bytes], Awaitable[None]]
"""Makes the backend produce one event carrying these bytes (from outside the binding)."""

# The binding's name in the sidecar-level scenarios.
BINDING_NAME = "conftestbinding"
# Metadata every request of the kit carries besides the item's address; a binding must accept
# metadata it does not use.
_EXTRA_METADATA = "conftest"
# How long a call or a close may take before the kit calls it a hang.
_CALL_DEADLINE = 15.0


async def _ping(component: OutputBinding | InputBinding) -> None:
    with anyio.fail_after(1):
        health = await component.check_health()
    assert health.status is HealthStatus.UP, health.details


async def _close_twice(component: OutputBinding | InputBinding) -> None:
    with anyio.fail_after(_CALL_DEADLINE):
        await component.close()
        await component.close()  # the fixture closes it a third time


# -- output ----------------------------------------------------------------------------------


@dataclass
class _Call:
    request: BindingRequest
    response: BindingResponse | None = None


class RecordingBinding(OutputBinding):
    """Forwards to the binding under test and remembers what reached it and what it answered:
    the service scenarios compare both ends."""

    def __init__(self, inner: OutputBinding) -> None:
        self.inner = inner
        self.calls: list[_Call] = []

    def operations(self) -> Sequence[str]:
        return self.inner.operations()

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        call = _Call(request)
        self.calls.append(call)
        call.response = await self.inner.invoke(request)
        return call.response


class OutputBindingConformance(ConformanceBase):
    """conformance.md §7 (output side) against the `output_binding` fixture. See the module
    docstring."""

    expected_operations: ClassVar[frozenset[str] | None] = None

    # -- hooks -------------------------------------------------------------------------------

    def item_metadata(self, item: str) -> dict[str, str]:
        """Request metadata that names `item` (redis: `{"key": item}`; http: a `path`)."""
        return {}

    def is_missing(self, outcome: BindingResponse | LayottoError) -> bool:
        """Whether a `get` outcome (its response, or the error it raised) says "no such item"."""
        if isinstance(outcome, LayottoError):
            return isinstance(outcome, NotFound)
        return outcome.data == b""

    def lists(self, response: BindingResponse, item: str) -> bool:
        """Whether a `list` response includes `item`."""
        return item.encode() in response.data

    # -- fixtures and helpers ----------------------------------------------------------------

    @pytest.fixture
    async def conformance_items(
        self, output_binding: OutputBinding, conformance_prefix: str
    ) -> AsyncIterator[Names]:
        """`conformance_items("name")` is an item unique to this test; deleted afterwards."""
        items = Names(conformance_prefix)
        yield items
        if "delete" not in output_binding.operations():
            return
        with anyio.move_on_after(10):
            for item in items.used:
                with contextlib.suppress(LayottoError):
                    await output_binding.invoke(
                        BindingRequest("delete", b"", self.item_metadata(item))
                    )

    @staticmethod
    def require(binding: OutputBinding, *operations: str) -> None:
        missing = [op for op in operations if op not in binding.operations()]
        if missing:
            pytest.skip(f"{type(binding).__name__} does not list operation(s) {missing}")

    def request(self, operation: str, item: str, data: bytes = b"") -> BindingRequest:
        metadata = {_EXTRA_METADATA: item, **self.item_metadata(item)}
        return BindingRequest(operation, data, metadata)

    @staticmethod
    def payload(item: str) -> bytes:
        return f'{{"conftest": "{item}", "text": "café"}}'.encode()

    async def get_outcome(
        self, binding: OutputBinding, item: str
    ) -> BindingResponse | LayottoError:
        try:
            return await binding.invoke(self.request("get", item))
        except LayottoError as err:
            return err

    @staticmethod
    def service(binding: OutputBinding) -> tuple[BindingService, RecordingBinding]:
        recording = RecordingBinding(binding)
        return BindingService(registry_with(Kind.BINDINGS, BINDING_NAME, recording)), recording

    # -- component level -----------------------------------------------------------------------

    async def test_init_and_ping(self, output_binding: OutputBinding) -> None:
        assert isinstance(output_binding, OutputBinding)
        await _ping(output_binding)

    async def test_operations_are_listed(self, output_binding: OutputBinding) -> None:
        operations = list(output_binding.operations())
        assert operations, "the binding lists no operations"
        assert all(isinstance(op, str) and op for op in operations), operations
        assert len(set(operations)) == len(operations), f"listed twice: {operations}"
        if self.expected_operations is not None:
            assert set(operations) == self.expected_operations

    async def test_create(self, output_binding: OutputBinding, conformance_items: Names) -> None:
        self.require(output_binding, "create")
        item = conformance_items("created")
        with anyio.fail_after(_CALL_DEADLINE):
            response = await output_binding.invoke(self.request("create", item, self.payload(item)))
        assert isinstance(response, BindingResponse)

    async def test_get_returns_what_was_created(
        self, output_binding: OutputBinding, conformance_items: Names
    ) -> None:
        self.require(output_binding, "create", "get")
        item, other = conformance_items("item"), conformance_items("other")
        await output_binding.invoke(self.request("create", item, self.payload(item)))
        await output_binding.invoke(self.request("create", other, self.payload(other)))
        got = await output_binding.invoke(self.request("get", item))
        assert got.data == self.payload(item)
        assert (await output_binding.invoke(self.request("get", other))).data == self.payload(other)

    async def test_list_includes_what_was_created(
        self, output_binding: OutputBinding, conformance_items: Names
    ) -> None:
        self.require(output_binding, "create", "list")
        item = conformance_items("listed")
        await output_binding.invoke(self.request("create", item, self.payload(item)))
        listed = await output_binding.invoke(BindingRequest("list", b"", {}))
        assert self.lists(listed, item), f"list does not include {item!r}: {listed.data[:200]!r}"

    async def test_delete(self, output_binding: OutputBinding, conformance_items: Names) -> None:
        self.require(output_binding, "create", "delete")
        item, kept = conformance_items("deleted"), conformance_items("kept")
        await output_binding.invoke(self.request("create", item, self.payload(item)))
        await output_binding.invoke(self.request("create", kept, self.payload(kept)))
        await output_binding.invoke(self.request("delete", item))
        if "get" not in output_binding.operations():
            return  # nothing to look with: deleting without an error is all there is
        gone = await self.get_outcome(output_binding, item)
        assert self.is_missing(gone), f"get after delete: {gone!r}"
        still = await self.get_outcome(output_binding, kept)
        assert isinstance(still, BindingResponse), f"the other item: {still!r}"
        assert still.data == self.payload(kept)

    async def test_close_then_invoke_fails_cleanly(
        self, output_binding: OutputBinding, conformance_prefix: str
    ) -> None:
        operations = list(output_binding.operations())
        operation = "create" if "create" in operations else operations[0]
        item = f"{conformance_prefix}closed"
        await _close_twice(output_binding)
        # Clean: a LayottoError (the sidecar maps it to a status), not a foreign error or a hang.
        with anyio.fail_after(_CALL_DEADLINE), pytest.raises(LayottoError):
            await output_binding.invoke(self.request(operation, item, self.payload(item)))

    # -- sidecar level (BindingService) --------------------------------------------------------

    async def test_an_unlisted_operation_is_rejected_before_any_io(
        self, output_binding: OutputBinding, conformance_prefix: str
    ) -> None:
        service, recording = self.service(output_binding)
        unlisted = "conftest-unlisted"
        assert unlisted not in output_binding.operations()
        message = f"binding {BINDING_NAME} does not support operation {unlisted}"
        with pytest.raises(InvalidArgument, match=message):
            await service.invoke(BINDING_NAME, unlisted, b"x", self.item_metadata("x"))
        assert recording.calls == [], "the binding was invoked"

    async def test_an_empty_operation_is_invalid(self, output_binding: OutputBinding) -> None:
        service, recording = self.service(output_binding)
        with pytest.raises(InvalidArgument) as caught:
            await service.invoke(BINDING_NAME, "", b"x", {})
        assert caught.value.category is ErrorCategory.INVALID_ARGUMENT
        assert recording.calls == []

    async def test_requests_and_responses_pass_through(
        self, output_binding: OutputBinding, conformance_items: Names
    ) -> None:
        """What the app sends reaches the binding unchanged, and what it answers reaches the
        app unchanged (a `get` of a created item when both are listed, else a `create`)."""
        operations = output_binding.operations()
        if "create" not in operations:
            pytest.skip(f"{type(output_binding).__name__} does not list operation 'create'")
        service, recording = self.service(output_binding)
        item = conformance_items("passed")
        sent = self.request("create", item, self.payload(item))
        if "get" in operations:
            await output_binding.invoke(sent)
            sent = self.request("get", item)
        answer = await service.invoke(BINDING_NAME, sent.operation, sent.data, sent.metadata)
        [call] = recording.calls
        assert call.request == sent
        assert call.response is not None
        assert answer.data == call.response.data
        assert dict(answer.metadata) == dict(call.response.metadata)
        if sent.operation == "get":
            assert answer.data == self.payload(item)


# -- input -----------------------------------------------------------------------------------


@dataclass
class Deliveries:
    """What one handler was given. `fail` decides, per delivery, whether the handler raises."""

    fail: Callable[[BindingEvent, int], bool] = lambda _event, _attempt: False
    events: list[BindingEvent] = field(default_factory=list)
    processed: list[BindingEvent] = field(default_factory=list)
    late: list[BindingEvent] = field(default_factory=list)  # given after read() returned
    ended_at: float | None = None  # monotonic time the read returned

    def attempts(self, data: bytes) -> int:
        return sum(1 for event in self.events if event.data == data)

    async def __call__(self, event: BindingEvent) -> bytes | None:
        if self.ended_at is not None:
            # A task the binding left behind: recorded, as its error may reach no one.
            self.late.append(event)
            raise RuntimeError("conformance: the handler was called after read() returned")
        self.events.append(event)
        if self.fail(event, self.attempts(event.data)):
            raise RuntimeError(f"conformance: handler fails for {event.data!r}")
        self.processed.append(event)
        return None


class InputBindingConformance(ConformanceBase):
    """conformance.md §7 (input side) against the `input_binding` fixture. See the module
    docstring."""

    event_count: ClassVar[int] = 3
    read_window: ClassVar[float] = 30.0
    quiet_period: ClassVar[float] = 1.0
    redelivers: ClassVar[bool] = False

    @pytest.fixture
    def input_binding_trigger(self) -> BindingTrigger | None:
        """None: events come by themselves (a schedule). Override to write one event."""
        return None

    @contextlib.asynccontextmanager
    async def reading(
        self, binding: InputBinding, handler: Deliveries
    ) -> AsyncIterator[Deliveries]:
        """`binding.read(handler)` for the duration of the block, cancelled when it ends;
        `handler.ended_at` tells when `read` returned."""

        async def read() -> None:
            try:
                await binding.read(handler)
            finally:
                handler.ended_at = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            try:
                yield handler
            finally:
                tg.cancel_scope.cancel()

    def payloads(self, prefix: str, count: int | None = None) -> list[bytes]:
        return [f"{prefix}event-{i}".encode() for i in range(count or self.event_count)]

    async def wait_for(self, check: Callable[[], bool], what: str) -> None:
        async def done() -> bool:
            return check()

        await poll_until(done, deadline=self.read_window, what=what, interval=0.05)

    @staticmethod
    def check_event(event: BindingEvent) -> None:
        assert isinstance(event, BindingEvent)
        assert isinstance(event.data, bytes)
        assert isinstance(event.metadata, Mapping)
        for key, value in event.metadata.items():
            assert isinstance(key, str), key
            assert isinstance(value, str), (key, value)

    # -- scenarios ---------------------------------------------------------------------------

    async def test_init_and_ping(self, input_binding: InputBinding) -> None:
        assert isinstance(input_binding, InputBinding)
        await _ping(input_binding)

    async def test_close_is_idempotent(self, input_binding: InputBinding) -> None:
        await _close_twice(input_binding)

    async def test_read(
        self,
        input_binding: InputBinding,
        input_binding_trigger: BindingTrigger | None,
        conformance_prefix: str,
    ) -> None:
        async with self.reading(input_binding, Deliveries()) as got:
            if input_binding_trigger is None:
                await self.wait_for(
                    lambda: len(got.processed) >= self.event_count, f"{self.event_count} events"
                )
            else:
                payloads = self.payloads(conformance_prefix)
                for data in payloads:
                    await input_binding_trigger(data)
                await self.wait_for(
                    lambda: {e.data for e in got.processed} >= set(payloads),
                    f"the {len(payloads)} events written",
                )
                # At least once: a duplicate is allowed, a stranger is not.
                assert {e.data for e in got.events} <= set(payloads)
        for event in got.events:
            self.check_event(event)

    async def test_a_failing_handler_does_not_stop_reading(
        self,
        input_binding: InputBinding,
        input_binding_trigger: BindingTrigger | None,
        conformance_prefix: str,
    ) -> None:
        """The handler raises for the first event it is given; later events still come."""
        failed: list[BindingEvent] = []

        def fail_first(event: BindingEvent, attempt: int) -> bool:
            if not failed:
                failed.append(event)
                return True
            return False

        async with self.reading(input_binding, Deliveries(fail_first)) as got:
            if input_binding_trigger is None:
                await self.wait_for(lambda: len(got.processed) >= 1, "an event after the failure")
            else:
                payloads = self.payloads(conformance_prefix)
                for data in payloads:
                    await input_binding_trigger(data)
                # The failed event may come back or not (`redelivers`): the others must come.
                await self.wait_for(
                    lambda: (
                        bool(failed)
                        and {e.data for e in got.processed} >= set(payloads) - {failed[0].data}
                    ),
                    "the events after a failed one",
                )
        assert failed, "the handler was never called"

    async def test_a_failed_event_is_redelivered(
        self,
        input_binding: InputBinding,
        input_binding_trigger: BindingTrigger | None,
        conformance_prefix: str,
    ) -> None:
        if not self.redelivers:
            pytest.skip(f"{type(input_binding).__name__} does not redeliver (redelivers = False)")
        if input_binding_trigger is None:
            pytest.skip("redelivery needs events told apart: provide `input_binding_trigger`")
        [data] = self.payloads(conformance_prefix, 1)

        def fail_twice(event: BindingEvent, attempt: int) -> bool:
            return event.data == data and attempt <= 2

        async with self.reading(input_binding, Deliveries(fail_twice)) as got:
            await input_binding_trigger(data)
            await self.wait_for(
                lambda: any(e.data == data for e in got.processed),
                "the event processed after two failures",
            )
        # Two failures, then the success waited for (more: duplicates, which at-least-once allows).
        assert got.attempts(data) >= 3

    async def test_nothing_arrives_after_read_returns(
        self,
        input_binding: InputBinding,
        input_binding_trigger: BindingTrigger | None,
        conformance_prefix: str,
    ) -> None:
        """Cancelling `read` stops delivery: it returns promptly and the handler is not
        called again."""
        first, later = self.payloads(conformance_prefix, 2)
        async with self.reading(input_binding, Deliveries()) as got:
            if input_binding_trigger is not None:
                await input_binding_trigger(first)
            await self.wait_for(lambda: len(got.processed) >= 1, "the first event")
            cancelled = time.monotonic()
        assert got.ended_at is not None
        took = got.ended_at - cancelled
        assert took < _CALL_DEADLINE, f"read() took {took:.1f} s to return once cancelled"
        if input_binding_trigger is not None:
            await input_binding_trigger(later)
        await anyio.sleep(self.quiet_period)
        assert got.late == [], f"delivered after read() returned: {got.late}"
