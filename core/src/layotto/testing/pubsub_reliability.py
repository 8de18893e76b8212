"""At-least-once under failures, end to end, reusable by every plugin with a durable broker:

- `sigkill_during_traffic`: SIGKILL the sidecar while messages are being published and
  delivered, start it again, and count what reached the app;
- `broker_outage`: stop the broker mid-stream; publishing must fail fast, readiness go DOWN
  and come back, and every acknowledged message still arrive.

The sidecar is a real `layotto run` subprocess (`SidecarProcess`); the app is an in-process
callback server. A message counts as published once PublishEvent returned OK; the publisher
retries a failed publish (the sidecar was down) on the restarted sidecar. The report says
how many published messages never arrived (must be 0) and how many arrived more than once.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.testing.pubsub import CallbackApp, Route, publish, serve_app
from layotto.testing.sidecar import SidecarProcess

log = logging.getLogger(__name__)


@dataclass
class CrashReport:
    published: int
    received_unique: int
    lost: list[int]
    duplicates: int  # deliveries beyond the first, over all messages
    publish_retries: int  # publishes that failed (sidecar down) and were sent again
    restart_seconds: float  # SIGKILL -> the new sidecar ready
    published_at_kill: int  # acknowledged publishes when the sidecar was killed
    arrived_at_kill: int  # distinct messages the app had by then
    seconds: float
    counts: Counter[int] = field(default_factory=Counter, repr=False)


async def _wait_ready(sidecar: SidecarProcess) -> None:
    await anyio.to_thread.run_sync(sidecar.wait_ready)


async def sigkill_during_traffic(
    sidecar_args: Sequence[str],
    pubsub_name: str,
    topic: str,
    *,
    total: int = 1000,
    kill_after: int = 300,
    deadline: float = 120.0,
    publish_concurrency: int = 8,
) -> CrashReport:
    """Publish `total` messages; SIGKILL the sidecar once `kill_after` are published and a third
    of that delivered; restart it; wait (up to `deadline` s) until every published one arrived."""
    counts: Counter[int] = Counter()
    published: set[int] = set()
    # Time to kill: `kill_after` published and a third of that delivered, so both publishing and
    # delivery are in full swing.
    enough = anyio.Event()
    complete = anyio.Event()  # everything published has arrived
    publishing_done = False

    def progress() -> None:
        if len(published) >= kill_after and len(counts) >= max(1, kill_after // 3):
            enough.set()
        if publishing_done and published <= counts.keys():
            complete.set()

    async def handler(event: TopicEvent) -> EventStatus:
        counts[int(event.data)] += 1
        progress()
        return EventStatus.SUCCESS

    app = CallbackApp([Route(pubsub_name, topic, handler)])
    started = time.monotonic()
    retries = 0
    restart_seconds = 0.0
    published_at_kill = arrived_at_kill = 0
    async with serve_app(app) as app_port:
        args = [*sidecar_args, "--app-port", str(app_port)]
        sidecar = SidecarProcess(args)
        try:
            await _wait_ready(sidecar)
            channel = Channel("127.0.0.1", sidecar.grpc_port)
            current = {"channel": channel}
            up = anyio.Event()
            up.set()
            pending = iter(range(total))

            async def publisher() -> None:
                nonlocal retries
                for n in pending:
                    while True:
                        await up.wait()
                        try:
                            await publish(
                                current["channel"],
                                pubsub_name,
                                topic,
                                str(n).encode(),
                                content_type="text/plain",
                                within=5.0,
                            )
                        except Exception:
                            retries += 1
                            await anyio.sleep(0.05)
                            continue
                        published.add(n)
                        progress()
                        break

            async with anyio.create_task_group() as tg:
                for _ in range(publish_concurrency):
                    tg.start_soon(publisher)
                with anyio.fail_after(deadline):
                    await enough.wait()
                up = anyio.Event()  # publishers wait for the new sidecar from now on
                published_at_kill, arrived_at_kill = len(published), len(counts)
                log.info("SIGKILL: %d published, %d arrived", published_at_kill, arrived_at_kill)
                sidecar.proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await anyio.to_thread.run_sync(lambda: sidecar.proc.wait(10))
                current["channel"].close()
                sidecar = SidecarProcess(args)
                await _wait_ready(sidecar)
                restart_seconds = time.monotonic() - killed_at
                current["channel"] = Channel("127.0.0.1", sidecar.grpc_port)
                up.set()
            publishing_done = True
            progress()
            with anyio.move_on_after(deadline):
                await complete.wait()
            current["channel"].close()
        finally:
            await anyio.to_thread.run_sync(sidecar.kill)
    lost = sorted(published - set(counts))
    return CrashReport(
        published=len(published),
        received_unique=len(set(counts) & published),
        lost=lost,
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        publish_retries=retries,
        restart_seconds=restart_seconds,
        published_at_kill=published_at_kill,
        arrived_at_kill=arrived_at_kill,
        seconds=time.monotonic() - started,
        counts=counts,
    )


@dataclass
class OutageReport:
    published: int  # acknowledged publishes (before and after the outage)
    lost: list[int]
    duplicates: int
    failed_publishes: int  # publishes refused while the broker was down
    publish_failure_codes: list[str]  # their gRPC status names
    slowest_failed_publish: float  # seconds: how fast a publish fails while the broker is down
    readiness_down_after: float  # broker stopped -> readiness 503
    readiness_up_after: float  # broker started -> readiness 200


BrokerControl = Callable[[], Awaitable[None]]


async def broker_outage(
    sidecar_args: Sequence[str],
    pubsub_name: str,
    topic: str,
    stop_broker: BrokerControl,
    start_broker: BrokerControl,
    *,
    before: int = 200,
    after: int = 100,
    down_attempts: int = 5,
    deadline: float = 60.0,
    handler_delay: float = 0.005,
) -> OutageReport:
    """Publish `before` messages (the app is slow, so deliveries are still going on), stop the
    broker mid-stream, try `down_attempts` publishes (each must fail), wait for readiness DOWN,
    start the broker, wait for readiness UP, publish `after` more, and wait until every
    acknowledged message arrived."""
    counts: Counter[int] = Counter()
    published: set[int] = set()
    complete = anyio.Event()
    done_publishing = False

    def progress() -> None:
        if done_publishing and published <= counts.keys():
            complete.set()

    async def handler(event: TopicEvent) -> EventStatus:
        await anyio.sleep(handler_delay)
        counts[int(event.data)] += 1
        progress()
        return EventStatus.SUCCESS

    async def send(channel: Channel, n: int) -> None:
        await publish(
            channel, pubsub_name, topic, str(n).encode(), content_type="text/plain", within=10.0
        )
        published.add(n)

    async def readiness_becomes(sidecar: SidecarProcess, status: int) -> float:
        return await anyio.to_thread.run_sync(lambda: sidecar.wait_readiness(status, deadline))

    failures: list[str] = []
    slowest = 0.0
    app = CallbackApp([Route(pubsub_name, topic, handler)])
    async with serve_app(app) as app_port:
        sidecar = SidecarProcess([*sidecar_args, "--app-port", str(app_port)])
        try:
            await _wait_ready(sidecar)
            channel = Channel("127.0.0.1", sidecar.grpc_port)
            try:
                for n in range(before):
                    await send(channel, n)
                await stop_broker()
                for n in range(before, before + down_attempts):
                    started = time.monotonic()
                    try:
                        await send(channel, n)
                    except GRPCError as err:
                        failures.append(err.status.name)
                    except Exception as err:
                        failures.append(type(err).__name__)
                    slowest = max(slowest, time.monotonic() - started)
                down_after = await readiness_becomes(sidecar, 503)
                await start_broker()
                up_after = await readiness_becomes(sidecar, 200)
                first_after = before + down_attempts
                for n in range(first_after, first_after + after):
                    await send(channel, n)
                done_publishing = True
                progress()
                with anyio.move_on_after(deadline):
                    await complete.wait()
            finally:
                channel.close()
        finally:
            await anyio.to_thread.run_sync(sidecar.kill)
    return OutageReport(
        published=len(published),
        lost=sorted(published - counts.keys()),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        failed_publishes=len(failures),
        publish_failure_codes=failures,
        slowest_failed_publish=slowest,
        readiness_down_after=down_after,
        readiness_up_after=up_after,
    )
