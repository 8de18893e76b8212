"""BindingDispatcher: input binding events to the app's Dapr `OnBindingEvent` (dapr-compat.md
1.4, 2.7, 3.6), or to `POST /<binding-name>` for an app on Dapr's HTTP app channel
(`http_binding_callback`).

Once the app passed its first health check (or offers none: the runtime's `AppHealth`), it asks
`ListInputBindings` once (over HTTP: `OPTIONS /<binding-name>` per configured binding). For
every listed name that is configured as an input binding it runs `component.read(handler)`,
reading again with capped, jittered backoff when `read` raises. A
listed name that is not configured is warned about (once: the list is asked once). Readiness
waits for the list (`app_input_bindings` is INIT until then); each running binding has an
indicator (`input_binding:<name>`), DOWN while its `read` is failing.

The handler delivers one event and returns only once the app processed it, so the component
marks nothing processed before that (at-least-once). While the app fails its health checks,
events wait before they are delivered. The app's reply is then carried out before the handler
returns: `states` are saved into `store_name` through the Dapr-flavoured state service, and
`data` goes to each output binding in `to` (operation `create`), one after the other
(SEQUENTIAL) or all at once (PARALLEL). A failure the backend may recover from (unavailable,
timed out, exhausted) raises, so the event is redelivered; a failure that a redelivery cannot
fix (an unknown store or binding, a bad request, an ETag mismatch) is logged and the event
counts as processed (the app did process it).

With tracing on (the bindings service's `tracer`), each event is a CONSUMER span while the
app is called, named `bindings/<name>` as daprd names it: child of the event's own
`traceparent` (+ `tracestate`) metadata when it has a valid one (a broker header), else a new
trace. It is current while the app is called, so the app gets it as its parent (gRPC metadata
or HTTP headers), and while the reply is carried out (output bindings in `to` are its
children). Attributes as daprd's: `db.system` (`bindings`), `db.name` (the binding),
`rpc.service`; an event the app did not process is an ERROR span. (daprd gives its callback
spans kind CLIENT; CONSUMER here, as for pub/sub deliveries: an event handed to the app.)

Shutdown (`AppDispatcher`): new events wait, unprocessed, until reading is cancelled; in-flight
deliveries finish until the grace deadline, then every `read` is cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskGroup

from layotto.actors.app_dispatcher import READINESS, AppDispatcher
from layotto.actors.app_health import AppHealth
from layotto.api.binding_callback import BindingApp, BindingReply
from layotto.backoff import backoff_delay
from layotto.errors import ErrorCategory, LayottoError
from layotto.health import HealthRegistry
from layotto.plugin import BindingEvent, Health, HealthStatus, InputBinding
from layotto.services.bindings import BindingService
from layotto.services.state import StateService
from layotto.tracing import (
    TRACEPARENT,
    TRACESTATE,
    SpanKind,
    Tracer,
    active,
    ending,
    parse_headers,
)

log = logging.getLogger(__name__)

APP_INDICATOR = "app_input_bindings"
FORWARD_OPERATION = "create"
# Failures a redelivery of the event may get past; anything else is the reply's own fault.
TRANSIENT = frozenset(
    {
        ErrorCategory.UNAVAILABLE,
        ErrorCategory.DEADLINE_EXCEEDED,
        ErrorCategory.RESOURCE_EXHAUSTED,
    }
)


def binding_indicator(name: str) -> str:
    return f"input_binding:{name}"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How `read` is retried: exponential from `initial` to `cap`; a `read` that ran for
    `healthy_after` seconds before failing starts the backoff over."""

    initial: float = 0.2
    cap: float = 10.0
    healthy_after: float = 30.0


