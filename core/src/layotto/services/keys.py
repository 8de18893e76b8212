"""Key-prefix strategies (layotto-semantics.md 2.3, dapr-compat.md 3.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from layotto.errors import InvalidArgument, LayottoError

SEPARATOR = "||"

E = TypeVar("E", bound=LayottoError)


@dataclass(frozen=True, slots=True)
class KeyPrefix:
    """How a store's keys are namespaced: `none`, `appid`, `name`, or a literal prefix."""

    prefix: str  # "" = keys are stored as given

    @classmethod
    def resolve(
        cls, strategy: str | None, *, default: str, app_id: str, store_name: str
    ) -> KeyPrefix:
        chosen = (strategy if strategy is not None else default).strip()
        lowered = chosen.lower()
        if lowered in ("", "none"):
            return cls("")
        if lowered == "appid":
            return cls(app_id)  # an empty app id means no prefix, as upstream
        if lowered == "name":
            return cls(store_name)
        if SEPARATOR in chosen:
            raise InvalidArgument(f"keyPrefix {chosen!r} must not contain {SEPARATOR!r}")
        return cls(chosen)

    def apply(self, key: str) -> str:
        if not key:
            raise InvalidArgument("field 'key' must not be empty")
        if SEPARATOR in key:
            raise InvalidArgument(
                f"field 'key' {key!r} must not contain {SEPARATOR!r}",
                reason="DAPR_STATE_ILLEGAL_KEY",
            )
        return f"{self.prefix}{SEPARATOR}{key}" if self.prefix else key

    def scrub(self, err: E) -> E:
        """The error with stored keys in its message turned back into the caller's keys."""
        if self.prefix:
            err.message = err.message.replace(self.prefix + SEPARATOR, "")
            err.args = (err.message,)
        return err

    def strip(self, stored_key: str) -> str:
        if self.prefix and stored_key.startswith(self.prefix + SEPARATOR):
            return stored_key[len(self.prefix) + len(SEPARATOR) :]
        return stored_key
