"""The ZeroMQ transport of the node server.

One ROUTER socket serves every client of the node and of other nodes: each
client process keeps one persistent DEALER connection per server, so a request
costs no connection set-up. Frames are received and sent with ``copy=False``:
a stored object is the very ZeroMQ frame that arrived, and a GET sends that
frame back out, so a 100 MiB object is never copied inside the server.

Admission: a connection is admitted at the ZeroMQ handshake only with a fresh
credential made from the job token (:mod:`.admission`), so a peer without the
token never gets a message frame buffered.

The server is single-threaded on purpose (the admission handler aside): every
operation is an O(1) dict update, ZeroMQ's I/O thread does the network work,
and one thread means no locks on the object table.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import zmq

from warpstore.server.admission import HANDSHAKE_IVL_MS, Admission
from warpstore.server.auth import Refused, ServerAuth, ServerSession
from warpstore.server.core import RateLimitedLog, Reply, ServerCore
from warpstore.server.protocol import HEADER_SIZE, MAX_KEY_LEN, Flags, Header, Kind, Op, Status

__all__ = ["ZMQServer", "format_tcp_address"]

logger = logging.getLogger("warpstore.server")

_ZERO_COPY_MIN = 64 * 1024


HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000


def max_frame_size(memory_limit: int | None) -> int:
    """``zmq.MAXMSGSIZE`` for a server: its memory limit, else this node's memory."""
    if memory_limit is None:
        try:
            memory_limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):  # pragma: no cover - every Linux has both
            memory_limit = 2**40
    return max(memory_limit, MAX_KEY_LEN, HEADER_SIZE)


def format_tcp_address(ip: str, port: int) -> str:
    return f"tcp://[{ip}]:{port}" if ":" in ip else f"tcp://{ip}:{port}"


