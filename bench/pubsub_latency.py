"""Publish -> subscriber latency of the pub/sub components: ``python -m bench --latency pubsub``.

For every component (``memory``, ``redis``, ``kafka``): the backend the harness provides (as for
the ``pubsub_publish_<component>`` scenarios) and, in the harness process on one asyncio loop:

1. **sidecar, callback**: a ``CallbackApp`` (``layotto.testing.pubsub``) served on a free port,
   subscribing to ``<run id>-callback``; a sidecar subprocess with the component and
   ``app.port`` pointing at it; readiness (``/v1.0/healthz`` 204) means the subscription is made.
   Events are published with ``PublishEvent`` (grpclib ``RuntimeStub.publish_event``) one at a
   time; each is timed from just before the call to the moment ``OnTopicEvent`` brings it to the
   app's handler, matched by a token in the payload.
2. **sidecar, streaming**: the same sidecar, a ``SubscribeTopicEvents`` stream (``topic_stream``)
   on ``<run id>-stream``, each event timed to its arrival in the stream's handler.
3. **direct**: no sidecar. The component's own backend client publishes the same CloudEvents
   envelope and a direct consumer receives it: the in-memory component's ``publish`` ->
   ``Subscription.receive``; redis-py ``XADD`` -> an ``XREADGROUP ... BLOCK`` loop (own
   connection, ``XACK`` after each entry); aiokafka ``AIOKafkaProducer`` (acks=all) -> an
   ``AIOKafkaConsumer`` in a group of its own with the component's consumer settings.

Each path has its own topic and consumer group, a few warm-up events (waited for, not recorded),
then N measured events, ``gap`` seconds apart. An event not seen within ``timeout`` counts as
missed. ``gc.freeze()`` keeps collections of the harness's heap out of the measured events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpclib.client
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.services.cloudevents import CLOUDEVENTS_JSON, EventStatus, TopicEvent
from layotto.testing.pubsub import CallbackApp, Route, serve_app, topic_stream

from bench.harness import BenchOptions, _meta, _provide_backends, _stderr, cleanup_external
from bench.latency import cancel_task, fmt_ms, summarize_ms, write_results
from bench.scenarios.pubsub import (
    APP_ID,
    COMPONENT_BACKENDS,
    COMPONENT_TYPES,
    GROUP_METADATA_KEY,
    KAFKA_FETCH_MAX_WAIT_MS,
    KAFKA_HEARTBEAT_MS,
    KAFKA_PRODUCER_OPTIONS,
    KAFKA_SESSION_TIMEOUT_MS,
    METADATA,
    PUBSUB,
    REDIS_MAX_LEN,
    cloudevent,
    payload,
    publish_request,
    sidecar_config,
    token_of_cloudevent,
    token_of_data,
)
from bench.sidecar import Sidecar

COMPONENTS: tuple[str, ...] = ("memory", "redis", "kafka")
DEFAULT_MESSAGES = 200
READY_TIMEOUT_S = 60.0
SUBSCRIBE_TIMEOUT_S = 30.0

PATHS: Mapping[str, str] = {
    "callback": "sidecar: PublishEvent -> OnTopicEvent (app callback)",
    "streaming": "sidecar: PublishEvent -> SubscribeTopicEvents (stream)",
    "direct": "direct",
}
DIRECT_HOW: Mapping[str, str] = {
    "memory": "direct: InMemoryPubSub.publish -> Subscription.receive, in-process",
    "redis": "direct: redis-py XADD -> XREADGROUP BLOCK loop (+ XACK)",
    "kafka": (
        "direct: aiokafka producer (acks=all) -> AIOKafkaConsumer "
        f"(fetch_max_wait_ms {KAFKA_FETCH_MAX_WAIT_MS}, as the sidecar's fetchMaxWait)"
    ),
}


@dataclass(slots=True)
class PubSubLatencyOptions:
    components: list[str] = field(default_factory=lambda: list(COMPONENTS))
    #: Measured events per path.
    messages: int = DEFAULT_MESSAGES
    warmup_messages: int = 5
    #: Seconds an event may take before it counts as missed.
    timeout_s: float = 5.0
    #: Pause between events (seconds), so one event's delivery never overlaps the next publish.
    gap_s: float = 0.01
    streaming: bool = True
    direct: bool = True
    redis_address: str | None = None
    kafka_address: str | None = None

    def validate(self) -> None:
        unknown = [c for c in self.components if c not in COMPONENTS]
        if not self.components or unknown:
            raise ValueError(
                f"components must be among {', '.join(COMPONENTS)} (got {self.components})"
            )
        if self.messages < 1:
            raise ValueError("messages must be >= 1")
        if self.warmup_messages < 0 or self.timeout_s <= 0 or self.gap_s < 0:
            raise ValueError("warm-up messages >= 0, timeout > 0 and gap >= 0 required")
        BenchOptions(redis_address=self.redis_address, kafka_address=self.kafka_address).validate()


class Arrivals:
    """When each expected token arrived (``time.perf_counter``), from any handler."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.seen: set[str] = set()
        self.duplicates = 0
        self.unexpected = 0

    def expect(self, token: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[token] = future
        return future

    def forget(self, token: str) -> None:
        self.waiting.pop(token, None)
        self.seen.add(token)  # a late arrival is not "unexpected"

    def arrived(self, token: str) -> None:
        now = time.perf_counter()
        future = self.waiting.pop(token, None)
        if future is not None:
            self.seen.add(token)
            if not future.done():
                future.set_result(now)
        elif token in self.seen:
            self.duplicates += 1
        else:
            self.unexpected += 1

    async def on_event(self, event: TopicEvent) -> EventStatus:
        """The app's handler (callback and streaming): note the arrival, answer SUCCESS."""
        try:
            token = token_of_data(event.data)
        except (ValueError, KeyError, TypeError):
            token = ""
        self.arrived(token)
        return EventStatus.SUCCESS


Publish = Callable[[str], Awaitable[Callable[[], Awaitable[Any]]]]


async def _series(
    path: str,
    publish: Publish,
    arrivals: Arrivals,
    options: PubSubLatencyOptions,
    prefix: str,
) -> dict[str, Any]:
    """Warm-up, then ``options.messages`` events one at a time.

    ``publish(token)`` prepares one publish (payload, request) and returns the call to time."""
    latencies: list[float] = []
    call_times: list[float] = []
    missed = 0

    async def one(token: str) -> tuple[float, float] | None:
        call = await publish(token)  # built before the clock starts
        arrival = arrivals.expect(token)
        started = time.perf_counter()
        await call()
        called = time.perf_counter()
        try:
            arrived = await asyncio.wait_for(arrival, options.timeout_s)
        except TimeoutError:
            arrivals.forget(token)
            return None
        return arrived - started, called - started

    warm_missed = 0
    for w in range(options.warmup_messages):
        if await one(f"{prefix}-warm-{w}") is None:
            warm_missed += 1
        await asyncio.sleep(options.gap_s)
    gc.collect()
    gc.freeze()
    try:
        for k in range(options.messages):
            result = await one(f"{prefix}-{k}")
            if result is None:
                missed += 1
            else:
                latencies.append(result[0])
                call_times.append(result[1])
            if options.gap_s:
                await asyncio.sleep(options.gap_s)
        # Give stragglers a moment, so duplicates of the last events are counted.
        await asyncio.sleep(min(0.2, options.timeout_s))
    finally:
        gc.unfreeze()
    return {
        "path": path,
        "messages": options.messages,
        "received": len(latencies),
        "missed": missed,
        "warmup_missed": warm_missed,
        "duplicates": arrivals.duplicates,
        "unexpected": arrivals.unexpected,
        "latency_ms": summarize_ms(latencies),
        "publish_call_ms": summarize_ms(call_times),
    }


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


async def _wait_ready(sidecar: Sidecar) -> float:
    """Until ``/v1.0/healthz`` answers 204: the app's subscriptions are made."""
    url = f"http://127.0.0.1:{sidecar.http_port}/v1.0/healthz"
    started = time.perf_counter()
    deadline = started + READY_TIMEOUT_S
    while await asyncio.to_thread(_http_status, url) != 204:
        if not sidecar.alive():
            raise RuntimeError(f"the sidecar exited:\n{sidecar.log_tail(20)}")
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"the sidecar was not ready (subscriptions) within {READY_TIMEOUT_S:g} s:\n"
                + sidecar.log_tail(20)
            )
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


