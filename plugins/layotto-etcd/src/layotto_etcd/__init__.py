"""etcd components for Layotto for Python: `configuration.etcd`, `lock.etcd`, `sequencer.etcd`."""

from layotto_etcd.configuration import EtcdConfigMetadata, EtcdConfigStore
from layotto_etcd.lock import EtcdLockMetadata, EtcdLockStore
from layotto_etcd.sequencer import EtcdSequencerMetadata, EtcdSequencerStore
from layotto_etcd.settings import EtcdSettings, parse_duration

__version__ = "0.1.0"

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
