"""Dapr's GetMetadata, SetMetadata and Shutdown, against what the runtime lets the API see.

The runtime keeps the metadata (the same document `GET /v1.0/metadata` answers, dapr-compat.md
5) and owns shutdown; the API gets them as `SidecarControl`. GetMetadata is the proto form of
that document, plus the streaming subscriptions open on this port right now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto.api.pubsub_grpc import StreamOpen
from layotto.version import runtime_version


def _no_metadata() -> Mapping[str, Any]:
    return {}


def _ignore(key: str, value: str) -> None:
    return None


def _no_shutdown() -> None:
    return None


@dataclass(frozen=True, slots=True)
class SidecarControl:
    """`metadata()`: the Dapr metadata document (the JSON shape of `/v1.0/metadata`);
    `set_metadata(key, value)`: store one extended-metadata attribute; `request_shutdown()`:
    begin the graceful shutdown (returns at once)."""

    metadata: Callable[[], Mapping[str, Any]] = _no_metadata
    set_metadata: Callable[[str, str], None] = _ignore
    request_shutdown: Callable[[], None] = _no_shutdown


_SUBSCRIPTION_TYPES = {t.name: t for t in pb.PubsubSubscriptionType}


def _subscription(entry: Mapping[str, Any]) -> pb.PubsubSubscription:
    rules = entry.get("rules") or []
    return pb.PubsubSubscription(
        pubsub_name=str(entry.get("pubsubname", "")),
        topic=str(entry.get("topic", "")),
        metadata={str(k): str(v) for k, v in (entry.get("metadata") or {}).items()},
        rules=pb.PubsubSubscriptionRules(
            rules=[
                pb.PubsubSubscriptionRule(
                    match=str(rule.get("match", "")), path=str(rule.get("path", ""))
                )
                for rule in rules
            ]
        )
        if rules
        else None,
        dead_letter_topic=str(entry.get("deadLetterTopic", "")),
        type=_SUBSCRIPTION_TYPES.get(str(entry.get("type", "")), pb.PubsubSubscriptionType.UNKNOWN),
    )


def _streaming(open_streams: Iterable[StreamOpen]) -> list[pb.PubsubSubscription]:
    return [
        pb.PubsubSubscription(
            pubsub_name=s.pubsub_name,
            topic=s.topic,
            metadata=dict(s.metadata),
            dead_letter_topic=s.dead_letter_topic or "",
            type=pb.PubsubSubscriptionType.STREAMING,
        )
        for s in open_streams
    ]


def _app_connection(body: Mapping[str, Any]) -> pb.AppConnectionProperties | None:
    props = body.get("appConnectionProperties")
    if not props:
        return None
    health = props.get("health")
    return pb.AppConnectionProperties(
        port=int(props.get("port", 0)),
        protocol=str(props.get("protocol", "")),
        channel_address=str(props.get("channelAddress", "")),
        max_concurrency=int(props.get("maxConcurrency", 0)),
        health=pb.AppConnectionHealthProperties(
            health_check_path=str(health.get("healthCheckPath", "")),
            health_probe_interval=str(health.get("healthProbeInterval", "")),
            health_probe_timeout=str(health.get("healthProbeTimeout", "")),
            health_threshold=int(health.get("healthThreshold", 0)),
        )
        if health
        else None,
    )


def metadata_response(
    body: Mapping[str, Any], open_streams: Iterable[StreamOpen] = ()
) -> pb.GetMetadataResponse:
    components = [
        pb.RegisteredComponents(
            name=str(c.get("name", "")),
            type=str(c.get("type", "")),
            version=str(c.get("version", "")),
            capabilities=[str(cap) for cap in c.get("capabilities", ())],
        )
        for c in body.get("components", ())
    ]
    return pb.GetMetadataResponse(
        id=str(body.get("id", "")),
        registered_components=components,
        extended_metadata={str(k): str(v) for k, v in (body.get("extended") or {}).items()},
        subscriptions=[
            *(_subscription(s) for s in body.get("subscriptions", ())),
            *_streaming(open_streams),
        ],
        http_endpoints=[
            pb.MetadataHttpEndpoint(name=str(e.get("name", "")))
            for e in body.get("httpEndpoints", ())
        ],
        resiliencies=[
            pb.MetadataResiliency(name=str(r.get("name", ""))) for r in body.get("resiliencies", ())
        ],
        app_connection_properties=_app_connection(body),
        runtime_version=str(body.get("runtimeVersion") or runtime_version()),
        enabled_features=[str(f) for f in body.get("enabledFeatures", ())],
        # No actor runtime here: DISABLED tells SDKs not to wait for placement.
        actor_runtime=pb.ActorRuntime(runtime_status=pb.ActorRuntimeActorRuntimeStatus.DISABLED),
    )
