"""Built-in name resolvers for InvokeService.

- `nameresolution.static`: a table in the config, `apps: {appB: ["10.0.0.5:8080", ...]}` (in
  Dapr YAML, where values are strings: `appB=10.0.0.5:8080|10.0.0.6:8080;appC=...` or the same
  table as JSON). The sidecar round-robins over an app's addresses and skips unreachable ones.
- `nameresolution.mesh`: every app resolves to one egress address (an Envoy or MOSN listener);
  the channel names the target in its `id` header, and the mesh routes, retries and limits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

from layotto.plugin import Component, ComponentContext, ComponentMetadata
from layotto.plugin.addresses import comma_list, split_host_port
from layotto.plugin.rpc import NameResolver


def _parse_table(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    table: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        app, sep, addresses = entry.partition("=")
        if not sep or not app.strip():
            raise ValueError(f"{entry!r} is not app=host:port|host:port")
        table[app.strip()] = [a.strip() for a in addresses.split("|") if a.strip()]
    return table


class StaticResolverMetadata(ComponentMetadata):
    apps: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("apps", mode="before")
    @classmethod
    def _table(cls, value: Any) -> Any:
        table = _parse_table(value)
        if isinstance(table, dict):
            return {app: comma_list(addresses) for app, addresses in table.items()}
        return table

    @field_validator("apps")
    @classmethod
    def _addresses(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for app, addresses in value.items():
            if not addresses:
                raise ValueError(f"app {app!r} has no address")
            for address in addresses:
                try:
                    split_host_port(address, example_port=8080)
                except ValueError as err:
                    raise ValueError(f"app {app!r}: {address!r}: {err}") from None
        return value


class StaticResolver(NameResolver):
    def __init__(self, table: dict[str, list[str]]) -> None:
        self._table = table

    @classmethod
    def create(cls, metadata: StaticResolverMetadata, context: ComponentContext) -> Component:
        return cls(dict(metadata.apps))

    async def resolve(self, app_id: str) -> Sequence[str]:
        return self._table.get(app_id, [])


class MeshResolverMetadata(ComponentMetadata):
    address: str = Field(min_length=1)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_host_port(value, example_port=15001)
        return value.strip()


class MeshResolver(NameResolver):
    def __init__(self, address: str) -> None:
        self._address = address

    @classmethod
    def create(cls, metadata: MeshResolverMetadata, context: ComponentContext) -> Component:
        return cls(metadata.address)

    async def resolve(self, app_id: str) -> Sequence[str]:
        return [self._address]
