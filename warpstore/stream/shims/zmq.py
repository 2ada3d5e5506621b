"""ZeroMQ PUB/SUB: no broker process at all, the producer's socket is the hub.

The publisher binds (an XPUB socket, so it sees subscriptions arrive) and
subscribers connect. PUB/SUB drops what is published before a subscription
has reached the publisher; :meth:`ZeroMQPublisher.wait_for_subscribers` waits
for them, deterministically, instead of the usual sleep.
"""

from __future__ import annotations

import time
from typing import Any

from typing_extensions import Self

__all__ = ["ZeroMQPublisher", "ZeroMQSubscriber"]


def _zmq() -> Any:
    try:
        import zmq
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("ZeroMQ streams need pyzmq: pip install 'warpstore[zmq]'") from e
    return zmq


class ZeroMQPublisher:
    """Binds ``address`` (e.g. ``tcp://127.0.0.1:5555``; port ``*`` picks a free one).

    The bound address is :attr:`address` (with the real port).
    """

    def __init__(self, address: str) -> None:
        zmq = _zmq()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        # report every subscription, not only the first per topic, so subscribers can be counted
        self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.bind(address)
        self.address: str = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._subscriptions: dict[bytes, int] = {}

    def _drain(self, wait_ms: int = 0) -> None:
        zmq = _zmq()
        while self._socket.poll(wait_ms, zmq.POLLIN):
            frame = self._socket.recv()
            if frame and frame[0] in (0, 1):
                topic = bytes(frame[1:])
                delta = 1 if frame[0] == 1 else -1
                self._subscriptions[topic] = max(0, self._subscriptions.get(topic, 0) + delta)
            wait_ms = 0

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        """Block until ``count`` subscribers of ``topic`` are connected (``TimeoutError`` after)."""
        deadline = time.monotonic() + timeout
        key = topic.encode()
        while self._subscriptions.get(key, 0) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no subscriber of topic {topic!r} on {self.address}")
            self._drain(int(min(left, 0.1) * 1000) + 1)

    def send(self, topic: str, message: bytes) -> None:
        self._drain()
        self._socket.send_multipart([topic.encode(), message], copy=len(message) < 65536)

    def close(self) -> None:
        self._socket.close()
        self._context.term()


class ZeroMQSubscriber:
    """Connects to a :class:`ZeroMQPublisher` at ``address`` and yields ``topic``'s messages.

    Args:
        timeout: seconds to wait for a message before ``TimeoutError``
            (default: wait forever, like the original).
    """

    def __init__(self, address: str, topic: str, *, timeout: float | None = None) -> None:
        zmq = _zmq()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(address)
        self._topic = topic.encode()
        self._socket.setsockopt(zmq.SUBSCRIBE, self._topic)
        self._timeout = timeout
        self.address = address

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        zmq = _zmq()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(wait, zmq.POLLIN):
                raise TimeoutError(f"no message on topic {self._topic!r} in {self._timeout} s")
            frames = self._socket.recv_multipart(copy=False)
            # SUBSCRIBE matches prefixes: "a" would also get "ab"'s messages
            if len(frames) == 2 and frames[0].bytes == self._topic:
                return frames[1].bytes  # type: ignore[no-any-return]

    def close(self) -> None:
        self._socket.close()
        self._context.term()
