"""What every Kafka component of this plugin shares: one producer per component, the
reachability probe, the bounded publish, and the consumers (`KafkaSubscription`) it started.

`pubsub.kafka` and `bindings.kafka` are thin faces over a `KafkaClient` (`KafkaComponent`: the
lifecycle both share): the connection and auth metadata (`KafkaMetadata`), the publish path and
the at-least-once consumer are the same.

Publishing. A publish returns once every in-sync replica has the record. It never waits out
aiokafka's own timeouts when the cluster is gone: before enqueueing (when nothing was heard from
the cluster in the last second, or the producer holds no open connection) and while waiting for
the broker's ack (at once when the connections drop, else every half second), a probe (a
Metadata request with no topics, bounded to a second) asks whether any broker answers; when
none does, the publish fails at once with `BackendUnavailable`. The whole publish is bounded by
`publishTimeout`.

A bulk publish (`publish_many`) is the same path for many records: each is handed to the
producer without awaiting the one before, then all the deliveries are awaited together under the
one `publishTimeout`, each record getting its own outcome.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentContext,
    ComponentError,
    Health,
    LayottoError,
)
from layotto.plugin.addresses import split_host_port

from layotto_kafka.aio import cancelling, quietly
from layotto_kafka.consumer import KafkaSubscription
from layotto_kafka.errors import (
    CHECK_AUTH,
    CHECK_BROKERS,
    CHECK_TLS,
    connection_reason,
    is_auth_failure,
    translate,
)
from layotto_kafka.settings import KafkaMetadata

log = logging.getLogger("layotto_kafka")

INIT_TIMEOUT = 10.0  # producer bootstrap at init
PROBE_TIMEOUT = 1.0  # "does any broker answer?"
HEALTH_TIMEOUT = 0.8  # check_health answers within a second
RECENT_CONTACT = 1.0  # a publish skips the pre-probe when the cluster answered this recently
DELIVERY_CHECK = 0.5  # while waiting for an ack, probe the cluster this often
DELIVERY_SLICE = 0.05  # ... and look at the connections this often
CLOSE_TIMEOUT = 5.0
CLOSE_PROBE_TIMEOUT = 0.5
SUBSCRIBE_TIMEOUT = 30.0  # join + assignment + positions
DIAGNOSE_TIMEOUT = 3.0  # after a failed bootstrap: one more connection, to say why

_M = TypeVar("_M", bound=KafkaMetadata)


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish: the value, the key (the partition) and the headers."""

    data: bytes
    key: bytes | None
    headers: Sequence[tuple[str, bytes]]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done callback for a delivery nobody awaits any more: fetch its exception so asyncio
    does not log "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


