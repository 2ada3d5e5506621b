"""The UCX transport of the node server (ucxx, asyncio API).

Same protocol, same :class:`~warpstore.server.core.ServerCore` as the ZeroMQ
transport. On the client's endpoint, a message's header, key and (up to
``EAGER_MAX`` bytes) data travel as one tagged UCX message, received into a
buffer of the largest such size; larger data follows as a second message of
exactly its size. One asyncio loop serves every endpoint, so the object table is
touched by one thread only. Sizes come from the header: the key buffer is
bounded (``MAX_KEY_LEN``) and a PUT's data is received straight into a buffer
of exactly its size, allocated only after the header authenticated and the
memory limit was checked. That buffer is what the table keeps and what a GET
sends back: a stored object is never copied.

A message that breaks the protocol, or fails authentication, gets a refusal
and then its endpoint is closed: unread frames may follow it, and the stream
cannot be trusted to be in step again. The server itself carries on.

UCX listeners listen on every interface; the advertised address is the
configured one (interface, address or host name), and every request must
carry the job token's tag regardless of where it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np

from warpstore.server.core import RateLimitedLog, Reply, ServerCore
from warpstore.server.protocol import (
    EAGER_MAX,
    HEADER_SIZE,
    MAX_KEY_LEN,
    Op,
    ProtocolError,
    Status,
    pack_header,
    peek_lengths,
    unpack_header,
)
from warpstore.server.ucx_env import import_ucxx

__all__ = ["FIRST_MESSAGE_MAX", "UCXServer", "format_ucx_address", "parse_ucx_address"]

logger = logging.getLogger("warpstore.server")

# A message's first UCX message: header, key and, up to EAGER_MAX bytes, its data.
FIRST_MESSAGE_MAX = HEADER_SIZE + MAX_KEY_LEN + EAGER_MAX


def format_ucx_address(ip: str, port: int) -> str:
    return f"ucx://[{ip}]:{port}" if ":" in ip else f"ucx://{ip}:{port}"


def parse_ucx_address(address: str) -> tuple[str, int]:
    if not address.startswith("ucx://"):
        raise ValueError(f"not a UCX server address: {address!r} (expected ucx://HOST:PORT)")
    host, _, port = address[len("ucx://") :].rpartition(":")
    return host.strip("[]"), int(port)


class _Refused(Exception):
    """Refuse this message, then drop the endpoint (its stream is out of step)."""

    def __init__(self, status: Status, message: str, request_id: int = 0, op: int = 0) -> None:
        super().__init__(message)
        self.status, self.message, self.request_id, self.op = status, message, request_id, op


class UCXServer:
    """Listens with ucxx and answers requests with a :class:`ServerCore`."""

    def __init__(
        self, token: bytes, ip: str, port: int | None, node: str, memory_limit: int | None = None
    ) -> None:
        self.ucxx = import_ucxx()
        self.token = token
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._endpoints: set[Any] = set()
        async def listen() -> Any:
            # inside the running loop: ucxx binds its progress tasks to it
            return self.ucxx.create_listener(self._serve_endpoint, port=port or 0)

        try:
            self.listener = self.loop.run_until_complete(listen())
        except Exception as e:
            self.loop.close()
            raise OSError(f"cannot listen for UCX on port {port or '*'} on node {node}: {e}") from e
        self.address = format_ucx_address(ip, self.listener.port)
        self.core = ServerCore(self.address, node, memory_limit, transport="ucx")
        self._bad = RateLimitedLog()
        self._stop = False

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stop = True

    def close(self) -> None:
        for ep in list(self._endpoints):
            with contextlib.suppress(Exception):  # already gone
                ep.abort()
        self._endpoints.clear()
        self.listener.close()
        with contextlib.suppress(Exception):
            self.ucxx.stop_notifier_thread()
        self.loop.close()

    def serve(self, poll_s: float = 0.05) -> None:
        async def wait() -> None:
            while not self._stop and not self.core.stopping:
                await asyncio.sleep(poll_s)

        self.loop.run_until_complete(wait())

    # -- one endpoint -------------------------------------------------------

    async def _send(self, ep: Any, op: int, request_id: int, key: bytes, reply: Reply) -> None:
        data = reply.data if reply.status in (Status.OK, Status.CONTINUE) else (
            reply.message.encode()
        )
        nbytes = memoryview(data).nbytes if data is not None else 0
        header = pack_header(
            self.token, op, key=key, request_id=request_id, data_len=nbytes, status=reply.status
        )
        if nbytes <= EAGER_MAX:  # one message: header, key and data together
            await ep.send(bytearray(header + key + (bytes(data) if nbytes else b"")))
        else:  # header and key, then the data straight from the stored buffer
            await ep.send(bytearray(header + key))
            await ep.send(data)

    async def _serve_endpoint(self, ep: Any) -> None:
        self._endpoints.add(ep)
        try:
            while not self.core.stopping:
                # fresh and zeroed each time: a short message must not expose an earlier one
                first = bytearray(FIRST_MESSAGE_MAX)
                try:
                    await ep.recv(first)
                except Exception:
                    return  # the client went away (or closed), or sent too much at once
                try:
                    await self._serve_one(ep, memoryview(first))
                except _Refused as r:
                    self.core.errors[r.status.name.lower()] += 1
                    self._bad.warning(
                        "%s: refused a message and closed its endpoint: %s",
                        self.core.describe(),
                        r.message,
                    )
                    with contextlib.suppress(Exception):
                        await self._send(
                            ep, r.op, r.request_id, b"", Reply(r.status, message=r.message)
                        )
                    return
                except Exception as e:  # the peer vanished mid-message, or a bug
                    logger.info("%s: endpoint ended: %s", self.core.describe(), e)
                    return
        finally:
            self._endpoints.discard(ep)
            with contextlib.suppress(Exception):
                ep.abort()

    async def _serve_one(self, ep: Any, first: memoryview) -> None:
        header = first[:HEADER_SIZE]
        try:
            key_len, data_len = peek_lengths(header)
        except ProtocolError as e:
            raise _Refused(Status.BAD_REQUEST, str(e)) from None
        key = bytes(first[HEADER_SIZE : HEADER_SIZE + key_len])
        parsed, authentic = unpack_header(self.token, header, key)
        if not authentic:
            raise _Refused(
                Status.AUTH_FAILED,
                "authentication failed: wrong or missing token",
                parsed.request_id,
                parsed.op,
            )
        op, rid = parsed.op, parsed.request_id
        if op != Op.PUT:
            if data_len:
                raise _Refused(Status.BAD_REQUEST, f"operation {op} takes no data", rid, op)
            await self._send(ep, op, rid, key, self._handle(op, key, None, 0))
            return
        if data_len <= EAGER_MAX:  # the data came in the same message
            start = HEADER_SIZE + key_len
            buffer = np.frombuffer(first, dtype=np.uint8, count=data_len, offset=start).copy()
            await self._send(ep, op, rid, key, self._handle(op, key, buffer, data_len))
            return
        # two-step PUT: refuse before the data is sent, or ask for it
        if not key or not self.core.table.can_hold(key, data_len):
            await self._send(ep, op, rid, key, self._handle(op, key, b"", data_len))
            return
        try:
            buffer = np.empty(data_len, dtype=np.uint8)
        except MemoryError:
            await self._send(
                ep, op, rid, key, Reply(Status.ERROR, message=f"cannot allocate {data_len} bytes")
            )
            return
        await self._send(ep, op, rid, key, Reply(Status.CONTINUE, None))
        await ep.recv(buffer)
        await self._send(ep, op, rid, key, self._handle(op, key, buffer, data_len))

    def _handle(self, op: int, key: bytes, data: Any, nbytes: int) -> Reply:
        try:
            return self.core.handle(op, key, data, nbytes)
        except Exception as e:  # a bug must not take the node's data down with it
            logger.exception("%s: error handling op %s key %r", self.core.describe(), op, key)
            return Reply(Status.ERROR, message=f"server error: {type(e).__name__}: {e}")
