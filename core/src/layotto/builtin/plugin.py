from __future__ import annotations

from layotto.builtin.memory_config import InMemoryConfigMetadata, InMemoryConfigStore
from layotto.builtin.memory_lock import InMemoryLockMetadata, InMemoryLockStore
from layotto.builtin.memory_pubsub import InMemoryPubSub, InMemoryPubSubMetadata
from layotto.builtin.memory_sequencer import InMemorySequencer, InMemorySequencerMetadata
from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore
from layotto.plugin import ComponentSpec, Kind, hookimpl


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.STATE,
            "in-memory",
            InMemoryStateMetadata,
            InMemoryStateStore.create,
            description="process-local state with ETags, TTL and transactions",
        ),
        ComponentSpec(
            Kind.PUBSUB,
            "in-memory",
            InMemoryPubSubMetadata,
            InMemoryPubSub.create,
            description="process-local topics with consumer groups, redelivery and TTL",
        ),
        ComponentSpec(
            Kind.CONFIGURATION,
            "in-memory",
            InMemoryConfigMetadata,
            InMemoryConfigStore.create,
            description="process-local configuration with versions, tags and watches",
        ),
        ComponentSpec(
            Kind.LOCK,
            "in-memory",
            InMemoryLockMetadata,
            InMemoryLockStore.create,
            description="process-local leases with expiry",
        ),
        ComponentSpec(
            Kind.SEQUENCER,
            "in-memory",
            InMemorySequencerMetadata,
            InMemorySequencer.create,
            description="process-local per-key counters, segments supported",
        ),
        ComponentSpec(
            Kind.RPC,
            "http",
            "layotto.builtin.rpc_http:HttpChannelMetadata",
            "layotto.builtin.rpc_http:HttpChannel.create",
            description="InvokeService over HTTP/1.1 or h2c: {verb} http://address/{method}",
        ),
        ComponentSpec(
            Kind.RPC,
            "grpc",
            "layotto.builtin.rpc_grpc:GrpcChannelMetadata",
            "layotto.builtin.rpc_grpc:GrpcChannel.create",
            description="InvokeService over gRPC: the target's sidecar, or its app (Dapr OnInvoke)",
        ),
        ComponentSpec(
            Kind.NAMERESOLUTION,
            "static",
            "layotto.builtin.name_resolvers:StaticResolverMetadata",
            "layotto.builtin.name_resolvers:StaticResolver.create",
            description="a table of app id -> addresses, round-robin, unreachable ones skipped",
        ),
        ComponentSpec(
            Kind.NAMERESOLUTION,
            "mesh",
            "layotto.builtin.name_resolvers:MeshResolverMetadata",
            "layotto.builtin.name_resolvers:MeshResolver.create",
            description="every app through one mesh egress address (Envoy, MOSN)",
        ),
        ComponentSpec(
            Kind.RPCFILTER,
            "dubbo_json_rpc",
            "layotto.builtin.rpc_filters:DubboJsonRpcMetadata",
            "layotto.builtin.rpc_filters:DubboJsonRpcFilter.create",
            description="Dubbo JSON-RPC headers (x-services, x-method), path = app id",
        ),
        ComponentSpec(
            Kind.SECRETSTORES,
            "in-memory",
            "layotto.builtin.secret_stores:InMemorySecretStoreMetadata",
            "layotto.builtin.secret_stores:InMemorySecretStore.create",
            description="secrets given in the component's own metadata (tests, the default)",
        ),
        ComponentSpec(
            Kind.SECRETSTORES,
            "local.file",
            "layotto.builtin.secret_stores:LocalFileSecretStoreMetadata",
            "layotto.builtin.secret_stores:LocalFileSecretStore.create",
            description="a JSON file of secrets, nested keys flattened with a separator",
        ),
        ComponentSpec(
            Kind.SECRETSTORES,
            "local.env",
            "layotto.builtin.secret_stores:LocalEnvSecretStoreMetadata",
            "layotto.builtin.secret_stores:LocalEnvSecretStore.create",
            description="the sidecar's environment variables as secrets",
        ),
        ComponentSpec(
            Kind.BINDINGS,
            "http",
            "layotto.builtin.binding_http:HttpBindingMetadata",
            "layotto.builtin.binding_http:HttpBinding.create",
            description="output binding: HTTP requests (get, post, put, delete, ...) to a URL",
        ),
        ComponentSpec(
            Kind.BINDINGS,
            "cron",
            "layotto.builtin.binding_cron:CronBindingMetadata",
            "layotto.builtin.binding_cron:CronBinding.create",
            description="input binding: an event on a cron schedule (@every 15m, 0 30 * * * *)",
        ),
    ]