class ZMQServer:
    """Binds a ROUTER socket and answers requests with a :class:`ServerCore`."""

    def __init__(
        self, token: bytes, ip: str, port: int | None, node: str, memory_limit: int | None = None
    ) -> None:
        self.context = zmq.Context()
        # Admission at the ZMTP handshake (see server/admission.py): without a fresh
        # credential made from the token, no message frame is ever accepted, so nobody
        # without the token makes libzmq hold an endless multipart message.
        self.admission = Admission(self.context, token)
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.PLAIN_SERVER, 1)
        self.socket.setsockopt(zmq.ZAP_DOMAIN, b"warpstore")
        self.socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # A ROUTER drops, without a word, what a peer's queue cannot take beyond its
        # high-water mark: a pipeline whose reader falls behind lost its later replies and
        # timed out (tests/test_zmq_server.py). Replies are zero-copy slices of stored
        # objects or small, and only admitted token holders get any: no limit.
        self.socket.setsockopt(zmq.SNDHWM, 0)
        # libzmq drops a connection whose frame header declares more than this, before
        # buffering any of it: nobody, token or not, makes the server hold a frame larger
        # than the largest object it could ever store (before admission: one such frame,
        # for at most HANDSHAKE_IVL_MS).
        self.max_frame = max_frame_size(memory_limit)
        self.socket.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        # clients learn the limit in HELLO and never send a frame libzmq would cut off
        self.auth = ServerAuth(token, self.max_frame)
        # Heartbeats: connections of dead or hung clients are closed within seconds.
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        bind_ip = f"[{ip}]" if ":" in ip else ip
        if ":" in ip:
            self.socket.setsockopt(zmq.IPV6, 1)
        try:
            if port:
                self.socket.bind(f"tcp://{bind_ip}:{port}")
            else:
                port = self.socket.bind_to_random_port(f"tcp://{bind_ip}")
        except zmq.ZMQError as e:
            self.close()
            raise OSError(f"cannot bind tcp://{bind_ip}:{port or '*'} on node {node}: {e}") from e
        self.admission.port = port
        self.address = format_tcp_address(ip, port)
        self.core = ServerCore(self.address, node, memory_limit, transport="zmq")
        # data held for its SEAL (a TAG_FOLLOWS PUT) is about to be stored: it counts
        # against the memory limit already, next to the segment pool
        pool = self.core.table.held_elsewhere
        self.core.table.held_elsewhere = lambda: pool() + self.auth.held_bytes()
        self._bad = RateLimitedLog()
        self._stop = False

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stop = True

    def close(self) -> None:
        self.socket.close(linger=0)
        self.admission.close()
        self.context.term()

    def serve(self, poll_ms: int = 200) -> None:
        # A blocking receive with a timeout (to notice stop requests) costs one
        # wake-up per message; a poll followed by a receive costs two.
        self.socket.setsockopt(zmq.RCVTIMEO, poll_ms)
        while not self._stop and not self.core.stopping:
            try:
                frames = self.socket.recv_multipart(copy=False)
            except zmq.Again:
                self.auth.expire_held()
                continue
            except zmq.ZMQError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            self._serve_one(frames)

    # -- one message --------------------------------------------------------

    def _peer(self, frame: Any) -> str:
        try:
            return str(frame.get("Peer-Address"))
        except Exception:
            return "unknown peer"

    def _send(self, identity: Any, header: bytes, key: bytes, data: Any) -> None:
        nbytes = 0 if data is None else memoryview(data).nbytes
        frames: list[Any] = [identity, header, key]
        if nbytes:
            frames.append(data)
        try:
            self.socket.send_multipart(frames, copy=nbytes < _ZERO_COPY_MIN)
        except zmq.ZMQError as e:  # the peer went away: nothing to do
            logger.info("could not reply to %s: %s", self._peer(identity), e)

    def _refuse(self, identity: Any, status: Status, message: str) -> None:
        self.core.errors[status.name.lower()] += 1
        self._bad.warning(
            "%s: refused a message from %s: %s", self.core.describe(), self._peer(identity), message
        )
        header, data = self.auth.refusal(status, message)
        self._send(identity, header, b"", data)

    def _announced(
        self, identity: Any, session: ServerSession, header: Header, key: bytes
    ) -> None:
        """A two-step PUT's announcement: CONTINUE only if the store has room now."""
        if not key or not self.core.table.can_hold(key, header.data_len):
            reply = self.core.handle(Op.PUT, key, b"", header.data_len)  # the refusal
            body = reply.message.encode() or None
            self._send(identity, self.auth.reply(session, header, key, reply.status, body), key,
                       body)
            return
        self.auth.stage(session, header, key)
        continue_header = self.auth.reply(
            session, header, key, Status.CONTINUE, None, kind=Kind.CONTINUE
        )
        self._send(identity, continue_header, key, None)

    def _serve_one(self, frames: list[Any]) -> None:
        identity, parts = frames[0], frames[1:]
        if len(parts) not in (2, 3):
            self._refuse(
                identity,
                Status.BAD_REQUEST,
                f"expected 2 or 3 frames after the identity, got {len(parts)}",
            )
            return
        header_frame, key_frame = parts[0], parts[1]
        if len(header_frame) != HEADER_SIZE:
            self._refuse(
                identity,
                Status.BAD_REQUEST,
                f"header is {len(header_frame)} bytes, expected {HEADER_SIZE}",
            )
            return
        key = key_frame.bytes
        data = parts[2] if len(parts) == 3 else None
        if data is not None and len(data) == 0:
            self._refuse(identity, Status.BAD_REQUEST, "empty data frame")
            return
        staged_data = data is not None and header_frame.bytes[7] & Flags.STAGED
        session_or_none: ServerSession | None
        try:
            if data is None and header_frame.bytes[6] == Kind.SEAL:  # a held PUT's data tag
                header, session_or_none, data = self.auth.check_seal(header_frame.buffer, key)
            elif staged_data:  # the data of a two-step PUT that got CONTINUE
                header, session_or_none = self.auth.check_staged_data(
                    header_frame.buffer, key, data
                )
                if header.flags & Flags.TAG_FOLLOWS:  # stored when its SEAL comes
                    self.auth.hold(session_or_none, header, key, data)
                    return
            else:
                header, session_or_none = self.auth.check(
                    header_frame.buffer, key, data, tag_follows=True
                )
        except Refused as r:
            self._refuse(identity, r.status, r.message)
            return
        if session_or_none is None:  # an authentic HELLO: open a session
            reply_header, reply_data = self.auth.hello_reply(header)
            self._send(identity, reply_header, b"", reply_data)
            return
        session = session_or_none
        if header.flags & Flags.STAGED and data is None:
            self._announced(identity, session, header, key)
            return
        nbytes = 0 if data is None else len(data)
        if header.op != Op.PUT and nbytes:
            reply = Reply(Status.BAD_REQUEST, message=f"operation {header.op} takes no data")
        else:
            if header.op == Op.PUT and data is None:
                data = b""
            try:
                reply = self.core.handle(header.op, key, data, nbytes, header.data_tag_pair)
            except Exception as e:  # a bug must not take the node's data down with it
                logger.exception(
                    "%s: error handling op %s key %r", self.core.describe(), header.op, key
                )
                reply = Reply(Status.ERROR, message=f"server error: {type(e).__name__}: {e}")
        body = reply.data if reply.status == Status.OK else reply.message.encode()
        if body is not None and memoryview(body).nbytes == 0:
            body = None
        tag = reply.tag if reply.status == Status.OK else None
        reply_header = self.auth.reply(session, header, key, reply.status, body, data_tag=tag)
        self._send(identity, reply_header, key, body)
