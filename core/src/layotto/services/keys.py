"""Key-prefix strategies (layotto-semantics.md 2.3, dapr-compat.md 3.1).

State keys are `<prefix>||<key>` (`KeyPrefix`). Lock and sequencer keys also name their building
block, so one backend can serve several blocks without collisions (`BlockKeys`). The two APIs
write them differently, and each keeps its upstream's scheme so a store shared with a Go sidecar
reads the same keys: Layotto `lock|||<prefix>||<id>` (`lock|||<id>` without a prefix), Dapr
`lock||<prefix>||<id>` (`lock||<id>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

from layotto.errors import InvalidArgument, LayottoError

SEPARATOR = "||"
BLOCK_SEPARATOR = "|||"

# Whose block-key layout to write: the separator after the block name differs.
KeyScheme = Literal["layotto", "dapr"]
BLOCK_SEPARATORS: dict[KeyScheme, str] = {"layotto": BLOCK_SEPARATOR, "dapr": SEPARATOR}

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

    def apply(self, key: str, *, field: str = "key", reason: str = "DAPR_STATE_ILLEGAL_KEY") -> str:
        if not key:
            raise InvalidArgument(f"field {field!r} must not be empty")
        if SEPARATOR in key:
            # A separator inside the key would let one namespace reach into another.
            raise InvalidArgument(
                f"field {field!r} {key!r} must not contain {SEPARATOR!r}", reason=reason
            )
        return f"{self.prefix}{SEPARATOR}{key}" if self.prefix else key

    @property
    def head(self) -> str:
        """What every stored key of this namespace starts with: `<prefix>||`, or ""."""
        return f"{self.prefix}{SEPARATOR}" if self.prefix else ""

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


@dataclass(frozen=True, slots=True)
class BlockKeys:
    """Lock and sequencer keys: `<block><sep><prefix>||<key>`, or `<block><sep><key>` when the
    strategy gives no prefix (`none`, or `appid` with an empty app id). `<sep>` is `|||` in
    Layotto's scheme and `||` in Dapr's."""

    block: str  # "lock" or "sequencer"
    prefix: KeyPrefix
    separator: str = BLOCK_SEPARATOR

    @classmethod
    def resolve(
        cls,
        block: str,
        strategy: str | None,
        *,
        default: str,
        app_id: str,
        store_name: str,
        scheme: KeyScheme = "layotto",
    ) -> BlockKeys:
        prefix = KeyPrefix.resolve(strategy, default=default, app_id=app_id, store_name=store_name)
        return cls(block, prefix, BLOCK_SEPARATORS[scheme])

    @property
    def _head(self) -> str:
        return f"{self.block}{self.separator}"

    def apply(self, key: str, *, field: str = "key") -> str:
        return self._head + self.prefix.apply(key, field=field, reason="ERR_ILLEGAL_KEY")

    def scrub(self, err: E) -> E:
        """The error with stored keys in its message turned back into the caller's keys."""
        full = self._head + (self.prefix.prefix + SEPARATOR if self.prefix.prefix else "")
        err.message = err.message.replace(full, "")
        err.args = (err.message,)
        return err
