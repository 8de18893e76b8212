"""What every component is: created from validated metadata, started, checked, closed."""

from __future__ import annotations

import builtins
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A plugin's declaration of one component type.

    `factory(metadata, context)` receives an instance of `config_model` (already validated) and
    must not do I/O: that belongs in `Component.init`.
    """

    kind: Kind
    type: str
    config_model: builtins.type[ComponentMetadata]
    factory: ComponentFactory
    version: str = "v1"
    description: str = ""

    @property
    def qualified_type(self) -> str:
        return f"{self.kind.value}.{self.type}"
