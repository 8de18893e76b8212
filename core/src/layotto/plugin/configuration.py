"""The configuration-store SPI (Layotto's configuration primitive: app id, group, label, key,
content, tags), with one backend watch per (store, app id) that the sidecar fans out.

Conventions every store follows:
- `group` and `label` arrive already defaulted by the sidecar (blank -> the store's
  `default_group` / `default_label`), so a store never sees blanks.
- A deleted key is reported as an item with empty `content` and `metadata["deleted"] = "true"`.
- `metadata["version"]`, when the backend has versions (etcd mod revision, Redis version, Apollo
  release key), lets the sidecar resync after a reconnect without missing or repeating changes.
  When it is a decimal integer that grows with every change of a key (etcd revisions, a
  counter), the sidecar also drops a stale replay (an older version after a newer one); other
  versions are compared for equality only.
- `watch` is best written as an async generator: the sidecar closes it with `aclose()` (shielded,
  bounded) when it stops watching. Do not keep an anyio cancel scope or task group open across
  a `yield` (anyio does not support that in async generators).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from layotto.errors import Unsupported
from layotto.plugin.component import Component

DELETED_METADATA = "deleted"
VERSION_METADATA = "version"


@dataclass(frozen=True, slots=True)
class ConfigItem:
    key: str
    content: str
    group: str
    label: str
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def deleted(self) -> bool:
        return self.metadata.get(DELETED_METADATA) == "true"


@dataclass(frozen=True, slots=True)
class ConfigQuery:
    """What to read: `keys` empty means every key of (app_id, group, label)."""

    app_id: str
    group: str
    label: str
    keys: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


class ConfigStore(Component):
    """Required: `get` and `watch`. Stores that can write implement `set` and `delete`;
    the others answer UNIMPLEMENTED (a read-only Apollo without Open API credentials, say)."""

    default_group: str = "default"
    default_label: str = "default"

    @abstractmethod
    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        """Current items; keys that do not exist are left out (not an error)."""

    async def set(
        self, app_id: str, items: Sequence[ConfigItem], metadata: Mapping[str, str]
    ) -> None:
        raise Unsupported("this configuration store is read-only")

    async def delete(self, query: ConfigQuery) -> None:
        """Delete `query.keys` (deleting a missing key succeeds)."""
        raise Unsupported("this configuration store is read-only")

    @abstractmethod
    def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        """Every change to any item of `app_id`, as batches, until the caller stops iterating.

        Yield an empty list once the watch is established (the sidecar then marks it healthy
        and resyncs). Raise a LayottoError (BackendUnavailable, ...) when the backend connection
        is lost: the sidecar's watcher reconnects with backoff, calls `watch` again and diffs a
        fresh `get` against what it last saw, so a store needs no resume logic of its own
        (one that has it, such as etcd revisions, may use it to avoid the resync)."""
