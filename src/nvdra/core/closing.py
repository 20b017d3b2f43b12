"""A ``with`` block for objects that hold something until closed: sockets, channels, servers, threads."""

from __future__ import annotations

__all__ = ["Closing"]

import abc
from types import TracebackType
from typing import Self


class Closing(abc.ABC):
    """Mixin: ``with obj:`` gives ``obj`` and calls :meth:`close` when the block ends, raised or not."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
