"""The `layotto` entry point of this distribution: the component types it provides.

Models and factories are import strings, loaded only for configured components."""

from __future__ import annotations

from layotto.plugin import ComponentSpec, Kind, hookimpl


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.CONFIGURATION,
            "etcd",
            "layotto_etcd.configuration:EtcdConfigMetadata",
            "layotto_etcd.configuration:EtcdConfigStore.create",
            description="/<appId>/<group>/<label>/<key> with tags; watch resumes by revision",
        ),
        ComponentSpec(
            Kind.LOCK,
            "etcd",
            "layotto_etcd.lock:EtcdLockMetadata",
            "layotto_etcd.lock:EtcdLockStore.create",
            description="leases + owner-guarded transactions; atomic keep-alive",
        ),
        ComponentSpec(
            Kind.SEQUENCER,
            "etcd",
            "layotto_etcd.sequencer:EtcdSequencerMetadata",
            "layotto_etcd.sequencer:EtcdSequencerStore.create",
            description="ids from key versions, biggerThan through a stored offset",
        ),
    ]
