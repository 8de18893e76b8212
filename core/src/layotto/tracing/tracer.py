"""The `Tracer` the edges and services start spans with, the current span (a contextvar), and
the sampler.

`NO_TRACER` starts nothing (`enabled` is False, `start` returns None): the edges check
`enabled` once, when they are built, so a sidecar without tracing pays nothing per call.
`RecordingTracer` gives every span fresh ids (`os.urandom`), decides sampling as daprd does,
and hands each sampled span to its sinks when it ends (an exporter's queue, the log); spans
that are not sampled still carry ids, so the trace context travels on (flag `00`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token

from layotto.errors import LayottoError
from layotto.tracing.context import SpanContext
from layotto.tracing.span import Span, SpanKind

Sink = Callable[[Span], None]

_CURRENT: ContextVar[Span | None] = ContextVar("layotto_current_span", default=None)


def current_span() -> Span | None:
    """The span of the call being served in this task (None without tracing)."""
    return _CURRENT.get()


def current_traceparent() -> str | None:
    span = _CURRENT.get()
    return None if span is None else span.traceparent


def activate(span: Span) -> Token[Span | None]:
    """Make `span` the current one; give the token back to `deactivate` in the same task."""
    return _CURRENT.set(span)


def deactivate(token: Token[Span | None]) -> None:
    _CURRENT.reset(token)


@contextmanager
def active(span: Span) -> Iterator[None]:
    """`span` is the current one while the block runs."""
    token = _CURRENT.set(span)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def fail_span(span: Span, err: BaseException) -> None:
    """The error status for what escaped a span: a LayottoError's message, else its type."""
    span.fail(err.message if isinstance(err, LayottoError) else type(err).__name__)


@contextmanager
def ending(
    tracer: Tracer, span: Span, fail: Callable[[Span, BaseException], None] = fail_span
) -> Iterator[None]:
    """`span` failed (`fail`) with whatever escapes the block, and ended after it."""
    try:
        yield
    except BaseException as err:
        fail(span, err)
        raise
    finally:
        tracer.end(span)


def detach() -> Token[Span | None]:
    """No current span from here on, until `deactivate(token)`: for a task that outlives the
    call that started it (it inherited that call's span), whose spans start traces of their
    own."""
    return _CURRENT.set(None)


class RatioSampler:
    """daprd's sampler: a parent that is sampled is followed; otherwise a share `rate` of
    traces, decided on the trace id (OpenTelemetry's TraceIdRatioBased: the low 8 bytes,
    shifted right once, under `rate * 2**63`), so every hop of a trace agrees."""

    __slots__ = ("_bound", "rate")

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sampling rate must be within 0..1, got {rate}")
        self.rate = rate
        self._bound = int(rate * (1 << 63))

    def sample(self, trace_id: str, parent: SpanContext | None) -> bool:
        if parent is not None and parent.sampled:
            return True
        if self.rate >= 1.0:
            return True
        return (int(trace_id[16:], 16) >> 1) < self._bound


class Tracer:
    """Starts nothing; see `RecordingTracer`."""

    enabled = False

    def start(self, name: str, kind: SpanKind, parent: SpanContext | None = None) -> Span | None:
        """A new span, child of `parent` (a remote caller's context) or, without one, of the
        current span; a new trace when there is neither. None: tracing is off."""
        return None

    def end(self, span: Span) -> None:
        return None


NO_TRACER = Tracer()


class RecordingTracer(Tracer):
    enabled = True

    def __init__(self, sampler: RatioSampler, sinks: Sequence[Sink] = ()) -> None:
        self.sampler = sampler
        self._sinks = tuple(sinks)

    def start(self, name: str, kind: SpanKind, parent: SpanContext | None = None) -> Span:
        if parent is None:
            local = _CURRENT.get()
            if local is not None:
                parent = local.context
        if parent is None:
            trace_id = os.urandom(16).hex()
            return Span(
                trace_id,
                os.urandom(8).hex(),
                None,
                name,
                kind,
                time.time_ns(),
                self.sampler.sample(trace_id, None),
            )
        return Span(
            parent.trace_id,
            os.urandom(8).hex(),
            parent.span_id,
            name,
            kind,
            time.time_ns(),
            self.sampler.sample(parent.trace_id, parent),
            parent.tracestate,
        )

    def end(self, span: Span) -> None:
        span.end_ns = time.time_ns()
        if span.sampled:
            for sink in self._sinks:
                sink(span)
