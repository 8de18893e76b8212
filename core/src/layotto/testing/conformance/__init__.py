"""Conformance kits for component authors (the checklist: conformance.md §1 to §7).

Subclass a kit in a test module under a `Test*` name and provide the store fixture::

    import pytest
    from layotto.testing.conformance import StateStoreConformance

    class TestRedisState(StateStoreConformance):
        @pytest.fixture
        async def state_store(self, redis_url):  # an initialised store; closed on teardown
            store = RedisStateStore.create(
                RedisStateMetadata(redisHost=...), ComponentContext("s", "app")
            )
            await store.init()
            yield store
            await store.close()

- `StateStoreConformance`: fixture `state_store`; optional `state_store_bad_metadata`.
- `LockStoreConformance`: fixture `lock_store`; optional `lock_store_factory`.
- `SequencerStoreConformance`: fixture `sequencer_store`; optional `sequencer_store_factory`.
- `ConfigStoreConformance`: fixtures `config_store` and `config_updater` (a `ConfigUpdater`
  writing straight to the backend); optional `config_app_id`, `config_groups`, `config_labels`,
  `config_label`.
- `PubSubConformance`: fixture `pubsub` (the default `pubsub_harness` wraps it in a
  `ComponentHarness`: the sidecar's envelope and delivery engine over the component), or
  `pubsub_harness` itself (any `PubSubHarness`, e.g. one driving a running sidecar); the bulk
  publish scenarios need a harness that is also a `BulkPublishHarness`.
- `SecretStoreConformance`: fixture `secret_store_factory` (an async callable: `SecretSeed` ->
  an initialised store holding those secrets); optional `secret_seed`.
- `OutputBindingConformance`: fixture `output_binding`; hooks `item_metadata`, `is_missing`,
  `lists`.
- `InputBindingConformance`: fixture `input_binding`; optional `input_binding_trigger` (a
  `BindingTrigger` writing one event from outside; none for a schedule).

The kits are not collected themselves (their names do not start with `Test`). Every test runs
under anyio on asyncio; override the `anyio_backend` fixture in the subclass to run on trio too.
See each module and `layotto/testing/README.md` for the details.
"""

from layotto.testing.conformance.bindings import (
    BindingTrigger,
    InputBindingConformance,
    OutputBindingConformance,
)
from layotto.testing.conformance.configuration import ConfigStoreConformance, ConfigUpdater
from layotto.testing.conformance.lock import LockStoreConformance
from layotto.testing.conformance.pubsub import (
    BulkPublishHarness,
    ComponentHarness,
    Handler,
    PubSubConformance,
    PubSubHarness,
)
from layotto.testing.conformance.secretstores import SecretSeed, SecretStoreConformance
from layotto.testing.conformance.sequencer import SequencerStoreConformance
from layotto.testing.conformance.state import StateStoreConformance

__all__ = [
    "BindingTrigger",
    "BulkPublishHarness",
    "ComponentHarness",
    "ConfigStoreConformance",
    "ConfigUpdater",
    "Handler",
    "InputBindingConformance",
    "LockStoreConformance",
    "OutputBindingConformance",
    "PubSubConformance",
    "PubSubHarness",
    "SecretSeed",
    "SecretStoreConformance",
    "SequencerStoreConformance",
    "StateStoreConformance",
]
