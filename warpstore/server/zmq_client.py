"""Client side of the ZeroMQ transport: persistent, authenticated request/reply.

Each thread of a process keeps one DEALER socket per server address (ZeroMQ
sockets are not thread-safe), reused for every request, with one protocol
session (:mod:`warpstore.server.auth`) opened by a HELLO on first use. A reply
is accepted only if its tag verifies with the session key and its counter and
key match a pending request; anything else (a late reply to a request that
timed out, say) is discarded.

Failing fast: every socket has ZeroMQ heartbeats (a PING each second; no
answer within ``heartbeat_timeout`` closes the connection) and a socket
monitor. A connection refused, or closed while requests are pending (server
killed, or hung and past the heartbeat timeout), is an error at once, not at
the end of ``timeout``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from warpstore.exceptions import AuthenticationError, ConnectorConnectionError, ConnectorError
from warpstore.server.admission import USERNAME, WINDOW_S, credential, port_of
from warpstore.server.auth import ClientSession, UnknownSession
from warpstore.server.clients import RequestClient
from warpstore.server.protocol import HEADER_SIZE, Kind, Op, Status
from warpstore.server.replies import raise_for_status
from warpstore.server.runtime import node_name

__all__ = ["ZMQClient"]

_ZERO_COPY_MIN = 64 * 1024
# PUTs from this size on are announced first and sent only after the server's CONTINUE
# (it has room): one extra round trip (~0.1 ms), never megabytes sent to be refused
STAGE_MIN = 1 << 20
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_EVENTS = (
    zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | _HANDSHAKE_FAILED
)

# a socket unused this long checks its monitor before a request (~8 us, so not every time)
_IDLE_CHECK_S = 1.0

Request = tuple[int, bytes, Any]  # op, key, data or None


def _sent(tracker: Any) -> Callable[[float], bool]:
    """``sent(timeout)`` of a zero-copy send: has ZeroMQ let go of the data (it left)?"""

    def sent(timeout: float) -> bool:
        try:
            tracker.wait(timeout)
        except zmq.NotDone:
            return False
        return True

    return sent


class _Conn:
    """One DEALER socket, its monitor and its protocol session."""

    def __init__(self, sock: Any, monitor: Any, session: ClientSession) -> None:
        self.sock, self.monitor, self.session = sock, monitor, session
        self.connected = False
        self.used = time.monotonic()  # last request: idle sockets check their monitor


class ZMQClient(RequestClient):
    """Sends requests to node servers and checks their replies.

    Args:
        token: the job's secret.
        timeout: seconds to wait for the replies of one request or pipeline.
        heartbeat_timeout: seconds without an answer to ZeroMQ's heartbeat PING
            after which a connection is declared dead (server killed or hung).
    """

    def __init__(self, token: bytes, timeout: float = 30.0, heartbeat_timeout: float = 5.0) -> None:
        self.token = token
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self._local = threading.local()
        self._all: list[_Conn] = []
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

    def _conn(self, address: str, deadline: float, timeout: float) -> _Conn:
        ctx = self._ctx()
        conns: dict[str, _Conn] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(address)
        if conn is not None and conn.session.open:
            now = time.monotonic()
            idle = now - conn.used > _IDLE_CHECK_S
            conn.used = now
            if not (idle and self._lost_while_idle(conn)):
                return conn
        if conn is not None:
            self._drop(address)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(self.heartbeat_timeout * 1000)))
        if address.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        # a one-time admission credential (server/admission.py): a new socket for each
        # connection, as a reconnect would offer the used one again and be refused
        sock.setsockopt(zmq.PLAIN_USERNAME, USERNAME)
        sock.setsockopt(zmq.PLAIN_PASSWORD, credential(self.token, port_of(address)))
        monitor = sock.get_monitor_socket(_EVENTS)
        conn = _Conn(sock, monitor, ClientSession(self.token, address))
        sock.connect(address)
        conns[address] = conn
        with self._lock:
            self._all.append(conn)
        sock.send_multipart([conn.session.hello_request(), b""])
        frames = self._receive(conn, address, deadline, timeout, "HELLO")
        if len(frames) not in (2, 3) or len(frames[0]) != HEADER_SIZE:
            raise ConnectorError(f"malformed HELLO reply from {address}")
        conn.session.accept_hello(
            frames[0].buffer, frames[1].bytes, frames[2].bytes if len(frames) == 3 else None
        )
        return conn

    @staticmethod
    def _lost_while_idle(conn: _Conn) -> bool:
        """Did the connection drop since the last request? Then use a new socket.

        libzmq reconnects an idle socket on its own, offering its used one-time
        admission credential, which the server refuses as a replay (a restarted
        server would not know our session either): a fresh socket is cheaper
        than a failed request.
        """
        lost = False
        while conn.monitor.poll(0):
            event = parse_monitor_message(conn.monitor.recv_multipart())["event"]
            if event == zmq.EVENT_CONNECTED:
                conn.connected = True
            elif event == zmq.EVENT_DISCONNECTED or event & _HANDSHAKE_FAILED:
                lost = True
        return lost

    def _drop(self, address: str) -> None:
        conns = getattr(self._local, "conns", {})
        conn = conns.pop(address, None)
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            self._close(conn)

    @staticmethod
    def _close(conn: _Conn) -> None:
        with contextlib.suppress(zmq.ZMQError):
            conn.sock.disable_monitor()
        conn.monitor.close(linger=0)
        conn.sock.close(linger=0)

    def close(self) -> None:
        """Close every socket this client opened, in any thread (idempotent)."""
        with self._lock:
            conns, self._all = self._all, []
            for conn in conns:
                self._close(conn)
            self._local = threading.local()
            if self._context is not None and self._pid == os.getpid():
                self._context.term()
            self._context = None

    def pipeline(
        self, address: str, requests: Sequence[Request], timeout: float | None = None
    ) -> list[tuple[Status, Any]]:
        """Send all ``requests`` to one server, then collect all replies (one round trip).

        If the server forgot our session (it restarted), a new session is
        opened and the requests are sent once more.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            try:
                conn = self._conn(address, deadline, timeout)
                return self._run(conn, address, requests, deadline, timeout)
            except UnknownSession:
                self._drop(address)
                if attempt == 2:
                    raise
            except (ConnectorError, AuthenticationError):
                self._drop(address)  # late replies must not reach the next request
                raise
            except zmq.ZMQError as e:
                self._drop(address)
                raise ConnectorConnectionError(f"ZeroMQ error talking to {address}: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(
        self,
        conn: _Conn,
        address: str,
        requests: Sequence[Request],
        deadline: float,
        timeout: float,
    ) -> list[tuple[Status, Any]]:
        session = conn.session
        pending: dict[int, tuple[int, bytes]] = {}
        order: list[int] = []
        staged: dict[int, list[Any]] = {}  # two-step PUTs waiting for CONTINUE
        for op, key, data in requests:
            nbytes = 0 if data is None else memoryview(data).nbytes
            if op == Op.PUT:
                session.check_put_size(key, nbytes)
            if op == Op.PUT and nbytes >= STAGE_MIN:  # announce; the data follows CONTINUE
                counter, header = session.request(op, key, data, staged=True, tag_follows=True)
                conn.sock.send_multipart([header, key])
                staged[counter] = [header, key, data]
            else:
                counter, header = session.request(op, key, data)
                frames: list[Any] = [header, key]
                if nbytes:
                    frames.append(data)
                conn.sock.send_multipart(frames, copy=nbytes < _ZERO_COPY_MIN)
            pending[counter] = (op, key)
            order.append(counter)
        results: dict[int, tuple[Status, Any]] = {}
        while pending:
            op, key = next(iter(pending.values()))
            what = f"{Op(op).name} of key {key.decode(errors='replace')!r}"
            frames = self._receive(conn, address, deadline, timeout, what)
            if len(frames) not in (2, 3) or len(frames[0]) != HEADER_SIZE:
                raise ConnectorError(f"malformed reply from {address} ({len(frames)} frames)")
            reply_key = frames[1].bytes
            data = frames[2] if len(frames) == 3 else None
            h = session.check_reply(frames[0].buffer, reply_key, data)
            expected = pending.get(h.counter)
            if h.kind == Kind.CONTINUE and expected is not None and h.counter in staged:
                header, key, data = staged.pop(h.counter)
                tracker = conn.sock.send_multipart([header, key, data], copy=False, track=True)
                # tagged while ZeroMQ's I/O thread sends it; its tag follows in a SEAL
                seal = session.seal(h.counter, key, data, sent=_sent(tracker))
                conn.sock.send_multipart([seal, key])
                continue
            if expected is None or h.kind != Kind.REPLY:
                continue  # a late reply to an earlier, abandoned request
            req_op, req_key = expected
            if h.op != req_op or reply_key != req_key:
                raise ConnectorError(f"reply from {address} does not match its request")
            status = Status(h.status)
            if status not in (Status.OK, Status.NOT_FOUND):  # only then is the body words
                raise_for_status(
                    status,
                    None if data is None else data.bytes,
                    f"{Op(req_op).name} of key {req_key.decode(errors='replace')!r} at {address}",
                )
            results[h.counter] = (status, data)
            del pending[h.counter]
        return [results[c] for c in order]

    def _handshake_failed(self, conn: _Conn, address: str, event: int, what: str) -> None:
        if conn.session.open:
            # an automatic reconnect of an idle socket offered its used credential again
            raise UnknownSession(f"server {address} did not admit a reconnect of our socket")
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise AuthenticationError(
                f"server {address} refused our token at the ZeroMQ handshake for {what}: the "
                f"client and the server use different job tokens (check WARPSTORE_TOKEN_FILE "
                f"on node {node_name()}), or the clocks of the two nodes differ by more than "
                f"{WINDOW_S} s"
            )
        raise ConnectorConnectionError(
            f"the ZeroMQ handshake with server {address} failed for {what}: it is not a "
            "warpstore node server of this version (the server log says more)"
        )

    def _receive(
        self, conn: _Conn, address: str, deadline: float, timeout: float, what: str
    ) -> list[Any]:
        # The deadline covers the whole pipeline, including stale replies to
        # earlier, abandoned requests that are read and dropped on the way.
        poller = zmq.Poller()
        poller.register(conn.sock, zmq.POLLIN)
        poller.register(conn.monitor, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectorConnectionError(
                    f"no reply from server {address} within {timeout:g} s (the client's "
                    f"timeout) to {what} (from node {node_name()}): is the server running "
                    "and reachable?"
                )
            ready = dict(poller.poll(int(remaining * 1000) + 1))
            if conn.sock in ready:
                return list(conn.sock.recv_multipart(copy=False))
            if conn.monitor in ready:
                event = parse_monitor_message(conn.monitor.recv_multipart())["event"]
                if event & _HANDSHAKE_FAILED:
                    self._handshake_failed(conn, address, event, what)
                elif event == zmq.EVENT_CONNECTED:
                    conn.connected = True
                elif event == zmq.EVENT_CONNECT_RETRIED and not conn.connected:
                    raise ConnectorConnectionError(
                        f"cannot connect to server {address} from node {node_name()} "
                        f"(connection refused) for {what}: is the server running?"
                    )
                elif event == zmq.EVENT_DISCONNECTED:
                    # what the server sent before closing (a SHUTDOWN's reply) is still read
                    if conn.sock.poll(100, zmq.POLLIN):
                        return list(conn.sock.recv_multipart(copy=False))
                    raise ConnectorConnectionError(
                        f"server {address} closed the connection during {what} (it stopped, "
                        f"died, or did not answer heartbeats for {self.heartbeat_timeout:g} s)"
                    )
