"""Errors of the stream interface (subclasses of :class:`warpstore.exceptions.WarpstoreError`)."""

from __future__ import annotations

from warpstore.exceptions import WarpstoreError

__all__ = ["EventDecodeError", "EventEncodeError", "TopicClosedError"]


class TopicClosedError(WarpstoreError):
    """``send()`` to a topic that this producer already closed with ``close_topics()``."""


class EventEncodeError(WarpstoreError):
    """An event cannot be written as a message (e.g. an object with no store is not JSON)."""


class EventDecodeError(WarpstoreError):
    """A message from the broker is not a well-formed, acceptable event."""
