"""The Scenario abstraction and the registry every benchmark plugs into.

A scenario is one kind of call measured two ways in the same run:

- ``sidecar``: through the sidecar's gRPC API (``spec.proto.runtime.v1.Runtime``), with a
  grpclib ``RuntimeStub`` the harness builds in the load-generator process (another service's
  stub can share its ``.channel``; the HTTP API is at ``context.sidecar_http``);
- ``direct``: the component (or backend client) called in the load-generator process itself,
  the baseline the sidecar is compared with.

A scenario instance is created inside each load-generator process (never pickled), so it may
hold whatever clients it likes. It gets the run's :class:`BenchContext`: the addresses of the
backends the harness started for it (see :attr:`Scenario.requires`) and a run id to prefix keys
with. Add a scenario by adding a module under ``bench/scenarios/`` that defines a subclass
decorated with :func:`register`; :func:`load_scenarios` imports every module in that package.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from layotto._proto.spec.proto.runtime import v1 as pb

ClientT = TypeVar("ClientT")

MODES: tuple[str, ...] = ("direct", "sidecar")

#: Backends the harness knows how to provide (``Scenario.requires``).
#: ``invoke``: the InvokeService targets (``bench.scenarios.invoke.provide``).
BACKENDS: tuple[str, ...] = ("redis", "etcd", "apollo", "kafka", "invoke")


@dataclass(frozen=True, slots=True)
class BenchContext:
    """What the harness tells every scenario instance about this run (picklable)."""

    #: Backend name -> ``host:port`` of the server the harness started (or was given).
    backends: Mapping[str, str] = field(default_factory=dict)
    #: Unique per benchmark run, usable as a key prefix (``bench-1a2b3c4d``).
    run_id: str = "bench"
    #: ``host:port`` of the sidecar's HTTP API (Dapr's ``/v1.0``) in the load generators' runs;
    #: empty in the parent, which asks its questions before any sidecar starts.
    sidecar_http: str = ""


# The index of the load-generator worker running the current call: unique across the workers
# and processes of one run (0 .. concurrency-1). Set by the load generator in each worker task.
_WORKER: ContextVar[int] = ContextVar("bench_worker", default=0)


def worker_index() -> int:
    """Which worker makes the current call (0 outside a worker, e.g. in ``setup_*``)."""
    return _WORKER.get()


def set_worker_index(index: int) -> None:
    _WORKER.set(index)


class Scenario(ABC, Generic[ClientT]):
    """One benchmarked operation. Subclass, set ``name``, implement the abstract methods.

    ``i`` passed to the call methods is unique across all workers and load-generator processes of
    one run (0, 1, 2, ...), so ``key = f"k{i % KEYS}"`` spreads calls over a fixed key space.
    ``setup_*`` run once per load-generator process before the clock starts; they must be
    idempotent (several processes may run them against the same backend).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Backends (names from :data:`BACKENDS`) the harness must provide; their addresses are in
    #: ``self.context.backends``. Without one (e.g. no ``redis-server``) the scenario is skipped.
    requires: ClassVar[frozenset[str]] = frozenset()
    #: Another scenario this one's throughput is compared with, mode by mode and concurrency by
    #: concurrency, when both ran (e.g. WEAK ids against STRONG ids).
    baseline: ClassVar[str | None] = None

    def __init__(self, context: BenchContext | None = None) -> None:
        self.context = context if context is not None else BenchContext()

    def backend(self, name: str) -> str:
        """The ``host:port`` of a backend from :attr:`requires`."""
        try:
            return self.context.backends[name]
        except KeyError:
            raise RuntimeError(f"scenario {self.name!r}: no {name!r} backend in this run") from None

    def sidecar_config(self) -> Mapping[str, Any] | None:
        """The sidecar's config as a native config document (what ``layotto run --config``
        reads); ``None`` = the embedded default (in-memory components, state store
        ``statestore``). Scenarios with equal configs share one sidecar. Called in the parent
        process, after the backends started."""
        return None

    def skip_reason(self) -> str | None:
        """Why this scenario cannot run here (e.g. a backend is unreachable); None = it can.

        Called in the parent process before the sidecar starts (after the backends started).
        """
        return None

    # -- direct mode -----------------------------------------------------------------------

    @abstractmethod
    async def make_direct_client(self) -> ClientT:
        """Build the direct client inside the load-generator process (e.g. the component)."""

    async def close_direct_client(self, client: ClientT) -> None:
        """Release what :meth:`make_direct_client` built."""

    async def setup_direct(self, client: ClientT) -> None:
        """Prepare the backend for direct calls (e.g. pre-populate keys)."""

    @abstractmethod
    async def direct_call(self, client: ClientT, i: int) -> None:
        """One measured call on the component; raise on failure."""

    # -- sidecar mode ----------------------------------------------------------------------

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        """Prepare the sidecar's store for sidecar calls (e.g. pre-populate keys through it)."""

    @abstractmethod
    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        """One measured call through the sidecar's gRPC API; raise on failure."""

    async def close_sidecar(self) -> None:
        """Release what :meth:`setup_sidecar` built (e.g. an HTTP client); the harness closes
        the gRPC channels itself."""


ScenarioType = type[Scenario[Any]]

SCENARIOS: dict[str, ScenarioType] = {}

S = TypeVar("S", bound=ScenarioType)


def register(cls: S) -> S:
    """Class decorator: make a scenario selectable by its ``name``."""
    name = cls.name
    existing = SCENARIOS.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"scenario {name!r} registered twice: {existing.__module__}.{existing.__qualname__} "
            f"and {cls.__module__}.{cls.__qualname__}"
        )
    SCENARIOS[name] = cls
    return cls


def load_scenarios() -> dict[str, ScenarioType]:
    """Import every module of ``bench.scenarios`` and return the registry."""
    import bench.scenarios as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    return SCENARIOS


def get_scenario(name: str) -> ScenarioType:
    scenarios = load_scenarios()
    try:
        return scenarios[name]
    except KeyError:
        known = ", ".join(sorted(scenarios)) or "none"
        raise KeyError(f"unknown scenario {name!r} (known: {known})") from None
