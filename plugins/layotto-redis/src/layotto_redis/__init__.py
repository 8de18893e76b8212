"""Redis components for Layotto for Python: `state.redis`, `configuration.redis`, `lock.redis`,
`sequencer.redis`."""

from layotto_redis.configuration import RedisConfigMetadata, RedisConfigStore
from layotto_redis.lock import RedisLockMetadata, RedisLockStore
from layotto_redis.sequencer import RedisSequencerMetadata, RedisSequencerStore
from layotto_redis.settings import RedisSettings, parse_duration
from layotto_redis.state import RedisStateMetadata, RedisStateStore

__version__ = "0.1.0"

__all__ = [
    "RedisConfigMetadata",
    "RedisConfigStore",
    "RedisLockMetadata",
    "RedisLockStore",
    "RedisSequencerMetadata",
    "RedisSequencerStore",
    "RedisSettings",
    "RedisStateMetadata",
    "RedisStateStore",
    "__version__",
    "parse_duration",
]
