"""Kafka components for Layotto for Python: `pubsub.kafka` and `bindings.kafka`."""

# Exports load on first use: the sidecar imports this package to list the plugin, and
# must not pay for the backend client until a component of this plugin is configured.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layotto_kafka.binding import KafkaBinding, KafkaBindingMetadata
    from layotto_kafka.client import KafkaClient
    from layotto_kafka.consumer import KafkaMessage, KafkaSubscription
    from layotto_kafka.pubsub import KafkaPubSub
    from layotto_kafka.settings import KafkaMetadata

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "KafkaBinding": "layotto_kafka.binding",
    "KafkaBindingMetadata": "layotto_kafka.binding",
    "KafkaClient": "layotto_kafka.client",
    "KafkaMessage": "layotto_kafka.consumer",
    "KafkaMetadata": "layotto_kafka.settings",
    "KafkaPubSub": "layotto_kafka.pubsub",
    "KafkaSubscription": "layotto_kafka.consumer",
}

__all__ = [
    "KafkaBinding",
    "KafkaBindingMetadata",
    "KafkaClient",
    "KafkaMessage",
    "KafkaMetadata",
    "KafkaPubSub",
    "KafkaSubscription",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
