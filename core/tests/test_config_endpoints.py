"""Dapr `HTTPEndpoint` resources and the native `http_endpoints:` list (config_endpoints), and
daprd's template tags in resource values (`{uuid}`, `{podName}`, `{namespace}`, `{appID}`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from layotto.config import SecretRef, load_config
from layotto.errors import ConfigError

SECRET_STORE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: secrets.json
"""

ENDPOINT = """\
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata:
  name: {name}
spec:
  baseUrl: {url}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# -- template tags ----------------------------------------------------------------------------

TEMPLATED = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  metadata:
  - name: consumerID
    value: "{value}"
"""


def templated(tmp_path: Path, value: str, app_id: str = "shop") -> str:
    write(tmp_path, "state.yaml", TEMPLATED.format(value=value))
    [component] = load_config(resources_paths=[tmp_path], app_id=app_id).components
    return str(component.metadata["consumerID"])


def test_pod_name_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAME", "shop-7d9f")
    assert templated(tmp_path, "{podName}-{podName}") == "shop-7d9f-shop-7d9f"


def test_pod_name_without_the_variable_is_an_error_naming_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    write(tmp_path, "state.yaml", TEMPLATED.format(value="{podName}"))
    message = config_error(resources_paths=[tmp_path], app_id="shop")
    assert "state.yaml" in message
    assert "spec.metadata[0]" in message
    assert "consumerID" in message
    assert "POD_NAME" in message


def test_namespace_is_the_namespace_dot_app_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAMESPACE", "prod")
    assert templated(tmp_path, "{namespace}") == "prod.shop"


def test_namespace_defaults_to_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAMESPACE", raising=False)
    assert templated(tmp_path, "q-{namespace}-{appID}") == "q-default.shop-shop"


def test_every_uuid_tag_is_a_new_uuid(tmp_path: Path) -> None:
    first, second = templated(tmp_path, "{uuid}/{uuid}").split("/")
    assert first != second
    assert uuid.UUID(first)
    assert uuid.UUID(second)


# -- HTTPEndpoint resources -------------------------------------------------------------------

FULL = """\
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata:
  name: github
spec:
  baseUrl: https://api.github.com
  headers:
  - name: Accept-Language
    value: en-US
  - name: X-Retries
    value: 3
  - name: Authorization
    secretKeyRef:
      name: gh
      key: token
auth:
  secretStore: vault
scopes: [shop]
"""


def test_an_endpoint_with_plain_and_secret_headers(tmp_path: Path) -> None:
    write(tmp_path, "vault.yaml", SECRET_STORE.format(name="vault"))
    write(tmp_path, "github.yaml", FULL)
    [endpoint] = load_config(resources_paths=[tmp_path], app_id="shop").http_endpoints
    assert endpoint.name == "github"
    assert endpoint.base_url == "https://api.github.com"
    # Names lower-case; a YAML number as its text.
    assert endpoint.headers == {"accept-language": "en-US", "x-retries": "3"}
    assert endpoint.secret_refs == (
        SecretRef(
            field="headers.authorization",
            store="vault",
            secret="gh",
            key="token",
            store_field="auth.secretStore",
        ),
    )
    assert endpoint.source == str(tmp_path / "github.yaml")


def test_a_secret_header_without_a_store_takes_the_only_one(tmp_path: Path) -> None:
    write(tmp_path, "vault.yaml", SECRET_STORE.format(name="vault"))
    write(tmp_path, "github.yaml", FULL.replace("auth:\n  secretStore: vault\n", ""))
    [endpoint] = load_config(resources_paths=[tmp_path], app_id="shop").http_endpoints
    assert endpoint.secret_refs[0].store == "vault"


def test_a_scoped_out_endpoint_is_not_loaded(tmp_path: Path) -> None:
    write(tmp_path, "vault.yaml", SECRET_STORE.format(name="vault"))
    write(tmp_path, "github.yaml", FULL)
    assert load_config(resources_paths=[tmp_path], app_id="billing").http_endpoints == ()


def test_missing_base_url_names_file_and_field(tmp_path: Path) -> None:
    write(tmp_path, "ep.yaml", "kind: HTTPEndpoint\nmetadata: {name: ext}\nspec: {headers: []}\n")
    message = config_error(resources_paths=[tmp_path])
    assert str(tmp_path / "ep.yaml") in message
    assert "HTTPEndpoint 'ext'" in message
    assert "'spec.baseUrl' is required" in message


@pytest.mark.parametrize(
    "url", ["ftp://files.example.com", "api.example.com", "http://", "https://h:port"]
)
def test_a_base_url_that_is_not_http_is_refused(tmp_path: Path, url: str) -> None:
    write(tmp_path, "ep.yaml", ENDPOINT.format(name="ext", url=url))
    message = config_error(resources_paths=[tmp_path])
    assert "ep.yaml" in message
    assert "'spec.baseUrl'" in message
    assert "http://" in message


