"""The two interfaces a message broker must offer to carry a stream.

A :class:`Publisher` sends small byte messages to named topics; a
:class:`Subscriber` is an iterator of the byte messages of the topic(s) it
subscribed to. Objects never travel through the broker, only events naming
their keys, so any broker able to move a few hundred bytes will do. Shims for
concrete brokers live in :mod:`warpstore.stream.shims`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from typing_extensions import Self

__all__ = ["Filter", "Publisher", "Subscriber"]

Filter = Callable[[dict[str, Any]], bool]
"""Takes an event's metadata; ``True`` keeps the event."""


@runtime_checkable
class Publisher(Protocol):
    """Publisher side of a message broker."""

    def close(self) -> None:
        """Release the broker connection."""

    def send(self, topic: str, message: bytes) -> None:
        """Publish ``message`` on ``topic``."""


@runtime_checkable
class Subscriber(Protocol):
    """Subscriber side: an iterator of messages that blocks until one arrives."""

    def __iter__(self) -> Self: ...

    def __next__(self) -> bytes: ...

    def close(self) -> None:
        """Release the broker connection."""
