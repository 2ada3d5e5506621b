"""Brokerless streams inside one process (``queue.Queue``) or one machine (``multiprocessing``)."""

from __future__ import annotations

from typing import Any

from typing_extensions import Self

__all__ = ["QueuePublisher", "QueueSubscriber"]

# Not a valid event (events are JSON objects), so it cannot collide with one.
_CLOSED = b"\x00warpstore-queue-closed"


class QueuePublisher:
    """Puts each message on the queue of its topic.

    Args:
        queues: topic -> queue (``queue.Queue`` or ``multiprocessing.Queue``).
    """

    def __init__(self, queues: dict[str, Any]) -> None:
        self._queues = queues

    def send(self, topic: str, message: bytes) -> None:
        try:
            queue = self._queues[topic]
        except KeyError:
            raise ValueError(
                f"QueuePublisher has no queue for topic {topic!r} (it has {sorted(self._queues)})"
            ) from None
        queue.put(message)

    def close(self) -> None:
        """Tell every subscriber of every topic that nothing more will come."""
        for queue in self._queues.values():
            queue.put(_CLOSED)


class QueueSubscriber:
    """Iterates the messages of one queue; stops when its publisher is closed.

    Args:
        queue: the queue of the topic to read.
        timeout: seconds to wait for a message before ``TimeoutError``
            (default: wait forever, like the original).
    """

    def __init__(self, queue: Any, *, timeout: float | None = None) -> None:
        self._queue = queue
        self._timeout = timeout
        self._closed = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        import queue as _queue

        if self._closed:
            raise StopIteration
        try:
            message: bytes = self._queue.get(timeout=self._timeout)
        except _queue.Empty:
            raise TimeoutError(f"no stream message within {self._timeout} s") from None
        if message == _CLOSED:
            self._closed = True
            raise StopIteration
        return message

    def close(self) -> None:
        self._closed = True
