"""Configuration items between `spec.proto.runtime.v1` messages and the SPI's `ConfigItem`."""

from __future__ import annotations

from collections.abc import Mapping

from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.plugin import ConfigItem

# SubscribeConfigurationRequest.metadata flag (our extension): "true" sends the current items of
# the subscription as its first response, then the changes. Upstream sends changes only.
SEND_INITIAL_VALUES = "sendInitialValues"


def to_pb(item: ConfigItem) -> pb.ConfigurationItem:
    return pb.ConfigurationItem(
        key=item.key,
        content=item.content,
        group=item.group,
        label=item.label,
        tags=dict(item.tags),
        metadata=dict(item.metadata),
    )


def from_pb(item: pb.ConfigurationItem) -> ConfigItem:
    return ConfigItem(
        item.key,
        item.content,
        item.group,
        item.label,
        tags=dict(item.tags),
        metadata=dict(item.metadata),
    )


def wants_initial_values(metadata: Mapping[str, str]) -> bool:
    return metadata.get(SEND_INITIAL_VALUES, "").strip().lower() == "true"
