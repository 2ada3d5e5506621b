"""Client side of the Margo transport: one RPC per request, RDMA pulls for big data.

A process keeps one client-mode Margo engine per Mercury protocol (``ofi+tcp``,
``cxi``...), created on first use. A PUT of more than ``EAGER_MAX`` bytes sends
the descriptor of the caller's buffer (exposed read-only) and the server pulls
it; a large GET returns the server's descriptor and the data is pulled straight
into a fresh buffer of the object's size. Replies are checked as in the other
transports (tag, request id, op, key) before anything in them is used.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from warpstore.exceptions import (
    ConnectorConnectionError,
    ConnectorError,
)
from warpstore.server.clients import RequestClient
from warpstore.server.margo_adapter import make_engine
from warpstore.server.margo_server import RPC_NAME, parse_margo_address
from warpstore.server.protocol import (
    EAGER_MAX,
    HEADER_SIZE,
    ProtocolError,
    Status,
    pack_header,
    peek_lengths,
)
from warpstore.server.replies import authenticated_reply, check_match, describe, raise_for_status
from warpstore.server.runtime import node_name

__all__ = ["MargoClient"]

Request = tuple[int, bytes, Any]

_engines: dict[str, tuple[Any, threading.Lock]] = {}
_engines_lock = threading.Lock()


def _engine(protocol: str) -> tuple[Any, threading.Lock]:
    with _engines_lock:
        entry = _engines.get(protocol)
        if entry is None:
            entry = _engines[protocol] = (make_engine(protocol, server=False), threading.Lock())
        return entry


class MargoClient(RequestClient):
    """Sends requests to Margo node servers and checks their replies."""

    def __init__(self, token: bytes, timeout: float = 30.0) -> None:
        self.token = token
        self.timeout = timeout
        self._ids = itertools.count(secrets.randbits(48))

    def close(self) -> None:
        """Nothing per client: the process's engines are shared (idempotent)."""


    def pipeline(
        self, address: str, requests: Sequence[Request], timeout: float | None = None
    ) -> list[tuple[Status, Any]]:
        return [self._one(address, *r, timeout=timeout) for r in requests]

    def _one(
        self, address: str, op: int, key: bytes, data: Any, timeout: float | None
    ) -> tuple[Status, Any]:
        timeout = self.timeout if timeout is None else timeout
        mercury = parse_margo_address(address)
        engine, lock = _engine(mercury.split("://", 1)[0])
        rid = next(self._ids)
        view = memoryview(b"" if data is None else data).cast("B")
        header = pack_header(self.token, op, key=key, request_id=rid, data_len=view.nbytes)
        exposed = None
        if view.nbytes > EAGER_MAX:
            exposed = engine.expose(view, writable=False)  # alive until the server pulled
            payload = header + key + exposed.descriptor
        else:
            payload = header + key + view.tobytes()
        what = describe(op, key, address)
        try:
            with lock:
                raw = engine.call(mercury, RPC_NAME, payload, timeout)
        except Exception as e:
            raise ConnectorConnectionError(
                f"no reply from Margo server {address} to {what} within {timeout:g} s "
                f"(from node {node_name()}): {type(e).__name__}: {e}"
            ) from e
        del exposed
        return self._reply(engine, lock, mercury, address, raw, rid, op, key, what)

    def _reply(
        self,
        engine: Any,
        lock: threading.Lock,
        mercury: str,
        address: str,
        raw: bytes,
        rid: int,
        op: int,
        key: bytes,
        what: str,
    ) -> tuple[Status, Any]:
        if len(raw) < HEADER_SIZE:
            raise ConnectorError(f"malformed reply from {address} ({len(raw)} bytes)")
        header = raw[:HEADER_SIZE]
        try:
            key_len, data_len = peek_lengths(header)
        except ProtocolError as e:
            raise ConnectorError(f"malformed reply from {address}: {e}") from e
        reply_key = raw[HEADER_SIZE : HEADER_SIZE + key_len]
        parsed = authenticated_reply(self.token, address, header, reply_key)
        rest = raw[HEADER_SIZE + key_len :]
        status = Status(parsed.status)
        raise_for_status(status, rest or None, what)
        check_match(parsed, rid, op, key, reply_key, what)
        if not data_len:
            return status, None
        if data_len <= EAGER_MAX:
            if len(rest) != data_len:
                raise ConnectorError(f"reply from {address} has a wrong data length")
            return status, memoryview(bytearray(rest))  # private and writable
        buffer = np.empty(data_len, dtype=np.uint8)
        local = engine.expose(buffer, writable=True)
        try:
            with lock:
                engine.pull(mercury, rest, local, data_len)
        except Exception as e:
            raise ConnectorConnectionError(
                f"bulk pull of {data_len} bytes for {what} failed: {e}"
            ) from e
        return status, buffer.data
