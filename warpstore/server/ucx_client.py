"""Client side of the UCX transport: authenticated request/reply over ucxx endpoints.

ucxx's API is asyncio; task code is not. Each process runs one event loop in
a daemon thread and keeps one endpoint per server, reused for every request;
a lock per endpoint keeps requests of several threads from interleaving their
frames. Replies are checked exactly as the ZeroMQ client checks them (tag,
request id, op, key). A GET's data is received straight into a fresh buffer
of the size the (authenticated) header gives, which the caller then owns.

A timeout or an error on an endpoint drops it, so a late reply can never be
read as the answer to the next request; the next request reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from warpstore.exceptions import (
    AuthenticationError,
    ConnectorConnectionError,
    ConnectorError,
)
from warpstore.server.auth import ClientSession, UnknownSession
from warpstore.server.clients import RequestClient
from warpstore.server.protocol import (
    EAGER_MAX,
    HEADER_SIZE,
    Op,
    ProtocolError,
    Status,
    parse_header,
)
from warpstore.server.replies import describe, raise_for_status
from warpstore.server.runtime import node_name
from warpstore.server.ucx_env import import_ucxx
from warpstore.server.ucx_server import FIRST_MESSAGE_MAX, TRAILER, parse_ucx_address

__all__ = ["UCXClient"]

Request = tuple[int, bytes, Any]


class _Loop:
    """One asyncio loop per process, in a daemon thread, for every UCXClient."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid = 0

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid():
                import_ucxx()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="warpstore-ucx", daemon=True
                )
                thread.start()
                cls._loop, cls._pid = loop, os.getpid()
            return cls._loop


class _Endpoint:
    def __init__(self, ep: Any, session: ClientSession) -> None:
        self.ep = ep
        self.session = session
        self.lock = asyncio.Lock()


