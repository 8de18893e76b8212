"""A plain Dapr Python SDK program: nothing in it knows it talks to Layotto for Python.

    uv run layotto run --app-id quickstart         # terminal 1: the embedded default
    DAPR_GRPC_PORT=34904 DAPR_HTTP_PORT=34999 uv run python examples/dapr_sdk_quickstart.py

(or start the sidecar on Dapr's own ports, `layotto run --grpc-port 50001 --http-port 3500`,
and set nothing at all). It uses state, pub/sub with a streaming subscription, configuration,
a distributed lock, secrets and the metadata API, against the components the sidecar starts
with when it has no config: `statestore`, `pubsub`, `configstore`, `lockstore`, `secretstore`.
"""

from __future__ import annotations

import json
import time
import uuid

from dapr.clients import DaprClient


def main() -> None:
    with DaprClient() as d:  # waits for GET /v1.0/healthz/outbound, then speaks gRPC
        d.save_state("statestore", "order-1", json.dumps({"qty": 3}))
        state = d.get_state("statestore", "order-1")
        print("state:", state.data.decode(), "etag:", state.etag)

        subscription = d.subscribe("pubsub", "orders")  # a SubscribeTopicEventsAlpha1 stream
        try:
            d.publish_event(
                "pubsub", "orders", json.dumps({"id": 1}), data_content_type="application/json"
            )
            message = subscription.next_message()
            print("event:", message.data(), "from", message.source())
            subscription.respond_success(message)
            time.sleep(0.2)  # respond_* only queues the ack: let it go out before closing
        finally:
            subscription.close()

        config = d.get_configuration("configstore", ["feature-x"])
        print("configuration:", {k: v.value for k, v in config.items.items()} or "(empty)")

        with d.try_lock("lockstore", "res-1", str(uuid.uuid4()), expiry_in_seconds=10) as lock:
            print("locked:", lock.success)

        print("secrets:", d.get_bulk_secret("secretstore").secrets)

        metadata = d.get_metadata()
        print(
            "sidecar:",
            metadata.application_id,
            sorted(c.name for c in metadata.registered_components),
        )


if __name__ == "__main__":
    main()
