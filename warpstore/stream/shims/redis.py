"""Redis brokers: pub/sub (every subscriber sees every event) and lists (each event once).

Pub/sub delivers only to subscribers connected at publish time (Redis keeps
nothing), so a producer that must not lose the first events waits with
:meth:`RedisPublisher.wait_for_subscribers`. The queue mode keeps events in a
Redis list until a consumer pops them: nothing is lost, and several consumers
share the work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from typing_extensions import Self

__all__ = [
    "RedisPublisher",
    "RedisQueuePublisher",
    "RedisQueueSubscriber",
    "RedisSubscriber",
]


def _client(hostname: str, port: int, kwargs: dict[str, Any]) -> Any:
    try:
        import redis
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("Redis streams need redis-py: pip install 'warpstore[redis]'") from e
    return redis.Redis(host=hostname, port=port, **kwargs)


class RedisPublisher:
    """Publishes each message with ``PUBLISH topic message``."""

    def __init__(self, hostname: str, port: int, **kwargs: Any) -> None:
        self._redis = _client(hostname, port, kwargs)

    def send(self, topic: str, message: bytes) -> None:
        self._redis.publish(topic, message)

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        """Block until ``count`` subscribers listen on ``topic`` (``TimeoutError`` after)."""
        deadline = time.monotonic() + timeout
        while True:
            ((_, n),) = self._redis.pubsub_numsub(topic)
            if n >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} of {count} subscribers on Redis topic {topic!r}")
            time.sleep(0.01)

    def close(self) -> None:
        self._redis.close()


class RedisSubscriber:
    """Yields the messages published on ``topic`` (one name or several) from now on.

    Args:
        timeout: seconds to wait for a message before ``TimeoutError``
            (default: wait forever, like the original).
    """

    def __init__(
        self,
        hostname: str,
        port: int,
        topic: str | Sequence[str],
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._redis = _client(hostname, port, kwargs)
        self._topics = [topic] if isinstance(topic, str) else list(topic)
        self._timeout = timeout
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(*self._topics)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            wait = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            message = self._pubsub.get_message(timeout=wait)
            if message is not None and message["type"] in ("message", "pmessage"):
                data: bytes = message["data"]
                return data
            if message is not None and message["type"] == "unsubscribe":
                raise StopIteration
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no message on Redis topics {self._topics} in {self._timeout} s"
                )

    def close(self) -> None:
        self._pubsub.unsubscribe()
        self._pubsub.close()
        self._redis.close()


class RedisQueuePublisher:
    """Appends each message to the Redis list named after its topic (``RPUSH``)."""

    def __init__(self, hostname: str, port: int, **kwargs: Any) -> None:
        self._redis = _client(hostname, port, kwargs)

    def send(self, topic: str, message: bytes) -> None:
        self._redis.rpush(topic, message)

    def close(self) -> None:
        self._redis.close()


class RedisQueueSubscriber:
    """Pops messages from the list of ``topic`` (``BLPOP``): each goes to one subscriber.

    Args:
        timeout: seconds to wait for a message before ``TimeoutError``
            (default: wait forever).
    """

    def __init__(
        self, hostname: str, port: int, topic: str, *, timeout: float | None = None, **kwargs: Any
    ) -> None:
        self._redis = _client(hostname, port, kwargs)
        self._topic = topic
        self._timeout = timeout

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        # BLPOP takes whole seconds in old servers; 0 means forever.
        wait = 0 if self._timeout is None else max(self._timeout, 0.01)
        item = self._redis.blpop([self._topic], timeout=wait)
        if item is None:
            raise TimeoutError(f"no message in Redis list {self._topic!r} in {self._timeout} s")
        data: bytes = item[1]
        return data

    def close(self) -> None:
        self._redis.close()