class BindingDispatcher(AppDispatcher):
    name = "binding_dispatcher"
    indicator = APP_INDICATOR

    def __init__(
        self,
        bindings: BindingService,
        state: StateService,
        app: BindingApp,
        health: HealthRegistry,
        app_health: AppHealth,
        *,
        grace_period: float,
        restart: RestartPolicy | None = None,
    ) -> None:
        super().__init__(health, app_health, grace_period=grace_period)
        self._bindings = bindings
        self._state = state
        self._app = app
        self._restart = restart or RestartPolicy()
        self._reading: list[str] = []
        self._in_flight = 0
        self._idle = anyio.Event()

    @property
    def reading(self) -> list[str]:
        """The input bindings being read for the app."""
        return list(self._reading)

    async def _start(self, tg: TaskGroup) -> Mapping[str, Any]:
        names = await self._app.list_input_bindings()
        log.info("the app asks for %d input binding(s)", len(names), extra={"bindings": names})
        configured = self._bindings.inputs()
        self._reading = []
        for name in names:
            component = configured.get(name)
            if component is None:
                log.warning(
                    "the app lists input binding %r, but no input binding of that name is "
                    "configured: it gets no events from it",
                    name,
                )
                continue
            self._reading.append(name)
            self._health.set(binding_indicator(name), Health(HealthStatus.INIT), READINESS)
            tg.start_soon(self._read_loop, name, component)
        return {}

    async def _drain(self) -> None:
        while self._in_flight:
            self._idle = anyio.Event()
            await self._idle.wait()

    def _forget(self) -> None:
        for name in self._reading:
            self._health.remove(binding_indicator(name))

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self, name: str, component: InputBinding) -> None:
        indicator = binding_indicator(name)
        handler = partial(self._handle, name)
        attempt = 0
        while True:
            self._health.set(indicator, Health.up(), READINESS)
            started = anyio.current_time()
            try:
                await component.read(handler)
            except Exception as err:
                if anyio.current_time() - started >= self._restart.healthy_after:
                    attempt = 0
                delay = backoff_delay(attempt, base=self._restart.initial, cap=self._restart.cap)
                reason = err.message if isinstance(err, LayottoError) else type(err).__name__
                if not isinstance(err, LayottoError):
                    log.error("input binding %r failed", name, exc_info=err)
                log.warning(
                    "reading input binding %r failed (%s); reading again in %.1f s",
                    name,
                    reason,
                    delay,
                )
                self._health.set(indicator, Health.down(reason), READINESS)
                attempt += 1
                await anyio.sleep(delay)
                continue
            log.info("input binding %r has nothing (more) to read", name)
            self._health.remove(indicator)
            return

    async def _handle(self, name: str, event: BindingEvent) -> bytes | None:
        """Deliver one event and carry out the app's reply; raise when it was not processed."""
        # Held back while the app is unhealthy; once released (shutdown) this raises: the
        # event stays unprocessed.
        await self._app_health.wait_deliverable()
        if self._stop.is_set():
            # Draining: the event stays unprocessed; reading is cancelled shortly.
            await anyio.sleep_forever()
        self._in_flight += 1
        try:
            tracer = self._bindings.tracer
            if tracer.enabled:
                reply = await self._deliver_traced(tracer, name, event)
            else:
                reply = await self._deliver(name, event)
                await self._follow_up(name, reply)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        return reply.data or None

    async def _deliver(self, name: str, event: BindingEvent) -> BindingReply:
        # The binding's inbound resiliency policy (timeout, retries, breaker), if any.
        policy = self._bindings.inbound_policy(name)
        return await policy.run(lambda: self._app.on_binding_event(name, event))

    async def _deliver_traced(self, tracer: Tracer, name: str, event: BindingEvent) -> BindingReply:
        """`_deliver` in a CONSUMER span (module docstring), then `_follow_up` with the span
        still current: the reply's output bindings are its children."""
        metadata = event.metadata
        parent = parse_headers(metadata.get(TRACEPARENT), metadata.get(TRACESTATE))
        span = tracer.start(f"bindings/{name}", SpanKind.CONSUMER, parent)
        if span is None:  # not reached: only a recording tracer is enabled
            reply = await self._deliver(name, event)
            await self._follow_up(name, reply)
            return reply
        if span.sampled:
            span.set("db.system", "bindings")
            span.set("db.name", name)
            span.set("rpc.service", "Dapr")
        with active(span):
            with ending(tracer, span):
                reply = await self._deliver(name, event)
            await self._follow_up(name, reply)
        return reply

    # -- the app's reply -------------------------------------------------------------------

    async def _follow_up(self, name: str, reply: BindingReply) -> None:
        if reply.states:
            await _tolerating(
                f"saving {len(reply.states)} state(s) from binding {name!r} into "
                f"{reply.store_name!r}",
                lambda: self._state.save(reply.store_name, reply.states),
            )
        if not reply.to:
            return
        sends = [
            (
                f"sending the reply to binding {name!r} on to output binding {target!r}",
                partial(self._bindings.invoke, target, FORWARD_OPERATION, reply.data),
            )
            for target in reply.to
        ]
        if not reply.parallel:
            for what, send in sends:
                await _tolerating(what, send)
            return
        failures: list[LayottoError] = []

        async def one(what: str, send: Callable[[], Awaitable[object]]) -> None:
            try:
                await _tolerating(what, send)
            except LayottoError as err:
                failures.append(err)

        async with anyio.create_task_group() as tg:
            for what, send in sends:
                tg.start_soon(one, what, send)
        if failures:
            raise failures[0]


async def _tolerating(what: str, call: Callable[[], Awaitable[object]]) -> None:
    """Run `call`; a transient failure raises (the event is redelivered), any other failure is
    logged and swallowed (a redelivery could not fix it)."""
    try:
        await call()
    except LayottoError as err:
        if err.category in TRANSIENT:
            log.warning("%s failed (%s): the event will be delivered again", what, err.message)
            raise
        log.error("%s failed (%s): not retried", what, err.message)
