"""One ``with``-statement behaviour for everything that has a ``close()``.

Stores, connectors, lifetimes and stream producers/consumers are all used as
``with X(...) as x:`` by users of the original; each closes itself on the way
out, whatever happened inside. One base class keeps that contract in one place.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from typing_extensions import Self

__all__ = ["Closing"]


class Closing:
    """``__enter__`` returns the object; ``__exit__`` calls its ``close()``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Subclasses define close() with their own optional arguments.
        closer: Any = self
        closer.close()
