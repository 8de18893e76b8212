"""The Scenario abstraction and the registry every benchmark plugs into.

A scenario is one kind of call measured two ways in the same run:

- ``sidecar``: through the sidecar's gRPC API (``spec.proto.runtime.v1.Runtime``), with a
  grpclib ``RuntimeStub`` the harness builds in the load-generator process;
- ``direct``: the component (or backend client) called in the load-generator process itself,
  the baseline the sidecar is compared with.

A scenario instance is created inside each load-generator process (never pickled), so it may
hold whatever clients it likes. Add a scenario by adding a module under ``bench/scenarios/``
that defines a subclass decorated with :func:`register`; :func:`load_scenarios` imports every
module in that package.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from layotto._proto.spec.proto.runtime import v1 as pb

ClientT = TypeVar("ClientT")

MODES: tuple[str, ...] = ("direct", "sidecar")


class Scenario(ABC, Generic[ClientT]):
    """One benchmarked operation. Subclass, set ``name``, implement the abstract methods.

    ``i`` passed to the call methods is unique across all workers and load-generator processes of
    one run (0, 1, 2, ...), so ``key = f"k{i % KEYS}"`` spreads calls over a fixed key space.
    ``setup_*`` run once per load-generator process before the clock starts; they must be
    idempotent (several processes may run them against the same backend).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: The sidecar's config as a native config document (what ``layotto run --config`` reads);
    #: ``None`` = the embedded default (in-memory components, state store ``statestore``).
    #: Scenarios with equal configs share one sidecar.
    sidecar_config: ClassVar[Mapping[str, Any] | None] = None

    def skip_reason(self) -> str | None:
        """Why this scenario cannot run here (e.g. a backend is unreachable); None = it can.

        Called in the parent process before the sidecar starts.
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
