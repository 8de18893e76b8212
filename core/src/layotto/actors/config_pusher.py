"""ConfigPusher: configuration subscriptions made over Dapr's HTTP API, delivered to the app as
daprd delivers them (dapr-compat.md §3.4).

`GET /v1.0/configuration/{store}/subscribe` subscribes through the `ConfigurationService` (the
same subscriptions as the gRPC `SubscribeConfiguration`, so `UnsubscribeConfiguration(id)`, the
HTTP unsubscribe route and `/actuator/info` all see them) and hands the subscription to this
actor, which owns one push task per subscription in its task group. For each change batch the
task sends daprd's update event, `{"id": ..., "items": {key: {value, version, metadata}}}`,
once per key in the batch, through the app connection's `invoke`: `POST
/configuration/<store>/<key>` for an HTTP app, Dapr's `AppCallback/OnInvoke` with that method
(leading slash included, HTTP extension POST, content type `application/json`) for a gRPC app,
as daprd's app channels do.

- Each delivery is bounded by `timeout`. An app that fails, answers a status other than 200 (as
  daprd counts it) or does not answer in time is logged once for that delivery, naming the
  store, the key and the status; there is no retry (daprd's default), and the subscription goes
  on with the next update.
- A subscription ends when it is unsubscribed (by id, over HTTP or gRPC), when the store's watch
  fails or drops it (logged), and when the actor stops: `stop()` cancels the push tasks and
  closes their subscriptions (no task outlives the actor).
- With tracing on (`tracer`, the runtime's), each POST is a CONSUMER span,
  `configuration/<store>` (bounded: never the key), a new trace (an update has no caller),
  with `db.system` and `db.name`; it goes to the app as `traceparent` (+ `tracestate`) in the
  request headers (gRPC metadata), and an undelivered update is an ERROR span. daprd traces
  no configuration push; this makes the app's handling of an update part of a trace.
- An app on Layotto's AppCallback (`app.protocol: layotto`) has no `OnInvoke`: subscribing is
  refused with UNIMPLEMENTED, since nothing could be delivered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from layotto.api.config_messages import wants_initial_values
from layotto.api.dapr_http_config import item_json
from layotto.errors import LayottoError, ShuttingDown, Unsupported
from layotto.plugin import ConfigItem
from layotto.plugin.rpc import RpcRequest, RpcResponse, TargetError
from layotto.resiliency import Policy
from layotto.services.configuration import ConfigurationService, Subscription
from layotto.tracing import NO_TRACER, SpanKind, Tracer, current_span, deactivate, detach

log = logging.getLogger(__name__)

# How long the app may take to take one update (daprd bounds it by its resiliency policy).
PUSH_TIMEOUT_SECONDS = 5.0
# How long stop() waits for the push tasks to end once cancelled (they only close streams).
STOP_TIMEOUT_SECONDS = 5.0
CONTENT_TYPE = "application/json"
# Over the Layotto API the app serves no OnInvoke: nothing can be delivered to it.
LAYOTTO_PROTOCOL = "layotto"


class _Undelivered(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class AppInvoker(Protocol):
    """The app connection, as far as the pusher needs it (`AppConnection`,
    `HttpAppConnection`)."""

    async def invoke(self, request: RpcRequest) -> RpcResponse: ...


def update_event(subscription_id: str, batch: Sequence[ConfigItem]) -> tuple[bytes, list[str]]:
    """daprd's update event for `batch` as JSON (Go's encoder: keys of `items` sorted, a final
    newline) and the keys it carries, in order; a key changed twice in a batch appears once,
    with its last item."""
    items = {item.key: item for item in batch}
    keys = sorted(items)
    event = {"id": subscription_id, "items": {key: item_json(items[key]) for key in keys}}
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
    return body.encode(), keys


def update_path(store: str, key: str) -> str:
    """The app's method for an update of `key`, exactly as daprd names it."""
    return f"/configuration/{store}/{key}"


