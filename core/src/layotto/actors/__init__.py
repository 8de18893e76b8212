"""Long-running parts of the sidecar, each started and supervised under one task group."""

from layotto.actors.base import Actor

__all__ = ["Actor"]
