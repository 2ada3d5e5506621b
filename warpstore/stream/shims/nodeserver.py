"""The job's node servers as the broker: a stream in ``warpstore launch`` needs nothing else.

A topic is an append-only log held by one node server, written with the
servers' ordinary PUT/GET/EVICT requests (no new server operation): event
``n`` of topic ``t`` is the object ``ws-stream/t/n`` and ``ws-stream/t/head``
holds ``{"next": n, "first": f}``, the next sequence number and the oldest
event still kept. The publisher appends an event and updates the head in one
pipelined round trip and trims events older than ``retain``. Subscribers
poll the next slot (a GET that misses costs one small round trip; the wait
between polls backs off from 0.1 ms to ``max_poll`` while the topic is idle),
so every subscriber sees every event, from the oldest one kept: a consumer
that starts after the producer misses nothing still retained.

Inside a job, every process picks the same server for a topic (a hash of the
topic name over the servers the launch started, from the manifest), so the
producer and its consumers need no address. Outside a job the topic lives on
this node's server (started if there is none), or on the server ``address``.

One publisher at a time per topic: the servers have no atomic append, so two
processes publishing concurrently to one topic would overwrite each other's
slots. Each append reads the previous head in the same round trip, so the
publisher that finds another one's write raises :class:`TopicConflictError`
instead of losing events silently. Consecutive publishers are fine (each
continues after the head).
All requests are authenticated with the job's token like any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from typing_extensions import Self

from warpstore.exceptions import WarpstoreError
from warpstore.server.protocol import MAX_KEY_LEN, Op, Status

__all__ = ["NodeServerPublisher", "NodeServerSubscriber", "TopicConflictError", "topic_server"]

logger = logging.getLogger(__name__)

_PREFIX = "ws-stream/"


def _slot(topic: str, seq: int) -> bytes:
    return f"{_PREFIX}{topic}/{seq}".encode()


def _head(topic: str) -> bytes:
    return f"{_PREFIX}{topic}/head".encode()


def _check_topic(topic: str) -> None:
    if not topic or len(_slot(topic, 10**18)) > MAX_KEY_LEN:
        raise ValueError(f"stream topic must be 1 to {MAX_KEY_LEN - 40} bytes, got {topic!r}")


def _default_connector() -> Any:
    """The job's node-server connector inside a launch; else a ZeroMQ one."""
    from warpstore.connectors._nodeserver import NodeServerConnector

    if os.environ.get("WARPSTORE_MANIFEST"):
        from warpstore import task_store

        connector = task_store().connector
        if isinstance(connector, NodeServerConnector):
            return connector
    from warpstore.connectors.zmq import ZMQConnector

    return ZMQConnector()


def topic_server(topic: str, connector: Any, address: str | None = None) -> str:
    """Address of the server holding ``topic`` (the same answer in every process of a job)."""
    if address is not None:
        return address
    manifest = os.environ.get("WARPSTORE_MANIFEST")
    if manifest:
        from warpstore.hpc.manifest import read_manifest
        from warpstore.server.clients import transport_of

        servers = sorted(
            s["address"]
            for s in read_manifest(manifest).get("servers", [])
            if not s.get("elastic") and transport_of(s["address"]) == connector.transport
        )
        if servers:
            digest = hashlib.sha256(topic.encode()).digest()
            return str(servers[int.from_bytes(digest[:8], "little") % len(servers)])
    info = connector.local_server()
    return str(info["address"])


class TopicConflictError(WarpstoreError):
    """Another publisher appended to the same topic at the same time."""


@dataclass
class _Log:
    address: str
    next: int
    first: int
    sent: int = 0


def _parse_head(connector: Any, status: Any, data: Any) -> dict[str, Any] | None:
    if status != Status.OK:
        return None
    try:
        head = json.loads(bytes(connector._payload(data)))
        return {"next": int(head["next"]), "first": int(head["first"]), "pub": head.get("pub")}
    except (ValueError, KeyError, TypeError):
        return None


def _read_head(connector: Any, address: str, topic: str) -> tuple[int, int] | None:
    status, data = connector._client.request(address, Op.GET, _head(topic))
    head = _parse_head(connector, status, data)
    if head is None:
        if status == Status.OK:
            logger.warning("stream topic %r on %s: malformed head, ignored", topic, address)
        return None
    return head["next"], head["first"]