def _group(component: str, name: str) -> dict[str, str]:
    return {GROUP_METADATA_KEY[component]: name}


async def _precreate_kafka_topics(address: str, topics: list[str]) -> None:
    """One message to each topic, so that it exists before anybody subscribes (a broker with
    auto-created topics makes it on the first produce; the subscribers start at the end)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=address, **KAFKA_PRODUCER_OPTIONS)
    await producer.start()
    try:
        for topic in topics:
            await producer.send_and_wait(topic, b"{}")
    finally:
        await producer.stop()


async def _sidecar_rows(
    component: str,
    backends: Mapping[str, str],
    options: PubSubLatencyOptions,
    run_id: str,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    callback_topic, stream_topic = f"{run_id}-callback", f"{run_id}-stream"
    arrivals = Arrivals()
    route = Route(
        PUBSUB, callback_topic, arrivals.on_event, metadata=_group(component, f"{run_id}-callback")
    )
    rows: list[dict[str, Any]] = []
    async with serve_app(CallbackApp([route])) as app_port:
        sidecar = Sidecar(
            config=sidecar_config(component, backends, app_port=app_port), check_exit=False
        )
        await asyncio.to_thread(sidecar.start)
        channel = grpclib.client.Channel("127.0.0.1", sidecar.grpc_port)
        stream_channel = grpclib.client.Channel("127.0.0.1", sidecar.grpc_port)
        try:
            ready_s = await _wait_ready(sidecar)
            say(
                f"{component}: sidecar pid {sidecar.pid} ready in {sidecar.startup_s:.2f} s, "
                f"subscribed {ready_s:.2f} s later"
            )
            stub = pb.RuntimeStub(channel)

            def publisher(topic: str) -> Publish:
                async def prepare(token: str) -> Callable[[], Awaitable[Any]]:
                    request = publish_request(topic, payload(token))
                    return lambda: stub.publish_event(request)

                return prepare

            cpu = sidecar.cpu_seconds()
            row = await _series(
                "callback", publisher(callback_topic), arrivals, options, f"{run_id}-c"
            )
            row["sidecar_cpu_s"] = round(sidecar.cpu_seconds() - cpu, 4)
            rows.append(row)
            if options.streaming:
                streamed = Arrivals()
                # Returns once the sidecar answered `initial_response` (subscription made).
                async with topic_stream(
                    stream_channel,
                    PUBSUB,
                    stream_topic,
                    streamed.on_event,
                    metadata=_group(component, f"{run_id}-stream"),
                ):
                    cpu = sidecar.cpu_seconds()
                    row = await _series(
                        "streaming", publisher(stream_topic), streamed, options, f"{run_id}-s"
                    )
                    row["sidecar_cpu_s"] = round(sidecar.cpu_seconds() - cpu, 4)
                    rows.append(row)
        finally:
            channel.close()
            stream_channel.close()
            await asyncio.to_thread(sidecar.stop)
    summary = sidecar.summary()
    summary["component"] = component
    return rows, summary


# -- direct baselines ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _direct_memory(topic: str, arrivals: Arrivals) -> AsyncIterator[Publish]:
    from layotto.builtin.memory_pubsub import InMemoryPubSub
    from layotto.plugin import PublishRequest, SubscribeRequest

    pubsub = InMemoryPubSub(app_id=APP_ID)
    await pubsub.init()
    subscription = await pubsub.subscribe(SubscribeRequest(topic))

    async def consume() -> None:
        while True:
            message = await subscription.receive()
            arrivals.arrived(token_of_cloudevent(message.data))
            await message.ack()

    async def prepare(token: str) -> Callable[[], Awaitable[Any]]:
        request = PublishRequest(
            topic, cloudevent(topic, payload(token)), METADATA, CLOUDEVENTS_JSON
        )
        return lambda: pubsub.publish(request)

    task = asyncio.create_task(consume())
    try:
        yield prepare
    finally:
        await cancel_task(task)
        await subscription.close()
        await pubsub.close()


@contextlib.asynccontextmanager
async def _direct_redis(
    address: str, topic: str, group: str, arrivals: Arrivals
) -> AsyncIterator[Publish]:
    from layotto.plugin import PublishRequest
    from layotto_redis.pubsub import encode_fields
    from layotto_redis.settings import RedisPubSubMetadata, create_client

    settings = RedisPubSubMetadata.model_validate({"redisHost": address})
    producer = create_client(settings)
    # The blocking reads get a connection of their own, as in the component.
    reader = create_client(
        settings.model_copy(update={"read_timeout": settings.socket_timeout + 1.0}),
        max_retries=0,
        pool_size=1,
    )
    await producer.xgroup_create(topic, group, id="$", mkstream=True)

    async def consume() -> None:
        while True:
            # RESP2: [[stream, [(id, {field: value}), ...]]], or None after BLOCK ms.
            reply: Any = await reader.xreadgroup(group, group, {topic: ">"}, count=100, block=1000)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    arrivals.arrived(token_of_cloudevent(fields[b"data"]))
                    await reader.xack(topic, group, entry_id)

    async def prepare(token: str) -> Callable[[], Awaitable[Any]]:
        body = cloudevent(topic, payload(token))
        fields: Any = encode_fields(PublishRequest(topic, body, METADATA, CLOUDEVENTS_JSON))
        return lambda: producer.xadd(topic, fields, maxlen=REDIS_MAX_LEN, approximate=True)

    task = asyncio.create_task(consume())
    try:
        yield prepare
    finally:
        await cancel_task(task)
        await reader.aclose()
        await producer.aclose()


@contextlib.asynccontextmanager
async def _direct_kafka(
    address: str, topic: str, group: str, arrivals: Arrivals, fetch_max_wait_ms: int = 500
) -> AsyncIterator[Publish]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=address, **KAFKA_PRODUCER_OPTIONS)
    await producer.start()
    # The component's consumer settings: manual commits, `newest`, the bench's group timeouts,
    # aiokafka's fetch defaults (fetch_max_wait_ms=500) unless told otherwise.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=address,
        client_id=f"layotto-{APP_ID}",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=KAFKA_HEARTBEAT_MS,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    try:
        await producer.send_and_wait(topic, b"{}")  # the topic exists before the group joins
        await consumer.start()
        deadline = time.perf_counter() + SUBSCRIBE_TIMEOUT_S
        while not consumer.assignment():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"no partitions assigned within {SUBSCRIBE_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)
        for tp in consumer.assignment():
            await consumer.position(tp)  # pin `latest` before the first publish

        async def consume() -> None:
            async for record in consumer:
                with contextlib.suppress(ValueError, AttributeError):
                    arrivals.arrived(token_of_cloudevent(record.value))

        headers = [(name, value.encode()) for name, value in METADATA.items()]

        async def prepare(token: str) -> Callable[[], Awaitable[Any]]:
            body = cloudevent(topic, payload(token))
            return lambda: producer.send_and_wait(topic, body, headers=headers)

        task = asyncio.create_task(consume())
        try:
            yield prepare
        finally:
            await cancel_task(task)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10)


async def _direct_row(
    component: str,
    backends: Mapping[str, str],
    options: PubSubLatencyOptions,
    run_id: str,
    path: str = "direct",
) -> dict[str, Any]:
    topic = group = f"{run_id}-{path.replace('_', '-')}"
    arrivals = Arrivals()
    direct: contextlib.AbstractAsyncContextManager[Publish]
    if component == "memory":
        direct = _direct_memory(topic, arrivals)
    elif component == "redis":
        direct = _direct_redis(backends["redis"], topic, group, arrivals)
    else:
        direct = _direct_kafka(backends["kafka"], topic, group, arrivals, KAFKA_FETCH_MAX_WAIT_MS)
    async with direct as prepare:
        return await _series(path, prepare, arrivals, options, topic)


async def _measure(
    component: str,
    backends: Mapping[str, str],
    options: PubSubLatencyOptions,
    run_id: str,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if component == "kafka":
        await _precreate_kafka_topics(backends["kafka"], [f"{run_id}-callback", f"{run_id}-stream"])
    rows, sidecar = await _sidecar_rows(component, backends, options, run_id, say)
    if options.direct:
        rows.append(await _direct_row(component, backends, options, run_id))
    for row in rows:
        row["component"] = component
        row["component_type"] = COMPONENT_TYPES[component]
        row["how"] = {"direct": DIRECT_HOW[component]}.get(row["path"], PATHS[row["path"]])
        row.setdefault("sidecar_cpu_s", None)
    return rows, sidecar


# -- the run ---------------------------------------------------------------------------------


def run_pubsub_latency(
    options: PubSubLatencyOptions, progress: Callable[[str], None] | None = _stderr
) -> dict[str, Any]:
    """Measure every selected component; return the result document."""
    options.validate()
    say = progress or (lambda _message: None)
    started = datetime.datetime.now(datetime.UTC)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    bench_options = BenchOptions(
        redis_address=options.redis_address, kafka_address=options.kafka_address
    )
    meta = _meta(bench_options, started)
    meta["options"] = asdict(options)
    meta["run_id"] = run_id
    document: dict[str, Any] = {
        "kind": "pubsub-latency",
        "meta": meta,
        "backends": [],
        "skipped": [],
        "rows": [],
        "sidecars": [],
        "errors": [],
    }
    for component in options.components:
        requires = set(COMPONENT_BACKENDS[component])
        with contextlib.ExitStack() as stack:
            backends = _provide_backends(requires, bench_options, stack, say)
            document["backends"] += backends.info
            missing = sorted(requires & set(backends.missing))
            if missing:
                reason = "; ".join(backends.missing[b] for b in missing)
                say(f"skip {component}: {reason}")
                document["skipped"].append({"component": component, "reason": reason})
                continue
            try:
                rows, sidecar = asyncio.run(
                    _measure(component, backends.addresses, options, run_id, say)
                )
            except Exception as err:
                say(f"{component}: FAILED: {type(err).__name__}: {err}")
                document["errors"].append(
                    {"component": component, "error": f"{type(err).__name__}: {err}"}
                )
                continue
            finally:
                cleanup_external(backends, run_id, say)
            document["sidecars"].append(sidecar)
            document["rows"] += rows
            for row in rows:
                say(_progress_line(row))
    finished = datetime.datetime.now(datetime.UTC)
    document["meta"]["elapsed_s"] = round((finished - started).total_seconds(), 2)
    return document


def _progress_line(row: Mapping[str, Any]) -> str:
    lat = row["latency_ms"] or {}
    nan = float("nan")
    return (
        f"{row['component']:<7} {row['path']:<9} {row['received']}/{row['messages']} received  "
        f"p50 {lat.get('p50', nan):.2f} ms  p99 {lat.get('p99', nan):.2f} ms  "
        f"max {lat.get('max', nan):.2f} ms"
    )


def added(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per component and sidecar path: its percentiles minus the direct path's (ms)."""
    out: list[dict[str, Any]] = []
    by_key = {(r["component"], r["path"]): r for r in document["rows"]}
    for (component, path), row in by_key.items():
        direct = by_key.get((component, "direct"))
        if path.startswith("direct") or direct is None:
            continue
        lat, base = row["latency_ms"], direct["latency_ms"]
        if not lat or not base:
            continue
        entry: dict[str, Any] = {"component": component, "path": path}
        for p in ("p50", "p90", "p99"):
            entry[f"added_{p}_ms"] = round(lat[p] - base[p], 3)
        out.append(entry)
    return out


