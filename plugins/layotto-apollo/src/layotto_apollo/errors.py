"""Apollo client errors -> the SPI's errors, at the edge of the component.

- `ApolloConnectionError` (refused, reset, no config service) -> `BackendUnavailable`;
- `ApolloTimeoutError` -> `BackendTimeout`;
- `ApolloHTTPError` 401 / 403 (token or access key rejected) -> `ComponentError` with reason
  `ERR_APOLLO_UNAUTHORIZED`;
- `ApolloHTTPError` 429 and 5xx -> `BackendUnavailable`;
- any other status (400, 404, ...) -> `ComponentError`.

Messages name the component and the Apollo endpoint, carry Apollo's own explanation, and are
scrubbed of the addresses, the Open API token and the access-key secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from layotto.plugin import BackendTimeout, BackendUnavailable, ComponentError, LayottoError

from layotto_apollo.client import (
    ApolloConnectionError,
    ApolloError,
    ApolloHTTPError,
    ApolloTimeoutError,
)

UNAUTHORIZED_REASON = "ERR_APOLLO_UNAUTHORIZED"


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def translate(err: BaseException, what: str, secrets: Iterable[str] = ()) -> LayottoError:
    """`what` says who failed, e.g. "configuration store 'apollo'"."""
    if isinstance(err, LayottoError):
        return err
    secrets = list(secrets)
    message = scrub(err.message if isinstance(err, ApolloError) else str(err), secrets)
    if isinstance(err, ApolloConnectionError):
        return BackendUnavailable(f"{what}: {message}")
    if isinstance(err, ApolloTimeoutError):
        return BackendTimeout(f"{what}: {message}")
    if isinstance(err, ApolloHTTPError):
        if err.status in (401, 403):
            return ComponentError(
                f"{what}: Apollo refused the request: {message}", reason=UNAUTHORIZED_REASON
            )
        if err.status == 429 or err.status >= 500:
            return BackendUnavailable(f"{what}: Apollo failed: {message}")
        return ComponentError(f"{what}: Apollo answered with an error: {message}")
    if isinstance(err, ApolloError):
        return ComponentError(f"{what}: {message}")
    return ComponentError(f"{what}: unexpected failure ({type(err).__name__})")


@contextmanager
def translated(what: str, secrets: Iterable[str] = ()) -> Iterator[None]:
    """Re-raise the client's errors as LayottoErrors (the original is the cause)."""
    try:
        yield
    except LayottoError:
        raise
    except ApolloError as err:
        raise translate(err, what, secrets) from err
