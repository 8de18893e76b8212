"""An in-process configuration store: items per (app id, group, label, key), a version counter,
tags, and a watch fed by an in-process broadcast of every change.

Every operation runs without awaiting, so each one is atomic with respect to the event loop.
A watch that falls far behind (its buffer of batches is full) is ended with
`BackendUnavailable`: the sidecar's watcher then reconnects and resyncs, as it would after a
lost connection to a real backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from layotto.plugin import (
    DELETED_METADATA,
    VERSION_METADATA,
    BackendUnavailable,
    Component,
    ComponentContext,
    ComponentMetadata,
    ConfigItem,
    ConfigQuery,
    ConfigStore,
    InvalidArgument,
)

WATCH_BUFFER = 1024  # change batches a watch may fall behind before it is ended


class InMemoryConfigMetadata(ComponentMetadata):
    pass


@dataclass(frozen=True, slots=True)
class _Entry:
    content: str
    tags: Mapping[str, str]
    version: int


_Where = tuple[str, str, str]  # (group, label, key)


class InMemoryConfigStore(ConfigStore):
    default_group = "default"
    default_label = "default"

    def __init__(self) -> None:
        self._apps: dict[str, dict[_Where, _Entry]] = {}
        self._version = 0
        self._watches: dict[str, set[MemoryObjectSendStream[list[ConfigItem]]]] = {}
        self._closed = False

    @classmethod
    def create(cls, metadata: InMemoryConfigMetadata, context: ComponentContext) -> Component:
        return cls()

    async def close(self) -> None:
        self._closed = True
        for streams in self._watches.values():
            for stream in streams:
                stream.close()

    # -- reads -----------------------------------------------------------------------------

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        items = self._apps.get(query.app_id, {})
        if not query.keys:
            found = sorted(
                (where, entry)
                for where, entry in items.items()
                if where[:2] == (query.group, query.label)
            )
            return [_item(where, entry) for where, entry in found]
        result = []
        for key in dict.fromkeys(query.keys):  # unique, in the caller's order
            where = (query.group, query.label, key)
            entry = items.get(where)
            if entry is not None:
                result.append(_item(where, entry))
        return result

    # -- writes ----------------------------------------------------------------------------

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    async def set(
        self, app_id: str, items: Sequence[ConfigItem], metadata: Mapping[str, str]
    ) -> None:
        for index, item in enumerate(items):
            if not item.key:
                raise InvalidArgument(f"items[{index}].key must not be empty")
        stored = self._apps.setdefault(app_id, {})
        changed = []
        for item in items:
            where = (item.group, item.label, item.key)
            entry = _Entry(item.content, dict(item.tags), self._next_version())
            stored[where] = entry
            changed.append(_item(where, entry))
        self._broadcast(app_id, changed)

    async def delete(self, query: ConfigQuery) -> None:
        stored = self._apps.get(query.app_id, {})
        removed = []
        for key in dict.fromkeys(query.keys):
            where = (query.group, query.label, key)
            if stored.pop(where, None) is not None:
                version = str(self._next_version())
                removed.append(
                    ConfigItem(
                        key,
                        "",
                        query.group,
                        query.label,
                        metadata={DELETED_METADATA: "true", VERSION_METADATA: version},
                    )
                )
        self._broadcast(query.app_id, removed)

    # -- watch -----------------------------------------------------------------------------

    def _broadcast(self, app_id: str, batch: list[ConfigItem]) -> None:
        if not batch:
            return
        for stream in list(self._watches.get(app_id, ())):
            try:
                stream.send_nowait(list(batch))
            except anyio.WouldBlock:
                stream.close()  # fell behind: that watch ends, its owner resyncs
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    async def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        if self._closed:
            raise BackendUnavailable("the configuration store is closed")
        send, receive = anyio.create_memory_object_stream[list[ConfigItem]](WATCH_BUFFER)
        streams = self._watches.setdefault(app_id, set())
        streams.add(send)
        try:
            yield []  # established
            with receive:
                async for batch in receive:
                    yield batch
            raise BackendUnavailable(
                "the configuration store is closed"
                if self._closed
                else "the watch fell behind the changes and was ended"
            )
        finally:
            streams.discard(send)
            send.close()


def _item(where: _Where, entry: _Entry) -> ConfigItem:
    group, label, key = where
    return ConfigItem(
        key,
        entry.content,
        group,
        label,
        tags=dict(entry.tags),
        metadata={VERSION_METADATA: str(entry.version)},
    )