class NodeServerPublisher:
    """Appends messages to topic logs on node servers.

    Args:
        connector: a node-server connector (ZeroMQ, UCX, Margo) whose client
            and token to use; default: the job's (inside a launch) or a new
            :class:`~warpstore.connectors.zmq.ZMQConnector`.
        address: server holding every topic of this publisher (default: see
            :func:`topic_server`).
        retain: events kept per topic; older ones are evicted as new ones come.
    """

    def __init__(
        self, connector: Any = None, *, address: str | None = None, retain: int = 10000
    ) -> None:
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain}")
        self._own = connector is None
        self.connector = _default_connector() if connector is None else connector
        self._address = address
        self.retain = retain
        self._id = uuid.uuid4().hex
        self._logs: dict[str, _Log] = {}

    def _log(self, topic: str) -> _Log:
        log = self._logs.get(topic)
        if log is None:
            _check_topic(topic)
            address = topic_server(topic, self.connector, self._address)
            head = _read_head(self.connector, address, topic)
            nxt, first = head if head is not None else (0, 0)
            log = self._logs[topic] = _Log(address, nxt, first)
        return log

    def send(self, topic: str, message: bytes) -> None:
        log = self._log(topic)
        seq = log.next
        requests: list[tuple[int, bytes, Any]] = [
            (Op.GET, _head(topic), None),
            (Op.PUT, _slot(topic, seq), message),
        ]
        first = log.first
        while seq + 1 - first > self.retain:
            requests.append((Op.EVICT, _slot(topic, first), None))
            first += 1
        head = json.dumps({"next": seq + 1, "first": first, "pub": self._id}).encode()
        requests.append((Op.PUT, _head(topic), head))
        replies = self.connector._client.pipeline(log.address, requests)
        before = _parse_head(self.connector, *replies[0])
        log.next, log.first = seq + 1, first
        log.sent += 1
        seen_next = 0 if before is None else before["next"]
        if seen_next != seq or (log.sent > 1 and before is not None and before["pub"] != self._id):
            raise TopicConflictError(
                f"stream topic {topic!r} on {log.address} has another publisher: it wrote up to "
                f"event {seen_next - 1} while this one wrote event {seq}, so events may have "
                "been overwritten; use one publisher per topic (or one topic per publisher)"
            )

    def close(self) -> None:
        """Forget the topics (the events stay on the server for late subscribers)."""
        self._logs.clear()
        if self._own:
            self.connector.close()


class NodeServerSubscriber:
    """Yields the messages of ``topic`` from a node server's topic log.

    Args:
        topic: the topic to read.
        connector, address: as for :class:`NodeServerPublisher`.
        from_start: begin at the oldest event still kept (default) rather
            than at the next one to be published.
        timeout: seconds to wait for a message before ``TimeoutError``
            (default: wait forever).
        max_poll: longest wait between two polls of an idle topic, in seconds.
    """

    def __init__(
        self,
        topic: str,
        connector: Any = None,
        *,
        address: str | None = None,
        from_start: bool = True,
        timeout: float | None = None,
        max_poll: float = 0.005,
    ) -> None:
        _check_topic(topic)
        self._own = connector is None
        self.connector = _default_connector() if connector is None else connector
        self.topic = topic
        self.address = topic_server(topic, self.connector, address)
        self._timeout = timeout
        self._max_poll = max_poll
        head = _read_head(self.connector, self.address, topic)
        if head is None:
            self._next = 0
        else:
            self._next = head[1] if from_start else head[0]

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        client = self.connector._client
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        wait = 0.0001
        misses = 0
        while True:
            status, data = client.request(self.address, Op.GET, _slot(self.topic, self._next))
            if status == Status.OK:
                self._next += 1
                return bytes(self.connector._payload(data))
            misses += 1
            if misses % 8 == 0:
                head = _read_head(self.connector, self.address, self.topic)
                if head is not None and head[1] > self._next:
                    logger.warning(
                        "stream topic %r: events %d to %d were trimmed before this subscriber "
                        "read them (publisher retain too small); skipping to %d",
                        self.topic,
                        self._next,
                        head[1] - 1,
                        head[1],
                    )
                    self._next = head[1]
                    continue
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no event {self._next} of topic {self.topic!r} on {self.address} "
                    f"within {self._timeout} s"
                )
            time.sleep(wait)
            wait = min(wait * 2, self._max_poll)

    def close(self) -> None:
        if self._own:
            self.connector.close()
