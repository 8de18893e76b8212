"""etcd components for Layotto for Python: `configuration.etcd`, `lock.etcd`, `sequencer.etcd`."""

# Exports load on first use: the sidecar imports this package to list the plugin, and
# must not pay for the backend client until a component of this plugin is configured.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layotto.plugin.durations import parse_duration

    from layotto_etcd.configuration import (
        EtcdConfigMetadata,
        EtcdConfigStore,
    )
    from layotto_etcd.lock import (
        EtcdLockMetadata,
        EtcdLockStore,
    )
    from layotto_etcd.sequencer import (
        EtcdSequencerMetadata,
        EtcdSequencerStore,
    )
    from layotto_etcd.settings import (
        EtcdSettings,
    )

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "EtcdConfigMetadata": "layotto_etcd.configuration",
    "EtcdConfigStore": "layotto_etcd.configuration",
    "EtcdLockMetadata": "layotto_etcd.lock",
    "EtcdLockStore": "layotto_etcd.lock",
    "EtcdSequencerMetadata": "layotto_etcd.sequencer",
    "EtcdSequencerStore": "layotto_etcd.sequencer",
    "EtcdSettings": "layotto_etcd.settings",
    "parse_duration": "layotto.plugin.durations",
}

__all__ = [
    "EtcdConfigMetadata",
    "EtcdConfigStore",
    "EtcdLockMetadata",
    "EtcdLockStore",
    "EtcdSequencerMetadata",
    "EtcdSequencerStore",
    "EtcdSettings",
    "__version__",
    "parse_duration",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
