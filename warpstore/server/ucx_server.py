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

from warpstore.server.auth import Refused, ServerAuth, ServerSession
from warpstore.server.core import RateLimitedLog, Reply, ServerCore
from warpstore.server.protocol import (
    EAGER_MAX,
    HEADER_SIZE,
    MAGIC,
    MAX_KEY_LEN,
    Flags,
    Header,
    Kind,
    Op,
    ProtocolError,
    Status,
    parse_header,
)
from warpstore.server.ucx_env import import_ucxx

__all__ = ["FIRST_MESSAGE_MAX", "TRAILER", "UCXServer", "format_ucx_address", "parse_ucx_address"]

logger = logging.getLogger("warpstore.server")

# Every first UCX message ends with this trailer: the receiver's buffer is zeroed, so a
# message shorter than its header declares is seen (UCX does not report the length).
TRAILER = MAGIC
# A message's first UCX message: header, key, up to EAGER_MAX bytes of data, trailer.
FIRST_MESSAGE_MAX = HEADER_SIZE + MAX_KEY_LEN + EAGER_MAX + len(TRAILER)


def format_ucx_address(ip: str, port: int) -> str:
    return f"ucx://[{ip}]:{port}" if ":" in ip else f"ucx://{ip}:{port}"


def parse_ucx_address(address: str) -> tuple[str, int]:
    if not address.startswith("ucx://"):
        raise ValueError(f"not a UCX server address: {address!r} (expected ucx://HOST:PORT)")
    host, _, port = address[len("ucx://") :].rpartition(":")
    return host.strip("[]"), int(port)


class UCXServer:
    """Listens with ucxx and answers requests with a :class:`ServerCore`."""

    def __init__(
        self, token: bytes, ip: str, port: int | None, node: str, memory_limit: int | None = None
    ) -> None:
        self.ucxx = import_ucxx()
        self.auth = ServerAuth(token, memory_limit)
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

    async def _send(self, ep: Any, header: bytes, key: bytes, data: Any) -> None:
        nbytes = 0 if data is None else memoryview(data).nbytes
        if nbytes <= EAGER_MAX:  # one message: header, key, data and the trailer
            await ep.send(bytearray(header + key + (bytes(data) if nbytes else b"") + TRAILER))
        else:  # header, key and trailer, then the data straight from the stored buffer
            await ep.send(bytearray(header + key + TRAILER))
            await ep.send(data)

    async def _reply(
        self, ep: Any, session: ServerSession, h: Header, key: bytes, reply: Reply,
        kind: int = Kind.REPLY,
    ) -> None:
        body = reply.data if reply.status == Status.OK else reply.message.encode()
        if body is not None and memoryview(body).nbytes == 0:
            body = None
        tag = reply.tag if reply.status == Status.OK else None
        header = self.auth.reply(session, h, key, reply.status, body, kind, data_tag=tag)
        await self._send(ep, header, key, body)

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
                except Refused as r:
                    self.core.errors[r.status.name.lower()] += 1
                    self._bad.warning(
                        "%s: refused a message and closed its endpoint: %s",
                        self.core.describe(),
                        r.message,
                    )
                    with contextlib.suppress(Exception):
                        header, data = self.auth.refusal(r.status, r.message)
                        await self._send(ep, header, b"", data)
                    return
                except Exception as e:  # the peer vanished mid-message, or a bug
                    logger.info("%s: endpoint ended: %s", self.core.describe(), e)
                    return
        finally:
            self._endpoints.discard(ep)
            with contextlib.suppress(Exception):
                ep.abort()

    def _first_parts(self, first: memoryview) -> tuple[Header, bytes, Any]:
        """Header, key and eager data of a first message; refuses short ones."""
        try:
            h = parse_header(first[:HEADER_SIZE])
        except ProtocolError as e:
            raise Refused(Status.BAD_REQUEST, str(e)) from None
        end = HEADER_SIZE + h.key_len
        key = bytes(first[HEADER_SIZE:end])
        eager = h.data_len <= EAGER_MAX and not h.flags & Flags.STAGED
        if not eager and h.kind == Kind.REQUEST and not h.flags & Flags.STAGED:
            raise Refused(Status.BAD_REQUEST, f"data of {h.data_len} bytes must be staged")
        data = first[end : end + h.data_len] if eager and h.data_len else None
        end += h.data_len if eager else 0
        if bytes(first[end : end + len(TRAILER)]) != TRAILER:
            raise Refused(
                Status.BAD_REQUEST,
                f"message shorter than its header declares ({h.data_len} data bytes)",
            )
        return h, key, data

    async def _serve_one(self, ep: Any, first: memoryview) -> None:
        header = first[:HEADER_SIZE]
        h, key, data = self._first_parts(first)
        h, session = self.auth.check(header, key, data)
        if session is None:  # an authentic HELLO: open a session
            reply_header, reply_data = self.auth.hello_reply(h)
            await self._send(ep, reply_header, b"", reply_data)
            return
        op = h.op
        if op != Op.PUT:
            reply = (
                Reply(Status.BAD_REQUEST, message=f"operation {op} takes no data")
                if h.data_len
                else self._handle(op, key, None, 0)
            )
            await self._reply(ep, session, h, key, reply)
            return
        if not h.flags & Flags.STAGED:  # the data came in the same message
            buffer = np.frombuffer(data if data is not None else b"", dtype=np.uint8).copy()
            reply = self._handle(op, key, buffer, h.data_len, h.data_tag_pair)
            await self._reply(ep, session, h, key, reply)
            return
        # two-step PUT: refuse before the data is sent, or reserve room and ask for it
        table = self.core.table
        if not key or not table.can_hold(key, h.data_len):
            await self._reply(ep, session, h, key, self._handle(op, key, b"", h.data_len))
            return
        try:
            buffer = np.empty(h.data_len, dtype=np.uint8)
        except MemoryError:
            reply = Reply(Status.ERROR, message=f"cannot allocate {h.data_len} bytes")
            await self._reply(ep, session, h, key, reply)
            return
        table.reserved += h.data_len
        try:
            await self._reply(ep, session, h, key, Reply(Status.CONTINUE), Kind.CONTINUE)
            await ep.recv(buffer)  # the producer's tag in h covers it, checked by consumers
        finally:
            table.reserved -= h.data_len
        reply = self._handle(op, key, buffer, h.data_len, h.data_tag_pair)
        await self._reply(ep, session, h, key, reply)

    def _handle(
        self, op: int, key: bytes, data: Any, nbytes: int, tag: tuple[bytes, bytes] | None = None
    ) -> Reply:
        try:
            return self.core.handle(op, key, data, nbytes, tag)
        except Exception as e:  # a bug must not take the node's data down with it
            logger.exception("%s: error handling op %s key %r", self.core.describe(), op, key)
            return Reply(Status.ERROR, message=f"server error: {type(e).__name__}: {e}")
