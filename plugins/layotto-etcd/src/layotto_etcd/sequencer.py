"""`sequencer.etcd`: the id is the *version* of the key `<keyPrefixPath><key>` (how many times
it was written since it was created), as upstream. One transaction per id:

    Txn If Version(key) > 0 Then Put(key, ignore_value), Get(key)
                            Else Put(key, ""),           Get(key)

`biggerThan` needs more than upstream has: a version only grows by one per write, so it cannot
be raised to a value. The key's *value* therefore holds an offset (empty = 0, which is what
upstream writes), and the id is `version + offset`. A normal id keeps the value
(`ignore_value`), so only `ensure_bigger_than` changes the offset, with a compare-and-swap on
the key's mod revision. Ids stay unique and strictly increasing per key across every sidecar
on the cluster. Segments are not supported (WEAK ids call etcd directly).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from layotto.plugin import (
    Component,
    ComponentContext,
    InvalidArgument,
    SequencerStore,
)

from layotto_etcd.base import EtcdComponent
from layotto_etcd.client import cmp_mod, cmp_version_greater, op_put, op_range
from layotto_etcd.settings import EtcdKeyPrefixSettings

# ensure_bigger_than retries its compare-and-swap this often while other writers move the key,
# with a short jittered pause between attempts so it does not lose the race in lockstep.
_CAS_ATTEMPTS = 100
_CAS_PAUSE_CAP_SECONDS = 0.05


class EtcdSequencerMetadata(EtcdKeyPrefixSettings):
    pass


class EtcdSequencerStore(EtcdComponent, SequencerStore):
    label = "sequencer"
    supports_segments = False

    def __init__(self, settings: EtcdSequencerMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        self._prefix = settings.key_prefix_path

    @classmethod
    def create(cls, metadata: EtcdSequencerMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    def key(self, key: str) -> bytes:
        if not key:
            raise InvalidArgument("field 'key' must not be empty")
        return f"{self._prefix}{key}".encode()

    def _offset(self, kv: Any) -> int:
        raw = bytes(kv.value)
        if not raw:
            return 0
        try:
            return int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise self.failure(
                "the sequencer key holds a value that is not an id offset (written by "
                "something else?)"
            ) from None

    async def next_id(self, key: str) -> int:
        k = self.key(key)
        read = op_range(k)
        reply = await self.etcd.txn(
            compare=[cmp_version_greater(k, 0)],
            success=[op_put(k, ignore_value=True), read],
            failure=[op_put(k, b""), read],
        )
        kvs = reply.responses[1].response_range.kvs
        if not len(kvs):
            raise self.failure("etcd lost the sequencer key inside a transaction")
        return int(kvs[0].version) + self._offset(kvs[0])

    async def ensure_bigger_than(self, key: str, value: int) -> None:
        k = self.key(key)
        if value <= 0:
            return  # ids start at 1
        for attempt in range(_CAS_ATTEMPTS):
            found = await self.etcd.range(k)
            if len(found.kvs):
                kv = found.kvs[0]
                version, offset, mod = int(kv.version), self._offset(kv), int(kv.mod_revision)
            else:
                version, offset, mod = 0, 0, 0
            if version + offset >= value:
                return  # the last id handed out is already >= value
            # The write below makes the version `version + 1` and counts as id `value`, so the
            # next id is `value + 1`.
            new_offset = value - version - 1
            reply = await self.etcd.txn(
                compare=[cmp_mod(k, mod)], success=[op_put(k, str(new_offset).encode())]
            )
            if reply.succeeded:
                return
            await asyncio.sleep(random.uniform(0, min(_CAS_PAUSE_CAP_SECONDS, 0.001 * 2**attempt)))
        raise self.failure("biggerThan: the key kept changing under a compare-and-swap")