class KafkaClient:
    """`what` names the owner in every message ("pubsub 'orders'", "binding 'events'")."""

    def __init__(self, metadata: KafkaMetadata, app_id: str, what: str) -> None:
        self.metadata = metadata
        self.app_id = app_id
        self.what = what
        self._producer: AIOKafkaProducer | None = None
        self._ssl: ssl.SSLContext | None = None
        self._last_contact = -math.inf
        self._probe_task: asyncio.Task[bool] | None = None
        self._subscriptions: set[KafkaSubscription] = set()
        self._closed = False

    @property
    def started(self) -> bool:
        return self._producer is not None

    # -- lifecycle -----------------------------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by the producer and every consumer."""
        m = self.metadata
        options: dict[str, Any] = {
            "bootstrap_servers": list(m.brokers),
            "client_id": m.client_id_for(self.app_id),
            "security_protocol": m.security_protocol,
        }
        if self._ssl is not None:
            options["ssl_context"] = self._ssl
        if m.use_sasl:
            options["sasl_mechanism"] = m.sasl_mechanism
            options["sasl_plain_username"] = m.sasl_username
            options["sasl_plain_password"] = m.sasl_password.get_secret_value()
        return options

    async def start(self) -> None:
        if self._producer is not None:
            return
        try:
            self._ssl = self.metadata.ssl_context()
        except (ssl.SSLError, ValueError, OSError) as err:
            raise ComponentError(
                f"{self.what}: the TLS settings could not be loaded ({type(err).__name__}; "
                "check caCert, clientCert and clientKey)"
            ) from None
        m = self.metadata
        options = self.client_options()
        if m.max_message_bytes is not None:
            options["max_request_size"] = m.max_message_bytes
        producer = AIOKafkaProducer(
            **options,
            acks="all",
            enable_idempotence=m.idempotence,
            request_timeout_ms=max(1000, int(m.publish_timeout * 1000)),
            linger_ms=0,
        )
        try:
            await asyncio.wait_for(producer.start(), INIT_TIMEOUT)
        except BaseException as err:
            await quietly(producer.stop(), CLOSE_TIMEOUT)
            if isinstance(err, TimeoutError | KafkaConnectionError):
                why = None
                if isinstance(err, KafkaConnectionError):  # a timeout would time out again
                    why = await self._why_unreachable()
                raise why or BackendUnavailable(
                    f"{self.what}: Kafka is unavailable (no broker could be reached at "
                    f"startup; {CHECK_BROKERS})"
                ) from None
            if isinstance(err, Exception):
                raise translate(err, self.what) from None
            raise
        self._producer = producer
        self._last_contact = asyncio.get_running_loop().time()

    async def _why_unreachable(self) -> LayottoError | None:
        """After a failed bootstrap, which aiokafka reports as "Unable to bootstrap" whatever
        happened (a refused connection, a TLS handshake, a rejected SASL login): connect once
        more to each bootstrap broker with the same settings, and say, host-free, why the first
        that fails for a known reason did. None when nothing more specific was learnt within
        DIAGNOSE_TIMEOUT (all brokers together)."""
        try:
            async with asyncio.timeout(DIAGNOSE_TIMEOUT):
                return await self._diagnose()
        except TimeoutError:
            return None

    async def _diagnose(self) -> LayottoError | None:
        options = self.client_options()
        for entry in self.metadata.brokers:
            try:
                host, port = split_host_port(entry, example_port=9092)
            except ValueError:
                continue
            conn = None
            try:
                conn = await create_conn(
                    host,
                    port,
                    client_id=options["client_id"],
                    request_timeout_ms=int(DIAGNOSE_TIMEOUT * 1000),
                    ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                )
                await conn.send(MetadataRequest([]))
            except Exception as err:
                if is_auth_failure(err):
                    return translate(err, self.what)
                reason = _unreachable_reason(err, connected=conn is not None)
                if reason is not None:
                    return BackendUnavailable(
                        f"{self.what}: Kafka is unavailable at startup ({reason})"
                    )
            else:
                return None  # reachable now: it was a passing failure
            finally:
                if conn is not None:
                    conn.close()
        return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer = self._producer
        if producer is not None:
            # stop() flushes what is still queued; with no broker reachable nothing can be
            # flushed, so do not wait for it.
            reachable = await self.probe(CLOSE_PROBE_TIMEOUT)
            self._producer = None
            try:
                await asyncio.wait_for(
                    producer.stop(), CLOSE_TIMEOUT if reachable else CLOSE_PROBE_TIMEOUT
                )
            except Exception as err:
                log.debug("ignored while stopping the producer: %r", err)
                await quietly(producer.client.close(), CLOSE_TIMEOUT)
        probe = self._probe_task
        if probe is not None and not probe.done():
            await asyncio.wait((probe,), timeout=PROBE_TIMEOUT * 1.5)

    async def check_health(self) -> Health:
        if self._producer is None:
            return Health.down("closed" if self._closed else "not initialised")
        if await self.probe(HEALTH_TIMEOUT):
            return Health.up()
        return Health.down("no Kafka broker is reachable")

    # -- reachability ----------------------------------------------------------------------

    async def probe(self, within: float) -> bool:
        """True when some broker answers a Metadata request within `within` seconds.
        Concurrent callers share one probe."""
        task = self._probe_task
        if task is None or task.done():
            task = self._probe_task = asyncio.create_task(self._run_probe(PROBE_TIMEOUT))
        try:
            return await asyncio.wait_for(asyncio.shield(task), within)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if cancelling():
                raise
            return False  # the probe itself was cancelled: the component is closing

    async def _run_probe(self, within: float) -> bool:
        producer = self._producer
        if producer is None:
            return False
        client = producer.client
        node_ids = [broker.nodeId for broker in client.cluster.brokers()]
        if not node_ids:
            return False

        async def ask(node_id: int) -> bool:
            try:
                await client.send(node_id, MetadataRequest([]))
            except Exception:
                # KafkaError, OSError, TimeoutError, or whatever a failed (re)authentication
                # raised inside aiokafka (see `errors.during_sasl`): no answer either way.
                return False
            return True

        tasks = [asyncio.create_task(ask(node_id)) for node_id in node_ids]
        try:
            for next_done in asyncio.as_completed(tasks, timeout=within):
                if await next_done:
                    self._last_contact = asyncio.get_running_loop().time()
                    return True
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Nobody answered: the next publish probes first instead of trusting an old contact.
        self._last_contact = -math.inf
        return False

    def _unavailable(self, what: str) -> BackendUnavailable:
        return BackendUnavailable(f"{what}: Kafka is unavailable (no broker is reachable)")

    # -- publish -------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        (error,) = await self.publish_many(topic, [Record(data, key, headers)])
        if error is not None:
            raise error

    async def publish_many(
        self, topic: str, records: Sequence[Record]
    ) -> list[LayottoError | None]:
        """Publish `records` to `topic` at once: every record is handed to the producer
        without waiting for the one before (its accumulator puts the records of a partition
        into one produce request), then every delivery is awaited together, the whole bounded
        by `publishTimeout`. -> per record, in order: None when the broker acknowledged it,
        else why not (a record still unacknowledged at the deadline, or when no broker
        answers any more, fails: it may still arrive, which at-least-once allows). Raises
        `BackendUnavailable` before sending anything when no broker answers."""
        producer = self._producer
        what = f"{self.what}: publish to {topic!r}"
        if producer is None:
            raise BackendUnavailable(f"{what}: the component is not initialised")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.metadata.publish_timeout

        recent = loop.time() - self._last_contact <= RECENT_CONTACT
        if (not recent or not _has_connection(producer.client)) and not await self.probe(
            min(PROBE_TIMEOUT, max(0.05, deadline - loop.time()))
        ):
            raise self._unavailable(what)
        errors: list[LayottoError | None] = [None] * len(records)
        pending: dict[asyncio.Future[Any], int] = {}
        index = 0
        try:
            # A cancelled send() enqueues nothing (aiokafka's contract): the records from
            # there on are simply not sent.
            async with asyncio.timeout_at(max(deadline, loop.time() + 0.05)):
                for index, record in enumerate(records):
                    try:
                        delivery = await producer.send(
                            topic, record.data, key=record.key, headers=list(record.headers)
                        )
                    except Exception as err:
                        errors[index] = translate(err, what)
                        continue
                    delivery.add_done_callback(_retrieve)
                    pending[delivery] = index
                index = len(records)
        except TimeoutError:
            late = await self._timed_out(what)
            for rest in range(index, len(records)):
                if errors[rest] is None:
                    errors[rest] = late

        next_check = loop.time() + DELIVERY_CHECK
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                late = await self._timed_out(what)
                for position in pending.values():
                    errors[position] = late
                break
            done, _ = await asyncio.wait(pending, timeout=min(DELIVERY_SLICE, remaining))
            for delivery in done:
                position = pending.pop(delivery)
                if delivery.cancelled():  # never acknowledged: the producer is going away
                    errors[position] = self._unavailable(what)
                elif (error := delivery.exception()) is not None:
                    errors[position] = translate(error, what)
                else:
                    self._last_contact = loop.time()
            if not pending:
                break
            # Not all acked yet: is anybody there at all? Ask at once when the connections
            # are gone, else every DELIVERY_CHECK while nothing was heard from the cluster.
            now = loop.time()
            stale = now >= next_check and now - self._last_contact > DELIVERY_CHECK
            if stale or not _has_connection(producer.client):
                next_check = now + DELIVERY_CHECK
                if not await self.probe(min(PROBE_TIMEOUT, max(0.05, deadline - now))):
                    gone = self._unavailable(what)
                    for position in pending.values():
                        errors[position] = gone
                    break
        return errors

    async def _timed_out(self, what: str) -> LayottoError:
        if not await self.probe(PROBE_TIMEOUT / 2):
            return self._unavailable(what)
        return BackendTimeout(
            f"{what}: Kafka did not acknowledge the message within publishTimeout "
            f"({self.metadata.publish_timeout:g} s)"
        )

    # -- consume -------------------------------------------------------------------------------

    async def subscribe(
        self, topics: Sequence[str], group: str, *, within: float
    ) -> KafkaSubscription:
        """Join `group` for `topics`; return once the assignment is known and its positions
        are committed (see `KafkaSubscription`)."""
        if self._producer is None:
            raise BackendUnavailable(f"{self.what}: the component is not initialised")
        subscription = KafkaSubscription(self, topics, group)
        await subscription.start(within)
        self._subscriptions.add(subscription)
        return subscription

    def forget(self, subscription: KafkaSubscription) -> None:
        self._subscriptions.discard(subscription)