class ConfigPusher:
    name = "config_pusher"

    def __init__(
        self,
        service: ConfigurationService,
        app: AppInvoker,
        app_id: str,
        *,
        protocol: str = "auto",
        timeout: float = PUSH_TIMEOUT_SECONDS,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self._service = service
        self._app = app
        self._app_id = app_id
        self._protocol = protocol
        self._timeout = timeout
        self._tracer = tracer
        self._task_group: TaskGroup | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._running = False

    @property
    def subscription_ids(self) -> list[str]:
        """The subscriptions being pushed now."""
        return list(self._subscriptions)

    # -- actor -----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                task_status.started()
                await self._stop.wait()
                self._task_group = None  # no new subscription from here on
                tg.cancel_scope.cancel()
        finally:
            self._task_group = None
            self._running = False
            for subscription in list(self._subscriptions.values()):
                subscription.close()
            self._subscriptions.clear()
            self._done.set()

    async def stop(self) -> None:
        """End every subscription and wait (shielded, bounded) for the push tasks to end."""
        self._stop.set()
        if not self._running:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_SECONDS):
            await self._done.wait()

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, store: str, keys: Sequence[str], metadata: Mapping[str, str]) -> str:
        """Subscribe to `keys` of `store` (every key when empty) for the app; the
        subscription's id. Store and key errors are the service's."""
        if self._protocol == LAYOTTO_PROTOCOL:
            raise Unsupported(
                "configuration updates cannot be delivered to this app: it serves Layotto's "
                "AppCallback (app.protocol: layotto), which has no OnInvoke; subscribe with "
                "the gRPC SubscribeConfiguration API instead",
                reason="ERR_CONFIGURATION_SUBSCRIBE",
            )
        if self._task_group is None:
            raise ShuttingDown("configuration updates are not delivered: the sidecar is stopping")
        subscription = await self._service.subscribe(
            store, self._app_id, "", "", keys, initial=wants_initial_values(metadata)
        )
        tg = self._task_group
        if tg is None:  # stopped while subscribing
            subscription.close()
            raise ShuttingDown("configuration updates are not delivered: the sidecar is stopping")
        self._subscriptions[subscription.id] = subscription
        tg.start_soon(self._push, subscription, name=f"config push {subscription.id}")
        return subscription.id

    async def _push(self, subscription: Subscription) -> None:
        store = subscription.scope.store_name
        # Started inside the subscribe call: its span is not the updates' parent.
        token = None if current_span() is None else detach()
        try:
            async for batch in subscription:
                await self._deliver(subscription.id, store, batch)
            log.info("configuration subscription %s to store %r ended", subscription.id, store)
        except ShuttingDown:
            log.info(
                "configuration subscription %s to store %r ended: the sidecar is stopping",
                subscription.id,
                store,
            )
        except LayottoError as err:
            log.error(
                "configuration subscription %s to store %r ended: %s",
                subscription.id,
                store,
                err.message,
            )
        except Exception:
            # A bug ends this subscription only, never the others (or the actor).
            log.exception(
                "configuration subscription %s to store %r failed", subscription.id, store
            )
        finally:
            if token is not None:
                deactivate(token)
            self._subscriptions.pop(subscription.id, None)
            subscription.close()

    async def _deliver(self, subscription_id: str, store: str, batch: Sequence[ConfigItem]) -> None:
        body, keys = update_event(subscription_id, batch)
        for key in keys:
            request = RpcRequest(
                app_id=self._app_id,
                method=update_path(store, key),
                data=body,
                content_type=CONTENT_TYPE,
                verb="POST",
                timeout=self._timeout,
            )
            status = await self._send_under(self._service.inbound_policy(store), store, request)
            if status is not None:
                log.error(
                    "configuration update of key %r from store %r was not delivered to the "
                    "app (subscription %s): %s",
                    key,
                    store,
                    subscription_id,
                    status,
                    extra={"store": store, "key": key, "subscription": subscription_id},
                )

    async def _send_under(self, policy: Policy, store: str, request: RpcRequest) -> str | None:
        """`_send` under the store's inbound resiliency policy (daprd's default: one try)."""
        if not policy:
            return await self._send(store, request)

        async def once() -> None:
            problem = await self._send(store, request)
            if problem is not None:
                raise _Undelivered(problem)

        try:
            await policy.run(once)
        except _Undelivered as err:
            return err.problem
        except LayottoError as err:  # the policy's timeout or open breaker
            return f"status {err.category.name}: {err.message}"
        return None

    async def _send(self, store: str, request: RpcRequest) -> str | None:
        """Deliver one update; None when the app took it, else what went wrong (the status).
        With tracing on, in a span of its own whose context the app gets."""
        tracer = self._tracer
        if not tracer.enabled:
            return await self._send_once(request)
        span = tracer.start(f"configuration/{store}", SpanKind.CONSUMER)
        if span is None:  # not reached: only a recording tracer is enabled
            return await self._send_once(request)
        if span.sampled:
            span.set("db.system", "configuration")
            span.set("db.name", store)
        request = request.with_(headers={**request.headers, **span.headers()})
        try:
            problem = await self._send_once(request)
        except BaseException as err:
            span.fail(type(err).__name__)
            raise
        else:
            if problem is not None:
                span.fail(problem)
            return problem
        finally:
            tracer.end(span)

    async def _send_once(self, request: RpcRequest) -> str | None:
        try:
            # The connection bounds the call by `request.timeout`; this bounds it regardless.
            with anyio.fail_after(self._timeout + 1.0):
                response = await self._app.invoke(request)
        except TargetError as err:
            if err.http_status is not None:
                return f"status {err.http_status}"
            return f"status {err.category.name}: {err.message}"
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except LayottoError as err:
            return f"status {err.category.name}: {err.message}"
        # daprd takes only 200 from an HTTP app as delivered (a gRPC app has no status).
        if response.http_status is not None and response.http_status != 200:
            return f"status {response.http_status}"
        return None