class UCXClient(RequestClient):
    """Sends requests to UCX node servers and checks their replies."""

    def __init__(self, token: bytes, timeout: float = 30.0) -> None:
        self.token = token
        self.timeout = timeout
        self._endpoints: dict[str, _Endpoint] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._closed = False

    # -- sync API (same as ZMQClient) -------------------------------------------------


    def pipeline(
        self, address: str, requests: Sequence[Request], timeout: float | None = None
    ) -> list[tuple[Status, Any]]:
        """Run ``requests`` on one server in order, on one endpoint, in one loop hop."""
        timeout = self.timeout if timeout is None else timeout
        loop = _Loop.get()
        future = asyncio.run_coroutine_threadsafe(self._pipeline(address, requests), loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            self._drop_soon(address)
            op, key, _ = requests[0]
            raise ConnectorConnectionError(
                f"no reply from server {address} within {timeout:g} s (the client's timeout) to "
                f"{Op(op).name} of key {key.decode(errors='replace')!r} "
                f"(from node {node_name()}): is the server running and reachable?"
            ) from None

    def close(self) -> None:
        """Close every endpoint (idempotent)."""
        if self._closed or not self._endpoints:
            self._closed = True
            return
        self._closed = True
        loop = _Loop.get()
        for address in list(self._endpoints):
            self._drop_soon(address)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)

    # -- inside the loop ----------------------------------------------------------------

    def _drop_soon(self, address: str) -> None:
        loop = _Loop.get()

        def drop() -> None:
            entry = self._endpoints.pop(address, None)
            if entry is not None:
                with contextlib.suppress(Exception):
                    entry.ep.abort()

        loop.call_soon_threadsafe(drop)

    async def _endpoint(self, address: str) -> _Endpoint:
        entry = self._endpoints.get(address)
        if entry is not None and entry.session.open:
            return entry
        lock = self._connecting.setdefault(address, asyncio.Lock())
        async with lock:
            entry = self._endpoints.get(address)
            if entry is None or not entry.session.open:
                host, port = parse_ucx_address(address)
                ucxx = import_ucxx()
                try:
                    ep = await ucxx.create_endpoint(host, port)
                except Exception as e:
                    raise ConnectorConnectionError(
                        f"cannot connect to UCX server {address} from node {node_name()}: "
                        f"{type(e).__name__}: {e}"
                    ) from e
                entry = _Endpoint(ep, ClientSession(self.token, address))
                try:
                    await ep.send(bytearray(entry.session.hello_request() + TRAILER))
                    h, reply_key, body = await self._receive(ep, address, entry.session)
                    entry.session.accept_hello(bytes(h), reply_key, body)
                except BaseException:
                    with contextlib.suppress(Exception):
                        ep.abort()
                    raise
                self._endpoints[address] = entry
            return entry

    async def _pipeline(
        self, address: str, requests: Sequence[Request]
    ) -> list[tuple[Status, Any]]:
        for attempt in (1, 2):
            entry = await self._endpoint(address)
            async with entry.lock:
                try:
                    return [await self._one(entry, address, *r) for r in requests]
                except UnknownSession:
                    self._drop(address, entry)
                    if attempt == 2:
                        raise
                except (ConnectorError, AuthenticationError):
                    self._drop(address, entry)
                    raise
                except asyncio.CancelledError:
                    self._drop(address, entry)
                    raise
                except Exception as e:
                    self._drop(address, entry)
                    raise ConnectorConnectionError(
                        f"UCX error talking to server {address} from node {node_name()}: "
                        f"{type(e).__name__}: {e}"
                    ) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self, address: str, entry: _Endpoint) -> None:
        if self._endpoints.get(address) is entry:
            del self._endpoints[address]
        with contextlib.suppress(Exception):
            entry.ep.abort()

    async def _one(
        self, entry: _Endpoint, address: str, op: int, key: bytes, data: Any
    ) -> tuple[Status, Any]:
        ep, session = entry.ep, entry.session
        view = memoryview(b"" if data is None else data).cast("B")
        nbytes = view.nbytes
        if op == Op.PUT:
            session.check_put_size(key, nbytes)
        if nbytes <= EAGER_MAX:  # one message: header, key, data and trailer
            counter, header = session.request(op, key, view)
            await ep.send(bytearray(header + key + view.tobytes() + TRAILER))
        else:  # two-step PUT: announce, wait for CONTINUE, then the data
            counter, header = session.request(op, key, view, staged=True)
            await ep.send(bytearray(header + key + TRAILER))
            status, reply = await self._reply(ep, address, session, counter, op, key)
            if status != Status.CONTINUE:
                return status, reply
            payload = data if isinstance(data, np.ndarray) else np.frombuffer(view, np.uint8)
            await ep.send(payload)
        return await self._reply(ep, address, session, counter, op, key)

    async def _receive(
        self, ep: Any, address: str, session: ClientSession
    ) -> tuple[memoryview, bytes, Any]:
        """Header, key and data (eager or following) of one message from the server."""
        first = bytearray(FIRST_MESSAGE_MAX)  # fresh: nothing stale under a short message
        await ep.recv(first)
        view = memoryview(first)
        try:
            h = parse_header(view[:HEADER_SIZE])
        except ProtocolError as e:
            raise ConnectorError(f"malformed reply from {address}: {e}") from e
        end = HEADER_SIZE + h.key_len
        reply_key = bytes(view[HEADER_SIZE:end])
        body: Any = None
        if h.data_len > EAGER_MAX:
            if session.max_data and h.data_len > max(session.max_data, EAGER_MAX):
                raise ConnectorError(
                    f"reply from {address} declares {h.data_len} bytes, more than the "
                    f"server's limit {session.max_data}"
                )
            if bytes(view[end : end + len(TRAILER)]) != TRAILER:
                raise ConnectorError(f"truncated reply from {address}")
            body = np.empty(h.data_len, dtype=np.uint8)  # received straight into its own buffer
            await ep.recv(body)
        else:
            if bytes(view[end + h.data_len : end + h.data_len + len(TRAILER)]) != TRAILER:
                raise ConnectorError(f"truncated reply from {address}")
            if h.data_len:
                body = np.frombuffer(first, np.uint8, count=h.data_len, offset=end)
        return view[:HEADER_SIZE], reply_key, body

    async def _reply(
        self, ep: Any, address: str, session: ClientSession, counter: int, op: int, key: bytes
    ) -> tuple[Status, Any]:
        header, reply_key, body = await self._receive(ep, address, session)
        parsed = session.check_reply(header, reply_key, body)
        status = Status(parsed.status)
        what = describe(op, key, address)
        raise_for_status(status, body, what)
        if parsed.counter != counter or parsed.op != op or reply_key != key:
            raise ConnectorError(f"reply to {what} does not match its request")
        return status, (None if body is None else body.data)