def test_duplicate_names_name_both_files(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write(one, "a.yaml", ENDPOINT.format(name="ext", url="http://a.example.com"))
    write(two, "b.yaml", ENDPOINT.format(name="ext", url="http://b.example.com"))
    message = config_error(resources_paths=[one, two])
    assert "duplicate HTTPEndpoint 'ext'" in message
    assert str(one / "a.yaml") in message
    assert str(two / "b.yaml") in message


def test_an_unknown_secret_store_names_file_field_and_stores(tmp_path: Path) -> None:
    write(tmp_path, "vault.yaml", SECRET_STORE.format(name="other"))
    write(tmp_path, "github.yaml", FULL)
    message = config_error(resources_paths=[tmp_path], app_id="shop")
    assert "github.yaml" in message
    assert "'spec.headers.authorization' reads secret 'gh' key 'token'" in message
    assert "'vault', which is not configured" in message
    assert "'other'" in message


def test_a_secret_header_without_any_secret_store(tmp_path: Path) -> None:
    write(tmp_path, "github.yaml", FULL.replace("auth:\n  secretStore: vault\n", ""))
    message = config_error(resources_paths=[tmp_path], app_id="shop")
    assert "github.yaml" in message
    assert "no secret store is configured" in message


def test_client_tls_documents_inline_and_from_secrets(tmp_path: Path) -> None:
    write(tmp_path, "vault.yaml", SECRET_STORE.format(name="vault"))
    write(
        tmp_path,
        "ep.yaml",
        ENDPOINT.format(name="ext", url="https://a.example.com")
        + """\
  clientTLS:
    rootCA: {value: "-----BEGIN CERTIFICATE-----"}
    certificate: {secretKeyRef: {name: tls, key: cert}}
    privateKey: {secretKeyRef: {name: tls, key: key}}
""",
    )
    [endpoint] = load_config(resources_paths=[tmp_path]).http_endpoints
    assert endpoint.client_tls == {"rootCA": "-----BEGIN CERTIFICATE-----"}
    assert [(r.field, r.store, r.secret, r.key) for r in endpoint.secret_refs] == [
        ("clientTLS.certificate", "vault", "tls", "cert"),
        ("clientTLS.privateKey", "vault", "tls", "key"),
    ]


@pytest.mark.parametrize(
    ("client_tls", "fragment"),
    [
        ("{certificate: {value: pem}}", "needs both 'certificate' and 'privateKey'"),
        ("{rootCA: pem}", "'spec.clientTLS.rootCA' needs 'value' (PEM text) or"),
        ("{rootCA: {value: ''}}", "'spec.clientTLS.rootCA': 'value' must be PEM text"),
        ("{rootCA: {value: a, secretKeyRef: {name: s}}}", "'spec.clientTLS.rootCA' needs"),
        ("{caCert: {value: a}}", "unknown field(s) 'caCert'"),
        ("{renegotiation: RenegotiateFreelyAsClient}", "'spec.clientTLS.renegotiation' is not"),
    ],
)
def test_bad_client_tls_names_the_field(tmp_path: Path, client_tls: str, fragment: str) -> None:
    text = ENDPOINT.format(name="ext", url="https://a.example.com") + f"  clientTLS: {client_tls}\n"
    write(tmp_path, "ep.yaml", text)
    message = config_error(resources_paths=[tmp_path])
    assert "ep.yaml" in message
    assert fragment in message


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ("- {value: x}", "'spec.headers[0]' needs 'name'"),
        ("- {name: 'bad name', value: x}", "'spec.headers[0]' needs 'name'"),
        (
            "- {name: X-A, value: 1}\n  - {name: x-a, value: 2}",
            "'spec.headers[1]': header 'x-a' is listed twice",
        ),
        ("- {name: X-A, secretKeyRef: {key: k}}", "secretKeyRef needs 'name'"),
    ],
)
def test_bad_headers_name_the_field(tmp_path: Path, headers: str, fragment: str) -> None:
    text = (
        ENDPOINT.format(name="ext", url="http://a.example.com") + "  headers:\n  " + headers + "\n"
    )
    write(tmp_path, "ep.yaml", text)
    message = config_error(resources_paths=[tmp_path])
    assert "ep.yaml" in message
    assert fragment in message


def test_the_native_config_lists_http_endpoints(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "layotto.yaml",
        """\
app: {id: shop}
components:
- {name: vault, type: secretstores.in-memory}
http_endpoints:
- name: ext
  baseUrl: http://127.0.0.1:9000/api
  headers:
  - {name: X-Key, value: k1}
  - {name: Authorization, secretKeyRef: {name: gh, key: token}}
- name: elsewhere
  baseUrl: http://127.0.0.1:9001
  scopes: [billing]
""",
    )
    [endpoint] = load_config(config).http_endpoints
    assert (endpoint.name, endpoint.base_url) == ("ext", "http://127.0.0.1:9000/api")
    assert endpoint.headers == {"x-key": "k1"}
    assert endpoint.secret_refs[0].store == "vault"


def test_the_native_config_refuses_unknown_fields(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "layotto.yaml",
        "http_endpoints:\n- {name: ext, base_url: 'http://a.example.com'}\n",
    )
    message = config_error(config)
    assert "http_endpoints[0]" in message
    assert "'base_url'" in message
