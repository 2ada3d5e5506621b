"""Client side of the ZeroMQ transport: persistent, authenticated request/reply.

Each thread of a process keeps one DEALER socket per server address (ZeroMQ
sockets are not thread-safe), reused for every request. A reply is accepted
only if its tag verifies with the job token and its request id, op and key
match the request; anything else (a late reply to a request that timed out,
say) is discarded.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from warpstore.exceptions import (
    AuthenticationError,
    ConnectorConnectionError,
    ConnectorError,
    StoreFullError,
)
from warpstore.server.clients import RequestClient
from warpstore.server.protocol import (
    HEADER_SIZE,
    Op,
    ProtocolError,
    Status,
    pack_header,
    unpack_header,
)
from warpstore.server.runtime import node_name

__all__ = ["ZMQClient"]

_ZERO_COPY_MIN = 64 * 1024

Request = tuple[int, bytes, Any]  # op, key, data or None


class ZMQClient(RequestClient):
    """Sends requests to node servers and checks their replies."""

    def __init__(self, token: bytes, timeout: float = 30.0) -> None:
        self.token = token
        self.timeout = timeout
        self._ids = itertools.count(secrets.randbits(48))
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._context: Any = None

    def _ctx(self) -> Any:
        if self._context is None or self._pid != os.getpid():
            # After fork, the parent's context must not be used: make our own.
            with self._lock:
                if self._context is None or self._pid != os.getpid():
                    self._context = zmq.Context()
                    self._pid = os.getpid()
                    self._all = []
                    self._local = threading.local()
        return self._context

    def _socket(self, address: str) -> Any:
        ctx = self._ctx()
        sockets: dict[str, Any] | None = getattr(self._local, "sockets", None)
        if sockets is None:
            sockets = self._local.sockets = {}
        sock = sockets.get(address)
        if sock is None:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if address.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            sock.connect(address)
            sockets[address] = sock
            with self._lock:
                self._all.append(sock)
        return sock

    def _drop(self, address: str) -> None:
        sockets = getattr(self._local, "sockets", {})
        sock = sockets.pop(address, None)
        if sock is not None:
            sock.close(linger=0)

    def close(self) -> None:
        """Close every socket this client opened, in any thread (idempotent)."""
        with self._lock:
            socks, self._all = self._all, []
            for sock in socks:
                sock.close(linger=0)
            self._local = threading.local()
            if self._context is not None and self._pid == os.getpid():
                self._context.term()
            self._context = None


    def pipeline(
        self, address: str, requests: Sequence[Request], timeout: float | None = None
    ) -> list[tuple[Status, Any]]:
        """Send all ``requests`` to one server, then collect all replies (one round trip)."""
        sock = self._socket(address)
        timeout = self.timeout if timeout is None else timeout
        pending: dict[int, tuple[int, bytes]] = {}
        order: list[int] = []
        try:
            for op, key, data in requests:
                rid = next(self._ids)
                nbytes = 0 if data is None else memoryview(data).nbytes
                header = pack_header(self.token, op, key=key, request_id=rid, data_len=nbytes)
                frames: list[Any] = [header, key]
                if nbytes:
                    frames.append(data)
                sock.send_multipart(frames, copy=nbytes < _ZERO_COPY_MIN)
                pending[rid] = (op, key)
                order.append(rid)
            results: dict[int, tuple[Status, Any]] = {}
            deadline = time.monotonic() + timeout
            while pending:
                try:
                    frames = self._receive(sock, deadline)
                except zmq.Again:
                    op, key = next(iter(pending.values()))
                    raise ConnectorConnectionError(
                        f"no reply from server {address} within {timeout:g} s to "
                        f"{Op(op).name} of key {key.decode(errors='replace')!r} "
                        f"(from node {node_name()}): is the server running and reachable?"
                    ) from None
                answered, result = self._check_reply(address, frames, pending)
                if answered is not None:
                    results[answered] = result
                    del pending[answered]
        except (ConnectorConnectionError, AuthenticationError):
            self._drop(address)  # late replies must not reach the next request
            raise
        except zmq.ZMQError as e:
            self._drop(address)
            raise ConnectorConnectionError(f"ZeroMQ error talking to {address}: {e}") from e
        return [results[rid] for rid in order]

    @staticmethod
    def _receive(sock: Any, deadline: float) -> list[Any]:
        # The deadline covers the whole pipeline, including stale replies to
        # earlier, abandoned requests that are read and dropped on the way.
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
            raise zmq.Again()
        return list(sock.recv_multipart(copy=False))

    def _check_reply(
        self, address: str, frames: list[Any], pending: dict[int, tuple[int, bytes]]
    ) -> tuple[int | None, Any]:
        if len(frames) not in (2, 3) or len(frames[0]) != HEADER_SIZE:
            raise ConnectorError(f"malformed reply from {address} ({len(frames)} frames)")
        key = frames[1].bytes
        try:
            header, authentic = unpack_header(self.token, frames[0].buffer, key)
        except ProtocolError as e:
            raise ConnectorError(f"malformed reply from {address}: {e}") from e
        if not authentic:
            if header.status == Status.AUTH_FAILED:
                raise AuthenticationError(
                    f"server {address} refused our token: the client and the server use "
                    f"different job tokens (check WARPSTORE_TOKEN_FILE on node {node_name()})"
                )
            raise AuthenticationError(
                f"reply from {address} failed authentication; it was discarded unread"
            )
        expected = pending.get(header.request_id)
        if expected is None:
            return None, None  # a late reply to an earlier, abandoned request
        op, req_key = expected
        if header.op != op or key != req_key:
            raise ConnectorError(f"reply from {address} does not match its request")
        data = frames[2] if len(frames) == 3 else None
        if (0 if data is None else len(data)) != header.data_len:
            raise ConnectorError(f"reply from {address} has a wrong data length")
        status = Status(header.status)
        if status in (Status.OK, Status.NOT_FOUND):
            return header.request_id, (status, data)
        message = data.bytes.decode(errors="replace") if data is not None else status.name
        what = f"{Op(op).name} of key {req_key.decode(errors='replace')!r} at {address}"
        if status == Status.STORE_FULL:
            raise StoreFullError(message)
        if status == Status.AUTH_FAILED:  # pragma: no cover - authentic AUTH_FAILED is odd
            raise AuthenticationError(f"{what}: {message}")
        raise ConnectorError(f"{what} failed: {message}")