def _unreachable_reason(err: BaseException, *, connected: bool) -> str | None:
    """Why a diagnostic connection failed (not on authentication), host-free; None for a
    timeout or a refusal (the default "check metadata.brokers" says that already)."""
    if connected:
        # The connection (and its TLS and SASL handshakes) succeeded, the first request did not.
        return (
            "the broker closed the connection at the first request; it may require "
            f"authentication ({CHECK_AUTH}) or TLS ({CHECK_TLS})"
        )
    if isinstance(err, TimeoutError):
        return None
    reason = connection_reason(err)
    if reason.startswith("TLS"):
        return reason
    if reason == "connection failed" and isinstance(err, KafkaConnectionError):
        # Closed by the broker during the handshakes: a broker that wants TLS or SASL.
        return (
            "the broker closed the connection during the handshake; it may require "
            f"authentication ({CHECK_AUTH}) or TLS ({CHECK_TLS})"
        )
    return None


def _has_connection(client: Any) -> bool:
    """Whether the client holds at least one open broker connection. A broker that goes away
    closes them, so this notices an outage before any request times out. (aiokafka keeps its
    connections in a private dict; should that change, the answer is "yes" and publish relies
    on the one-second recency rule alone.)"""
    conns = getattr(client, "_conns", None)
    if not isinstance(conns, dict):
        return True
    return any(conn.connected() for conn in conns.values())


class KafkaComponent(Generic[_M]):
    """The lifecycle `pubsub.kafka` and `bindings.kafka` share: one `KafkaClient` over the
    component's metadata, started by `init`, closed by `close`, asked by `check_health`.
    `what` ("<noun> '<name>'") names the component in every message."""

    noun: ClassVar[str]
    # A class attribute so that tests may shorten it.
    subscribe_timeout: float = SUBSCRIBE_TIMEOUT

    def __init__(self, metadata: _M, context: ComponentContext) -> None:
        self.metadata = metadata
        self.name = context.name
        self.app_id = context.app_id
        self.what = f"{self.noun} '{context.name}'"
        self.client = KafkaClient(metadata, context.app_id, self.what)

    @classmethod
    def create(cls, metadata: _M, context: ComponentContext) -> Self:
        return cls(metadata, context)

    async def init(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    async def check_health(self) -> Health:
        return await self.client.check_health()
