"""The plugin SPI: everything a component author imports from layotto (with layotto.testing).

A plugin is a distribution with an entry point in the group `layotto` that names a module (or
object) implementing `layotto_components()`::

    [project.entry-points.layotto]
    redis = "layotto_redis.plugin"

    # layotto_redis/plugin.py
    from layotto.plugin import ComponentSpec, Kind, hookimpl

    @hookimpl
    def layotto_components() -> list[ComponentSpec]:
        return [ComponentSpec(Kind.STATE, "redis", RedisStateMetadata, RedisStateStore)]
"""

from layotto.plugin.bindings import (
    BindingEvent,
    BindingHandler,
    BindingRequest,
    BindingResponse,
    InputBinding,
    OutputBinding,
)
from layotto.plugin.component import (
    Component,
    ComponentContext,
    ComponentFactory,
    ComponentMetadata,
    ComponentSpec,
    Health,
    HealthStatus,
    Kind,
)
from layotto.plugin.configuration import (
    DELETED_METADATA,
    VERSION_METADATA,
    ConfigItem,
    ConfigQuery,
    ConfigStore,
)
from layotto.plugin.errors import (
    BackendTimeout,
    BackendUnavailable,
    ComponentError,
    ETagInvalid,
    ETagMismatch,
    InvalidArgument,
    LayottoError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unsupported,
)
from layotto.plugin.hookspecs import hookimpl, hookspec
from layotto.plugin.lock import LockStatus, LockStore
from layotto.plugin.pubsub import (
    DEAD_LETTER_TOPIC_METADATA,
    MAX_RETRIES_METADATA,
    PARTITION_KEY_METADATA,
    RAW_PAYLOAD_METADATA,
    TTL_SECONDS_METADATA,
    BulkPublishEntry,
    BulkPublishFailure,
    BulkPublishRequest,
    Message,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
    Subscription,
)
from layotto.plugin.secrets import SecretStore, SecretStoreFeature
from layotto.plugin.sequencer import Segment, SequencerStore
from layotto.plugin.state import (
    TTL_EXPIRE_METADATA,
    TTL_METADATA,
    BulkGetItem,
    BulkStateError,
    Concurrency,
    Consistency,
    DeleteRequest,
    Feature,
    GetRequest,
    GetResponse,
    SetRequest,
    StateStore,
    TransactionOperation,
)
from layotto.plugin.state_query import (
    Query,
    QueryItem,
    QueryRequest,
    QueryResponse,
    parse_query,
)

__all__ = [
    "DEAD_LETTER_TOPIC_METADATA",
    "DELETED_METADATA",
    "MAX_RETRIES_METADATA",
    "PARTITION_KEY_METADATA",
    "RAW_PAYLOAD_METADATA",
    "TTL_EXPIRE_METADATA",
    "TTL_METADATA",
    "TTL_SECONDS_METADATA",
    "VERSION_METADATA",
    "BackendTimeout",
    "BackendUnavailable",
    "BindingEvent",
    "BindingHandler",
    "BindingRequest",
    "BindingResponse",
    "BulkGetItem",
    "BulkPublishEntry",
    "BulkPublishFailure",
    "BulkPublishRequest",
    "BulkStateError",
    "Component",
    "ComponentContext",
    "ComponentError",
    "ComponentFactory",
    "ComponentMetadata",
    "ComponentSpec",
    "Concurrency",
    "ConfigItem",
    "ConfigQuery",
    "ConfigStore",
    "Consistency",
    "DeleteRequest",
    "ETagInvalid",
    "ETagMismatch",
    "Feature",
    "GetRequest",
    "GetResponse",
    "Health",
    "HealthStatus",
    "InputBinding",
    "InvalidArgument",
    "Kind",
    "LayottoError",
    "LockStatus",
    "LockStore",
    "Message",
    "NotFound",
    "OutputBinding",
    "PermissionDenied",
    "PubSub",
    "PubSubFeature",
    "PublishRequest",
    "Query",
    "QueryItem",
    "QueryRequest",
    "QueryResponse",
    "ResourceExhausted",
    "SecretStore",
    "SecretStoreFeature",
    "Segment",
    "SequencerStore",
    "SetRequest",
    "StateStore",
    "SubscribeRequest",
    "Subscription",
    "TransactionOperation",
    "Unsupported",
    "hookimpl",
    "hookspec",
    "parse_query",
]
