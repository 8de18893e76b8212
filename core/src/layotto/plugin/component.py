"""What every component is: created from validated metadata, started, checked, closed."""

from __future__ import annotations

import builtins
import importlib
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, cast

from pydantic import BaseModel, ConfigDict


class Kind(StrEnum):
    """Building-block kinds, spelled as Dapr's `spec.type` prefixes (`state.redis`)."""

    STATE = "state"
    PUBSUB = "pubsub"
    CONFIGURATION = "configuration"
    LOCK = "lock"
    SEQUENCER = "sequencer"
    SECRETSTORES = "secretstores"
    BINDINGS = "bindings"
    # InvokeService: channels to targets, name resolvers, and before/after filters.
    RPC = "rpc"
    NAMERESOLUTION = "nameresolution"
    RPCFILTER = "rpcfilter"


class HealthStatus(StrEnum):
    INIT = "INIT"
    UP = "UP"
    DOWN = "DOWN"


@dataclass(frozen=True, slots=True)
class Health:
    status: HealthStatus
    details: dict[str, str] = field(default_factory=dict)

    @classmethod
    def up(cls) -> Health:
        return cls(HealthStatus.UP)

    @classmethod
    def down(cls, reason: str) -> Health:
        return cls(HealthStatus.DOWN, {"reason": reason})


class ComponentMetadata(BaseModel):
    """Base of a component's config model. Values arrive as strings from Dapr YAML and are
    coerced (lax mode); unknown names are kept so the loader can warn about them."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


@dataclass(frozen=True, slots=True)
class ComponentContext:
    """What a factory gets besides its metadata."""

    name: str
    app_id: str


class Component(ABC):  # noqa: B024 - every hook has a sensible default
    """Lifecycle shared by all kinds. `init` may do I/O (connect, ping); `close` must be
    idempotent and quick; `check_health` must not raise and must answer within a second."""

    async def init(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def check_health(self) -> Health:
        return Health.up()


ComponentFactory = Callable[[Any, ComponentContext], Component]


def _load(reference: str) -> Any:
    """`package.module:attr.attr` -> the object, importing the module."""
    module_name, _, attr_path = reference.partition(":")
    if not module_name or not attr_path:
        raise ValueError(f"{reference!r} is not of the form 'package.module:attribute'")
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    return target


@dataclass(frozen=True)
class ComponentSpec:
    """A plugin's declaration of one component type.

    `factory(metadata, context)` receives an instance of `config_model` (already validated) and
    must not do I/O: that belongs in `Component.init`.

    Both may be given as import strings (`"layotto_redis.state:RedisStateStore.create"`): the
    module is then imported only when a component of this type is configured, so an installed
    plugin costs the sidecar no startup time and no memory until it is used.
    """

    kind: Kind
    type: str
    config_model: builtins.type[ComponentMetadata] | str
    factory: ComponentFactory | str
    version: str = "v1"
    description: str = ""

    @property
    def qualified_type(self) -> str:
        return f"{self.kind.value}.{self.type}"

    @cached_property
    def metadata_model(self) -> builtins.type[ComponentMetadata]:
        model = self.config_model
        if isinstance(model, str):
            model = _load(model)
        if not (isinstance(model, type) and issubclass(model, ComponentMetadata)):
            raise TypeError(f"{self.qualified_type}: config_model is not a ComponentMetadata")
        return model

    @cached_property
    def create(self) -> ComponentFactory:
        factory = _load(self.factory) if isinstance(self.factory, str) else self.factory
        if not callable(factory):
            raise TypeError(f"{self.qualified_type}: factory is not callable")
        return cast("ComponentFactory", factory)
