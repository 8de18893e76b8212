"""TraceExporter: finished spans batched to Zipkin and/or an OTLP/HTTP collector, off the
request path; and `build_tracing`, which makes the runtime's tracer from `tracing:`.

- `submit` (called as a span ends) only appends to a bounded queue: when the queue is full the
  span is dropped and counted, with a warning at most every `WARN_INTERVAL` seconds. A call
  never waits for a collector.
- The actor sends a batch when `batch_size` spans are queued or every `interval` seconds,
  each POST bounded by `post_timeout`; a failed POST is logged (rate-limited) and its batch
  dropped (spans are diagnostics: no retries that would grow memory).
- `stop()` lets a flush in progress finish, then sends what is left in one final flush; each
  step bounded by `FINAL_FLUSH_SECONDS`. It is the first actor started and the last stopped,
  so the spans of drained calls go out too.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import anyio
import httpx
from anyio.abc import TaskStatus

from layotto.config import TracingConfig
from layotto.tracing import NO_TRACER, RatioSampler, RecordingTracer, Sink, Span, Tracer
from layotto.tracing.encode import JSON, log_fields, otlp_body, zipkin_body
from layotto.version import runtime_version

log = logging.getLogger(__name__)
span_log = logging.getLogger("layotto.tracing.spans")

MAX_QUEUE: Final = 4096
BATCH_SIZE: Final = 256
INTERVAL_SECONDS: Final = 2.0
POST_TIMEOUT_SECONDS: Final = 5.0
FINAL_FLUSH_SECONDS: Final = 3.0
WARN_INTERVAL: Final = 30.0

Encoder = Callable[[Sequence[Span]], bytes]


@dataclass(frozen=True, slots=True)
class Collector:
    kind: str  # "zipkin" | "otlp", for the logs
    url: str
    encode: Encoder


def collectors(config: TracingConfig, service: str) -> list[Collector]:
    found: list[Collector] = []
    if config.zipkin_endpoint:
        found.append(Collector("zipkin", config.zipkin_endpoint, lambda s: zipkin_body(s, service)))
    if config.otlp_endpoint:
        version = runtime_version()
        found.append(
            Collector("otlp", config.otlp_endpoint, lambda s: otlp_body(s, service, version))
        )
    return found


class TraceExporter:
    name = "trace_exporter"

    def __init__(
        self,
        targets: Sequence[Collector],
        *,
        max_queue: int = MAX_QUEUE,
        batch_size: int = BATCH_SIZE,
        interval: float = INTERVAL_SECONDS,
        post_timeout: float = POST_TIMEOUT_SECONDS,
    ) -> None:
        self._targets = tuple(targets)
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._interval = interval
        self._post_timeout = post_timeout
        self._queue: deque[Span] = deque()
        self._wake: anyio.Event | None = None
        self._stopping = False
        self._done: anyio.Event | None = None
        self._loop: anyio.CancelScope | None = None
        self._warned_at = -WARN_INTERVAL
        self._failed_at: dict[str, float] = {}
        self.dropped = 0  # spans dropped because the queue was full
        self.exported = 0  # spans a collector accepted (counted once per collector)
        self.failed = 0  # spans in batches a collector did not take

    # -- the request path ------------------------------------------------------------------

    def submit(self, span: Span) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned_at >= WARN_INTERVAL:
                self._warned_at = now
                log.warning(
                    "trace export queue full (%d spans): dropping spans, %d so far; is the "
                    "collector reachable?",
                    self._max_queue,
                    self.dropped,
                )
            return
        queue.append(span)
        if len(queue) >= self._batch_size and self._wake is not None:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- the actor -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stopping = False
        self._done = done = anyio.Event()
        try:
            async with httpx.AsyncClient(timeout=self._post_timeout, trust_env=False) as client:
                with anyio.CancelScope() as self._loop:
                    task_status.started()
                    while not self._stopping:
                        self._wake = anyio.Event()
                        if len(self._queue) < self._batch_size:
                            with anyio.move_on_after(self._interval):
                                await self._wake.wait()
                        await self._flush(client)
                with anyio.CancelScope(shield=True), anyio.move_on_after(FINAL_FLUSH_SECONDS):
                    await self._flush(client)
        finally:
            self._loop = None
            done.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._done is None:
            return
        # A flush in progress may finish (then the final one runs); a slow collector's is
        # cut off after FINAL_FLUSH_SECONDS, and the final flush is bounded as long.
        with anyio.move_on_after(FINAL_FLUSH_SECONDS):
            await self._done.wait()
        if self._loop is not None:
            self._loop.cancel()
        with anyio.move_on_after(FINAL_FLUSH_SECONDS + 1):
            await self._done.wait()

    async def _flush(self, client: httpx.AsyncClient) -> None:
        """Send what is queued now, `batch_size` spans per POST (spans that end meanwhile
        wait for the next round: sending them as they come would cost a POST per span or
        two under load)."""
        left = len(self._queue)
        while left > 0:
            size = min(self._batch_size, left)
            left -= size
            batch = [self._queue.popleft() for _ in range(size)]
            for target in self._targets:
                await self._post(client, target, batch)

    async def _post(self, client: httpx.AsyncClient, target: Collector, batch: list[Span]) -> None:
        try:
            with anyio.fail_after(self._post_timeout):
                response = await client.post(
                    target.url, content=target.encode(batch), headers={"content-type": JSON}
                )
            if response.status_code >= 300:
                raise RuntimeError(f"the collector answered {response.status_code}")
        except Exception as err:
            self.failed += len(batch)
            reason = "timed out" if isinstance(err, TimeoutError) else str(err) or repr(err)
            now = time.monotonic()
            if now - self._failed_at.get(target.kind, -WARN_INTERVAL) >= WARN_INTERVAL:
                self._failed_at[target.kind] = now
                log.warning(
                    "exporting %d span(s) to the %s collector failed: %s (%d spans lost so far)",
                    len(batch),
                    target.kind,
                    reason,
                    self.failed,
                )
            return
        self.exported += len(batch)


def log_span(span: Span) -> None:
    """`tracing.stdout`: each sampled span as one INFO line."""
    span_log.info("span %s", span.name, extra={"span": log_fields(span)})


def build_tracing(config: TracingConfig, service: str) -> tuple[Tracer, TraceExporter | None]:
    """The runtime's tracer: NO_TRACER when `sampling_rate` is 0 (daprd: tracing disabled);
    else a recording tracer whose sampled spans go to the exporter (with a collector
    configured) and/or the log (`stdout`). With neither, spans are only propagated."""
    if config.sampling_rate <= 0:
        return NO_TRACER, None
    sinks: list[Sink] = []
    exporter: TraceExporter | None = None
    targets = collectors(config, service)
    if targets:
        exporter = TraceExporter(targets)
        sinks.append(exporter.submit)
    if config.stdout:
        sinks.append(log_span)
    if not sinks:
        log.warning(
            "tracing is on (sampling rate %g) with no zipkin_endpoint, otlp_endpoint or "
            "stdout: trace context is propagated, spans are not exported",
            config.sampling_rate,
        )
    log.info(
        "tracing on",
        extra={
            "sampling_rate": config.sampling_rate,
            "exporters": [t.kind for t in targets] + (["stdout"] if config.stdout else []),
        },
    )
    return RecordingTracer(RatioSampler(config.sampling_rate), sinks), exporter
