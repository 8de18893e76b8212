"""The Bindings building block: output invocation (both APIs) and the input bindings the
app asked for (delivered by the binding dispatcher).

A component counts as an output binding when it implements `OutputBinding` and its
`direction` metadata (if any) includes `output`; likewise for input.

With tracing on, each output call is a CLIENT span (`bindings/{name}/{operation}`), child of
the current span (the API call's, or an input binding event's) or, without one, a new trace;
its `traceparent` / `tracestate` replace the caller's in the request metadata, where a binding
that speaks HTTP (`bindings.http`) sends them on as headers, as daprd passes its trace context
to output bindings. `tracer` is also what the binding dispatcher traces input events with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from layotto.components import BuiltComponent, ComponentRegistry
from layotto.errors import InvalidArgument, LayottoError, NotConfigured
from layotto.meter import ComponentMeter
from layotto.plugin import (
    BindingRequest,
    BindingResponse,
    InputBinding,
    Kind,
    OutputBinding,
)
from layotto.plugin.bindings import DIRECTION_METADATA
from layotto.resiliency import NO_POLICY, Policy
from layotto.services.calls import DEFAULT_CALL_TIMEOUT, call_component
from layotto.services.keys import KeyPrefix
from layotto.tracing import TRACESTATE, SpanKind, Tracer, active, ending

_NO_KEYS = KeyPrefix("")
REASON = "ERR_INVOKE_OUTPUT_BINDING"


@dataclass(frozen=True, slots=True)
class _Output:
    binding: OutputBinding
    policy: Policy  # the binding's outbound resiliency policy
    meter: ComponentMeter | None  # its call metrics


def _directions(built: BuiltComponent) -> set[str] | None:
    """The declared directions, or None when the metadata does not say (then: all it can)."""
    raw = built.config.metadata.get(DIRECTION_METADATA)
    if raw is None or not str(raw).strip():
        return None
    return {part.strip().lower() for part in str(raw).split(",") if part.strip()}


class BindingService:
    def __init__(
        self, registry: ComponentRegistry, *, call_timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> None:
        self._call_timeout = call_timeout
        self.tracer: Tracer = registry.tracer
        self._outputs: dict[str, _Output] = {}
        self._inputs: dict[str, InputBinding] = {}
        self._inbound: dict[str, Policy] = {}  # inbound resiliency, per input binding
        for name, built in registry.of_kind(Kind.BINDINGS).items():
            directions = _directions(built)
            component = built.component
            if isinstance(component, OutputBinding) and (
                directions is None or "output" in directions
            ):
                self._outputs[name] = _Output(
                    component,
                    registry.outbound_policy(Kind.BINDINGS, name),
                    registry.component_meter(Kind.BINDINGS, name),
                )
            if isinstance(component, InputBinding) and (
                directions is None or "input" in directions
            ):
                self._inputs[name] = component
                self._inbound[name] = registry.inbound_policy(Kind.BINDINGS, name)

    def output_names(self) -> list[str]:
        return sorted(self._outputs)

    def inputs(self) -> dict[str, InputBinding]:
        return dict(self._inputs)

    def inbound_policy(self, name: str) -> Policy:
        """The input binding's inbound resiliency policy: how its events reach the app."""
        return self._inbound.get(name, NO_POLICY)

    async def invoke(
        self,
        name: str,
        operation: str,
        data: bytes = b"",
        metadata: Mapping[str, str] | None = None,
    ) -> BindingResponse:
        if not self._outputs:
            raise NotConfigured("output binding is not configured", reason=REASON)
        if not name:
            raise InvalidArgument("field 'name' must not be empty", reason=REASON)
        output = self._outputs.get(name)
        if output is None:
            raise InvalidArgument(f"couldn't find output binding {name}", reason=REASON)
        if not operation:
            raise InvalidArgument("operation field is missing from request", reason=REASON)
        supported = list(output.binding.operations())
        if operation not in supported:
            raise InvalidArgument(
                f"binding {name} does not support operation {operation}. "
                f"supported operations: {' '.join(supported)}",
                reason=REASON,
            )
        request = BindingRequest(operation, data, dict(metadata or {}))
        tracer = self.tracer
        if not tracer.enabled:
            return await self._invoke(name, output, request)
        span = tracer.start(f"bindings/{name}/{operation}", SpanKind.CLIENT)
        if span is None:  # not reached: only a recording tracer is enabled
            return await self._invoke(name, output, request)
        if span.sampled:
            span.set("db.system", "bindings")
            span.set("db.name", name)
            span.set("db.operation", operation)  # one the binding lists: a bounded set
        carried = {k: v for k, v in request.metadata.items() if k != TRACESTATE}
        request = BindingRequest(operation, data, {**carried, **span.headers()})
        with active(span), ending(tracer, span):
            return await self._invoke(name, output, request)

    async def _invoke(self, name: str, output: _Output, request: BindingRequest) -> BindingResponse:
        operation = request.operation
        try:
            return await call_component(
                f"invoke output binding {name!r} ({operation})",
                "the binding",
                _NO_KEYS,
                self._call_timeout,
                lambda: output.binding.invoke(request),
                policy=output.policy,
                meter=output.meter,
                operation=operation,  # one the binding lists as supported: a bounded set
            )
        except LayottoError as err:
            err.message = f"error when invoke output binding {name}: {err.message}"
            err.args = (err.message,)
            if err.reason == err.default_reason:
                err.reason = REASON
            raise