def problems(document: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for row in document["rows"]:
        if row["missed"]:
            out.append(
                f"{row['component']} {row['path']}: {row['missed']} of {row['messages']} events "
                "never arrived"
            )
    for error in document["errors"]:
        out.append(f"{error['component']}: {error['error']}")
    for sidecar in document["sidecars"]:
        if sidecar["exit_code"] != 0:
            out.append(f"{sidecar['component']} sidecar exited {sidecar['exit_code']} on SIGTERM")
    return out


def render_markdown(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    options = meta["options"]
    lines = [
        "# Pub/Sub: publish -> subscriber latency",
        "",
        f"{meta['started_at']} · Python {meta['python']} · {meta['cpu_count']} CPUs · "
        f"git {meta['git']} · run {meta['run_id']}",
        "",
        "Each event is timed from just before the publish call to its arrival in the "
        f"subscriber's handler (ms); {options['messages']} events per path, one at a time, "
        f"{options['gap_s'] * 1000:g} ms apart, after {options['warmup_messages']} warm-up "
        "events.",
        "",
    ]
    for backend in document.get("backends", []):
        kind = (backend.get("note") or "private") if backend.get("private") else "external"
        lines += [
            f"Backend: {backend['name']} {backend.get('version') or '?'} at "
            f"{backend['address']} ({kind}).",
            "",
        ]
    lines += [
        "| component | path | events | received | missed | dup | p50 | p90 | p99 | max | mean "
        "| publish call p50 | sidecar CPU ms / event (incl. idle work) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    for row in document["rows"]:
        lat = row["latency_ms"] or {}
        call = row["publish_call_ms"] or {}
        cpu = row.get("sidecar_cpu_s")
        # Warm-up events are included in the CPU interval; close enough per event.
        per_event = None if cpu is None or not row["messages"] else cpu * 1000 / row["messages"]
        lines.append(
            f"| {row['component_type']} | {row['how']} | {row['messages']} | {row['received']} "
            f"| {row['missed']} | {row['duplicates']} | {fmt_ms(lat.get('p50'))} "
            f"| {fmt_ms(lat.get('p90'))} | {fmt_ms(lat.get('p99'))} | {fmt_ms(lat.get('max'))} "
            f"| {fmt_ms(lat.get('mean'))} | {fmt_ms(call.get('p50'))} | {fmt_ms(per_event)} |"
        )
    extra = added(document)
    if extra:
        lines += [
            "",
            "Added by the sidecar (sidecar path minus direct, ms):",
            "",
            "| component | path | added p50 | added p90 | added p99 |",
            "|---|---|---:|---:|---:|",
        ]
        for entry in extra:
            lines.append(
                f"| {entry['component']} | {entry['path']} | {entry['added_p50_ms']:.2f} "
                f"| {entry['added_p90_ms']:.2f} | {entry['added_p99_ms']:.2f} |"
            )
    for skipped in document["skipped"]:
        lines += ["", f"skipped {skipped['component']}: {skipped['reason']}"]
    for error in document["errors"]:
        lines += ["", f"failed {error['component']}: {error['error']}"]
    return "\n".join(lines) + "\n"


def write_pubsub_latency_results(document: Mapping[str, Any], directory: Path) -> Path:
    """``pubsub-latency-<UTC timestamp>.json`` + ``.md``, copied to ``pubsub-latency-latest.*``."""
    return write_results(document, directory, name="pubsub-latency", render=render_markdown)
