"""The `layotto` entry point of this distribution: the component types it provides.

Models and factories are import strings, loaded only for configured components."""

from __future__ import annotations

from layotto.plugin import ComponentSpec, Kind, hookimpl


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.PUBSUB,
            "kafka",
            "layotto_kafka.settings:KafkaMetadata",
            "layotto_kafka.pubsub:KafkaPubSub.create",
            description="acks=all publish; consumer groups with contiguous manual commits",
        ),
        ComponentSpec(
            Kind.BINDINGS,
            "kafka",
            "layotto_kafka.binding:KafkaBindingMetadata",
            "layotto_kafka.binding:KafkaBinding.create",
            description="input and output binding: produce to publishTopic, consume topics "
            "at least once",
        ),
    ]
