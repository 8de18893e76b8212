"""Redis components for Layotto for Python: `state.redis`, `configuration.redis`,
`pubsub.redis`, `lock.redis`, `sequencer.redis`, `bindings.redis`."""

# Exports load on first use: the sidecar imports this package to list the plugin, and
# must not pay for the backend client until a component of this plugin is configured.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layotto.plugin.durations import parse_duration

    from layotto_redis.binding import (
        RedisBinding,
        RedisBindingMetadata,
    )
    from layotto_redis.configuration import (
        RedisConfigMetadata,
        RedisConfigStore,
    )
    from layotto_redis.lock import (
        RedisLockMetadata,
        RedisLockStore,
    )
    from layotto_redis.pubsub import (
        RedisPubSub,
        RedisSubscription,
    )
    from layotto_redis.sequencer import (
        RedisSequencerMetadata,
        RedisSequencerStore,
    )
    from layotto_redis.settings import (
        RedisPubSubMetadata,
        RedisSettings,
    )
    from layotto_redis.state import (
        RedisStateMetadata,
        RedisStateStore,
    )

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "RedisBinding": "layotto_redis.binding",
    "RedisBindingMetadata": "layotto_redis.binding",
    "RedisConfigMetadata": "layotto_redis.configuration",
    "RedisConfigStore": "layotto_redis.configuration",
    "RedisLockMetadata": "layotto_redis.lock",
    "RedisLockStore": "layotto_redis.lock",
    "RedisPubSub": "layotto_redis.pubsub",
    "RedisPubSubMetadata": "layotto_redis.settings",
    "RedisSubscription": "layotto_redis.pubsub",
    "RedisSequencerMetadata": "layotto_redis.sequencer",
    "RedisSequencerStore": "layotto_redis.sequencer",
    "RedisSettings": "layotto_redis.settings",
    "RedisStateMetadata": "layotto_redis.state",
    "RedisStateStore": "layotto_redis.state",
    "parse_duration": "layotto.plugin.durations",
}

__all__ = [
    "RedisBinding",
    "RedisBindingMetadata",
    "RedisConfigMetadata",
    "RedisConfigStore",
    "RedisLockMetadata",
    "RedisLockStore",
    "RedisPubSub",
    "RedisPubSubMetadata",
    "RedisSequencerMetadata",
    "RedisSequencerStore",
    "RedisSettings",
    "RedisStateMetadata",
    "RedisStateStore",
    "RedisSubscription",
    "__version__",
    "parse_duration",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
