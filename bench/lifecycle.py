"""The ``with`` protocol of the processes the benchmark starts (backends, sidecar, load)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Managed:
    """``with x:`` runs ``start()`` (then ``stop()`` if that fails) and ``stop()`` at the end,
    then ``check_stopped()`` if the block raised nothing."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> object:  # what it returns (the sidecar's exit code) is not used here
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is None:
            self.check_stopped()

    def check_stopped(self) -> None:
        """After ``stop()`` at the end of a ``with`` block that raised nothing: raise if the
        process did not end as it should."""
