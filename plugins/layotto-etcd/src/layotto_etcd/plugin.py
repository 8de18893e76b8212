"""The `layotto` entry point of this distribution: the component types it provides."""

from __future__ import annotations

from layotto.plugin import ComponentSpec, Kind, hookimpl

from layotto_etcd.configuration import EtcdConfigMetadata, EtcdConfigStore
from layotto_etcd.lock import EtcdLockMetadata, EtcdLockStore
from layotto_etcd.sequencer import EtcdSequencerMetadata, EtcdSequencerStore


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.CONFIGURATION,
            "etcd",
            EtcdConfigMetadata,
            EtcdConfigStore.create,
            description="/<appId>/<group>/<label>/<key> with tags; watch resumes by revision",
        ),
        ComponentSpec(
            Kind.LOCK,
            "etcd",
            EtcdLockMetadata,
            EtcdLockStore.create,
            description="leases + owner-guarded transactions; atomic keep-alive",
        ),
        ComponentSpec(
            Kind.SEQUENCER,
            "etcd",
            EtcdSequencerMetadata,
            EtcdSequencerStore.create,
            description="ids from key versions, biggerThan through a stored offset",
        ),
    ]
