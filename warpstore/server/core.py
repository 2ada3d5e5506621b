"""The transport-independent heart of a node's storage server.

An in-memory object table with a byte limit, per-key metadata and counters.
Transports (ZeroMQ here; UCX and Margo plug into the same core) parse and
authenticate messages, then call :meth:`ServerCore.handle`; the core never
sees a socket, and a transport never touches the table directly.

Stored values are whatever buffer object the transport received (a ZeroMQ
frame, a UCX receive buffer): the core keeps that buffer as it is, so a large
object is held once, never copied into a second Python object.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from warpstore.server.protocol import Op, Status
from warpstore.units import format_size

logger = logging.getLogger("warpstore.server")

__all__ = ["Entry", "ObjectTable", "RateLimitedLog", "Reply", "ServerCore"]


@dataclass
class Entry:
    """One stored object and what is known about it."""

    data: Any
    nbytes: int
    created: float
    reads: int = 0
    tag: tuple[bytes, bytes] | None = None  # the producer's data tag, sent with every GET


@dataclass
class Reply:
    """What the core answers; the transport signs and sends it."""

    status: Status
    data: Any = b""
    message: str = ""
    tag: tuple[bytes, bytes] | None = None  # a stored object's data tag (GET)


class ObjectTable:
    """Key -> buffer, never holding more than ``memory_limit`` bytes of values."""

    def __init__(self, memory_limit: int | None = None) -> None:
        self.memory_limit = memory_limit
        self.entries: dict[bytes, Entry] = {}
        self.nbytes = 0
        self.reserved = 0  # room promised to two-step PUTs whose data is on its way

    def can_hold(self, key: bytes, nbytes: int) -> bool:
        if self.memory_limit is None:
            return True
        old = self.entries.get(key)
        used = self.nbytes + self.reserved - (old.nbytes if old else 0)
        return used + nbytes <= self.memory_limit

    def put(
        self, key: bytes, data: Any, nbytes: int, tag: tuple[bytes, bytes] | None = None
    ) -> None:
        old = self.entries.get(key)
        if old is not None:
            self.nbytes -= old.nbytes
        self.entries[key] = Entry(data, nbytes, time.time(), tag=tag)
        self.nbytes += nbytes

    def get(self, key: bytes) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            entry.reads += 1
        return entry

    def evict(self, key: bytes) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        self.nbytes -= entry.nbytes
        return True


@dataclass
class ServerCore:
    """Object table + counters + the meaning of each operation."""

    address: str
    node: str
    memory_limit: int | None = None
    transport: str = "zmq"
    table: ObjectTable = field(init=False)
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.time)
    stopping: bool = False

    def __post_init__(self) -> None:
        self.table = ObjectTable(self.memory_limit)

    def describe(self) -> str:
        return f"{self.transport} server {self.address} on node {self.node}"

    def handle(
        self, op: int, key: bytes, data: Any, nbytes: int, tag: tuple[bytes, bytes] | None = None
    ) -> Reply:
        """Carry out one authenticated, well-formed request (``tag``: a PUT's data tag)."""
        try:
            name = Op(op).name
        except ValueError:
            self.errors["unknown_op"] += 1
            return Reply(Status.BAD_REQUEST, message=f"unknown operation {op}")
        self.requests[name] += 1
        if op == Op.PUT:
            return self._put(key, data, nbytes, tag)
        if op == Op.GET:
            entry = self.table.get(key)
            if entry is None:
                return Reply(Status.NOT_FOUND)
            self.bytes_out += entry.nbytes
            return Reply(Status.OK, entry.data, tag=entry.tag)
        if op == Op.EXISTS:
            return Reply(Status.OK if key in self.table.entries else Status.NOT_FOUND)
        if op == Op.EVICT:
            self.table.evict(key)
            return Reply(Status.OK)
        if op == Op.STATUS:
            return Reply(Status.OK, json.dumps(self.status()).encode())
        if op == Op.SHUTDOWN:
            self.stopping = True
            return Reply(Status.OK)
        raise AssertionError(f"unhandled op {name}")  # pragma: no cover

    def _put(
        self, key: bytes, data: Any, nbytes: int, tag: tuple[bytes, bytes] | None = None
    ) -> Reply:
        if not key:
            self.errors["bad_request"] += 1
            return Reply(Status.BAD_REQUEST, message="PUT needs a key")
        if not self.table.can_hold(key, nbytes):
            self.errors["store_full"] += 1
            limit = self.table.memory_limit or 0
            return Reply(
                Status.STORE_FULL,
                message=(
                    f"{self.describe()} is full: it holds {self.table.nbytes} bytes "
                    f"({format_size(self.table.nbytes)}) of its {limit}-byte "
                    f"({format_size(limit)}) limit and cannot take {nbytes} more "
                    f"({format_size(nbytes)}) for key {key.decode(errors='replace')}"
                ),
            )
        self.table.put(key, data, nbytes, tag)
        self.bytes_in += nbytes
        return Reply(Status.OK)

    def status(self) -> dict[str, Any]:
        """What ``warpstore server status`` prints and the job report collects."""
        return {
            "address": self.address,
            "node": self.node,
            "pid": os.getpid(),
            "transport": self.transport,
            "objects": len(self.table.entries),
            "bytes": self.table.nbytes,
            "memory_limit": self.table.memory_limit,
            "requests": dict(self.requests),
            "requests_total": sum(self.requests.values()),
            "errors": dict(self.errors),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "uptime_s": round(time.time() - self.started, 3),
        }


class RateLimitedLog:
    """Log a flood of bad messages as a few lines with counts, not one line each."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last = 0.0
        self.suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            extra = f" ({self.suppressed} similar messages suppressed)" if self.suppressed else ""
            logger.warning(msg + extra, *args)
            self.last = now
            self.suppressed = 0
        else:
            self.suppressed += 1
