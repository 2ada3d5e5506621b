"""The Margo (Mochi) transport of the node server: one RPC, data by RDMA pull.

Every request is one Margo RPC whose input is warpstore's signed protocol
(header, key, then either the data itself, for at most ``EAGER_MAX`` bytes, or
the client's serialized bulk descriptor); the response has the same layout.
Large PUTs: after the header authenticates and the memory limit allows it, the
server allocates the object's buffer, registers it for RDMA once, and pulls
the data from the client's bulk. Large GETs: the response carries that same
registered buffer's descriptor and the client pulls; the registration is
reused for every GET of the object and released when it is evicted (after a
grace period, in case a client is still pulling).

The RPC's input never reaches pickle: it is parsed and its tag checked here.
All pymargo calls are in :mod:`warpstore.server.margo_adapter`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from warpstore.server.auth import Refused, ServerAuth, ServerSession
from warpstore.server.core import RateLimitedLog, Reply, ServerCore
from warpstore.server.margo_adapter import Exposed, make_engine
from warpstore.server.protocol import (
    EAGER_MAX,
    HEADER_SIZE,
    Flags,
    Header,
    Op,
    ProtocolError,
    Status,
    parse_header,
)

__all__ = [
    "MAX_DESCRIPTOR",
    "RPC_NAME",
    "MargoServer",
    "engine_spec",
    "format_margo_address",
    "parse_margo_address",
]

logger = logging.getLogger("warpstore.server")

RPC_NAME = "warpstore_v1"
MAX_DESCRIPTOR = 4096  # a serialized bulk handle is a few hundred bytes
RETIRE_GRACE_S = 30.0
_IP_PROTOCOLS = ("tcp", "ofi+tcp", "ofi+verbs", "ofi+tcp;ofi_rxm", "ucx+tcp", "ucx+all", "sockets")


def format_margo_address(mercury_address: str) -> str:
    return f"margo:{mercury_address}"


def parse_margo_address(address: str) -> str:
    if not address.startswith("margo:"):
        raise ValueError(f"not a Margo server address: {address!r} (expected margo:<mercury>)")
    return address[len("margo:") :]


def engine_spec(protocol: str, ip: str | None, port: int | None) -> str:
    """Mercury's address spec: IP-based protocols bind the node's address (and port)."""
    if ip and protocol in _IP_PROTOCOLS:
        return f"{protocol}://{ip}" + (f":{port}" if port else "")
    return protocol  # cxi, na+sm, ...: the provider picks the NIC


class MargoServer:
    """Registers the warpstore RPC with a Margo engine and answers it with a ServerCore."""

    def __init__(
        self,
        token: bytes,
        ip: str,
        port: int | None,
        node: str,
        memory_limit: int | None = None,
        protocol: str = "tcp",
    ) -> None:
        self.auth = ServerAuth(token, memory_limit)
        self.protocol = protocol
        try:
            self.engine = make_engine(engine_spec(protocol, ip, port), server=True)
        except Exception as e:
            raise OSError(
                f"cannot start a Margo engine ({protocol}, {ip}:{port or '*'}) on node {node}: {e}"
            ) from e
        self.address = format_margo_address(self.engine.address)
        self.core = ServerCore(self.address, node, memory_limit, transport="margo")
        self.registrations = 0  # bulk registrations made by this server
        self._lock = threading.Lock()
        self._exposed: dict[bytes, Exposed] = {}
        self._retired: deque[tuple[float, Exposed]] = deque()
        self._bad = RateLimitedLog()
        self._stop = False
        self.engine.serve(RPC_NAME, self._on_request)

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        with self._lock:
            self._exposed.clear()
            self._retired.clear()
        self.engine.finalize()

    def serve(self, poll_s: float = 0.05) -> None:
        while not self._stop and not self.core.stopping:
            self.engine.sleep(poll_s)
            self._release_retired()
        self.engine.sleep(poll_s)  # let the SHUTDOWN reply (and any other in flight) go out

    def _release_retired(self) -> None:
        now = time.monotonic()
        with self._lock:
            while self._retired and now - self._retired[0][0] > RETIRE_GRACE_S:
                self._retired.popleft()

    def _retire(self, key: bytes) -> None:
        old = self._exposed.pop(key, None)
        if old is not None:
            self._retired.append((time.monotonic(), old))

    # -- one RPC ---------------------------------------------------------------

    def _on_request(self, raw: bytes, origin: Any, respond: Any) -> None:
        try:
            reply = self._handle(raw, origin)
        except Refused as r:
            reply = self._refuse(r.status, r.message)
        except Exception as e:  # a bug must not take the node's data down with it
            logger.exception("%s: error handling a request", self.core.describe())
            reply = self._refuse(Status.ERROR, f"server error: {e}")
        respond(reply)

    def _pack(
        self,
        session: ServerSession,
        h: Header,
        key: bytes,
        reply: Reply,
        payload: bytes | None = None,
    ) -> bytes:
        """Header + key + data (or, for a large GET, the descriptor of the tagged data)."""
        body: Any = reply.data if reply.status == Status.OK else reply.message.encode()
        if body is not None and memoryview(body).nbytes == 0:
            body = None
        tag = reply.tag if reply.status == Status.OK else None
        header = self.auth.reply(session, h, key, reply.status, body, data_tag=tag)
        if payload is not None:
            return header + key + payload
        return header + key + (b"" if body is None else bytes(body))

    def _refuse(self, status: Status, message: str) -> bytes:
        self.core.errors[status.name.lower()] += 1
        self._bad.warning("%s: refused a request: %s", self.core.describe(), message)
        header, data = self.auth.refusal(status, message)
        return header + data

    def _handle(self, raw: bytes, origin: Any) -> bytes:
        if len(raw) < HEADER_SIZE:
            raise Refused(Status.BAD_REQUEST, f"request of {len(raw)} bytes has no header")
        header = raw[:HEADER_SIZE]
        try:
            parsed = parse_header(header)
        except ProtocolError as e:
            raise Refused(Status.BAD_REQUEST, str(e)) from None
        key = raw[HEADER_SIZE : HEADER_SIZE + parsed.key_len]
        if len(key) != parsed.key_len:
            raise Refused(Status.BAD_REQUEST, "request shorter than its declared key")
        rest = raw[HEADER_SIZE + parsed.key_len :]
        staged = bool(parsed.flags & Flags.STAGED)
        if not staged and parsed.data_len > EAGER_MAX:
            raise Refused(Status.BAD_REQUEST, f"data of {parsed.data_len} bytes must be staged")
        h, session = self.auth.check(header, key, None if staged or not rest else rest)
        if session is None:  # an authentic HELLO: open a session
            reply_header, reply_data = self.auth.hello_reply(h)
            return reply_header + reply_data
        op = h.op
        if op == Op.PUT:
            return self._put(session, h, key, rest, origin)
        if rest or h.data_len:
            reply = Reply(Status.BAD_REQUEST, message=f"operation {op} takes no data")
            return self._pack(session, h, key, reply)
        with self._lock:
            reply = self.core.handle(op, key, None, 0)
            if op == Op.EVICT:
                self._retire(key)
            if op != Op.GET or reply.status != Status.OK:
                return self._pack(session, h, key, reply)
            size = memoryview(reply.data).nbytes
            if size <= EAGER_MAX:
                return self._pack(session, h, key, reply)
            exposed = self._exposed.get(key)
            if exposed is None:  # stored by an older path: register now, once
                exposed = self._exposed[key] = self.engine.expose(reply.data, writable=True)
                self.registrations += 1
        return self._pack(session, h, key, reply, payload=exposed.descriptor)

    def _put(
        self, session: ServerSession, h: Header, key: bytes, rest: bytes, origin: Any
    ) -> bytes:
        op = Op.PUT
        if not h.flags & Flags.STAGED:  # eager: the data came with the request
            with self._lock:
                reply = self.core.handle(op, key, rest, h.data_len, h.data_tag_pair)
                if reply.status == Status.OK:
                    self._retire(key)
            return self._pack(session, h, key, reply)
        # staged: the client's bulk descriptor; the data's tag is in the header
        descriptor = rest
        if not descriptor or len(descriptor) > MAX_DESCRIPTOR:
            raise Refused(Status.BAD_REQUEST, "large PUT without a valid bulk descriptor")
        table = self.core.table
        with self._lock:
            if not key or not table.can_hold(key, h.data_len):
                return self._pack(session, h, key, self.core.handle(op, key, b"", h.data_len))
            table.reserved += h.data_len
        try:
            try:
                buffer = np.empty(h.data_len, dtype=np.uint8)
            except MemoryError:
                reply = Reply(Status.ERROR, message=f"cannot allocate {h.data_len} bytes")
                return self._pack(session, h, key, reply)
            exposed = self.engine.expose(buffer, writable=True)  # once: reused by every GET
            self.registrations += 1
            try:
                self.engine.pull(origin, descriptor, exposed, h.data_len)
            except Exception as e:
                raise Refused(Status.BAD_REQUEST, f"bulk pull from the client failed: {e}") from e
        finally:
            with self._lock:
                table.reserved -= h.data_len
        with self._lock:
            reply = self.core.handle(op, key, buffer, h.data_len, h.data_tag_pair)
            if reply.status == Status.OK:
                self._retire(key)
                self._exposed[key] = exposed
        return self._pack(session, h, key, reply)
