"""Client side of the Margo transport: one RPC per request, RDMA pulls for big data.

A process keeps one client-mode Margo engine per Mercury protocol (``ofi+tcp``,
``cxi``...), created on first use. A PUT of more than ``EAGER_MAX`` bytes sends
the descriptor of the caller's buffer (exposed read-only) and the server pulls
it; a large GET returns the server's descriptor and the data is pulled straight
into a fresh buffer of the object's size. Replies are checked as in the other
transports (tag, request id, op, key) before anything in them is used.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from warpstore.exceptions import (
    ConnectorConnectionError,
    ConnectorError,
)
from warpstore.server.auth import ClientSession, UnknownSession
from warpstore.server.clients import RequestClient
from warpstore.server.margo_adapter import make_engine
from warpstore.server.margo_server import RPC_NAME, parse_margo_address
from warpstore.server.protocol import (
    EAGER_MAX,
    HEADER_SIZE,
    Kind,
    Op,
    ProtocolError,
    Status,
    parse_header,
)
from warpstore.server.replies import describe, raise_for_status
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
        self._sessions: dict[str, ClientSession] = {}

    def close(self) -> None:
        """Nothing per client: the process's engines are shared (idempotent)."""

    def pipeline(
        self, address: str, requests: Sequence[Request], timeout: float | None = None
    ) -> list[tuple[Status, Any]]:
        return [self._retrying(address, *r, timeout=timeout) for r in requests]

    def _retrying(
        self, address: str, op: int, key: bytes, data: Any, timeout: float | None
    ) -> tuple[Status, Any]:
        try:
            return self._one(address, op, key, data, timeout)
        except UnknownSession:  # the server restarted: open a new session, once
            self._sessions.pop(address, None)
            return self._one(address, op, key, data, timeout)

    def _call(
        self, engine: Any, mercury: str, address: str, payload: bytes, what: str, timeout: float
    ) -> bytes:
        try:
            raw: bytes = engine.call(mercury, RPC_NAME, payload, timeout)
        except Exception as e:
            raise ConnectorConnectionError(
                f"no reply from Margo server {address} to {what} within {timeout:g} s "
                f"(the client's timeout; from node {node_name()}): {type(e).__name__}: {e}"
            ) from e
        return raw

    def _session(
        self, engine: Any, mercury: str, address: str, timeout: float
    ) -> ClientSession:
        """This client's session with ``address`` (called with the engine's lock held)."""
        session = self._sessions.get(address)
        if session is not None and session.open:
            return session
        session = ClientSession(self.token, address)
        raw = self._call(engine, mercury, address, session.hello_request(), "HELLO", timeout)
        header, _, rest = self._split(address, raw)
        session.accept_hello(header, b"", rest)
        self._sessions[address] = session
        return session

    @staticmethod
    def _split(address: str, raw: bytes) -> tuple[bytes, bytes, bytes]:
        if len(raw) < HEADER_SIZE:
            raise ConnectorError(f"malformed reply from {address} ({len(raw)} bytes)")
        try:
            h = parse_header(raw[:HEADER_SIZE])
        except ProtocolError as e:
            raise ConnectorError(f"malformed reply from {address}: {e}") from e
        end = HEADER_SIZE + h.key_len
        return raw[:HEADER_SIZE], raw[HEADER_SIZE:end], raw[end:]

    def _one(
        self, address: str, op: int, key: bytes, data: Any, timeout: float | None
    ) -> tuple[Status, Any]:
        timeout = self.timeout if timeout is None else timeout
        mercury = parse_margo_address(address)
        engine, lock = _engine(mercury.split("://", 1)[0])
        view = memoryview(b"" if data is None else data).cast("B")
        what = describe(op, key, address)
        exposed = None
        with lock:  # numbering and sending under one lock: requests arrive in order
            session = self._session(engine, mercury, address, timeout)
            if op == Op.PUT:
                session.check_put_size(key, view.nbytes)
            if view.nbytes > EAGER_MAX:
                exposed = engine.expose(view, writable=False)  # alive until the server pulled
                counter, header = session.request(op, key, view, staged=True)
                payload = header + key + exposed.descriptor
            else:
                counter, header = session.request(op, key, view)
                payload = header + key + view.tobytes()
            raw = self._call(engine, mercury, address, payload, what, timeout)
        del exposed
        header, reply_key, rest = self._split(address, raw)
        h = parse_header(header)
        body: Any = rest
        if h.kind == Kind.REFUSAL or h.data_len <= EAGER_MAX:
            if len(rest) != h.data_len:
                raise ConnectorError(f"reply from {address} has a wrong data length")
        else:  # a large GET: pull the server's tagged buffer, then check the tag
            if session.max_data and h.data_len > session.max_data:
                raise ConnectorError(f"reply from {address} declares too much data")
            buffer = np.empty(h.data_len, dtype=np.uint8)
            local = engine.expose(buffer, writable=True)
            try:
                with lock:
                    engine.pull(mercury, rest, local, h.data_len)
            except Exception as e:
                raise ConnectorConnectionError(
                    f"bulk pull of {h.data_len} bytes for {what} failed: {e}"
                ) from e
            body = buffer
        parsed = session.check_reply(header, reply_key, body if h.data_len else None)
        status = Status(parsed.status)
        raise_for_status(status, body if h.data_len else None, what)
        if parsed.counter != counter or parsed.op != op or reply_key != key:
            raise ConnectorError(f"reply to {what} does not match its request")
        if not h.data_len:
            return status, None
        if isinstance(body, np.ndarray):
            return status, body.data
        return status, memoryview(bytearray(body))  # private and writable
