"""Sessions of the wire protocol: who may send what, once (see :mod:`.protocol`).

One implementation for every transport: a server's :class:`ServerAuth`
answers HELLOs, checks each request's tag and counter and signs replies and
refusals; a client's :class:`ClientSession` opens a session, numbers its
requests and checks replies. The transports only move the bytes.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warpstore.exceptions import AuthenticationError, ConnectorError, StoreFullError
from warpstore.server.protocol import (
    HELLO_REPLY,
    NO_DATA_TAG,
    SESSION_SIZE,
    DataSealer,
    Flags,
    Header,
    HelloSealer,
    Kind,
    Op,
    ProtocolError,
    SessionSealer,
    Status,
    pack_header,
    parse_header,
    verify,
)
from warpstore.server.runtime import node_name

__all__ = ["ClientSession", "Refused", "ServerAuth", "ServerSession", "UnknownSession"]

MAX_SESSIONS = 16384  # least recently used sessions are forgotten beyond this
# TAG_FOLLOWS data waiting for its SEAL: a client sends the SEAL right behind the data on
# the same connection, so a session has one held at a time (a second is dropped oldest
# first); a client that died in between leaves it for at most HELD_S.
HELD_PER_SESSION = 2
HELD_S = 30.0


class Refused(Exception):
    """The server refuses a message; the transport sends :meth:`ServerAuth.refusal`."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class UnknownSession(ConnectorError):
    """The server does not know our session (it restarted, or forgot it): open a new one."""


@dataclass
class ServerSession:
    sealer: SessionSealer
    last: int = -1  # highest counter accepted
    # ZeroMQ two-step PUTs answered with CONTINUE: counter -> (key, data_len), taken once
    staged: dict[int, tuple[bytes, int]] = field(default_factory=dict)


class ServerAuth:
    """A server's side of the sessions: HELLO, tag and counter checks, signing."""

    def __init__(self, token: bytes, max_data: int | None = None) -> None:
        self._token = token
        self.server_id = secrets.token_bytes(SESSION_SIZE)
        self.hello = HelloSealer(token)
        self.data = DataSealer(token)
        self.max_data = max_data
        self._sessions: OrderedDict[bytes, ServerSession] = OrderedDict()
        # TAG_FOLLOWS data waiting for its SEAL: (session, counter) -> (key, data, since)
        self._held: OrderedDict[tuple[bytes, int], tuple[bytes, Any, float]] = OrderedDict()
        # room promised by a CONTINUE whose data has not come: (session, counter) ->
        # (bytes, since); counted with the held data, so that two clients announcing at
        # once cannot both be told there is room for what fits only once
        self._promised: OrderedDict[tuple[bytes, int], tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(
        self, raw: Any, key: Any, data: Any, *, tag_follows: bool = False
    ) -> tuple[Header, ServerSession | None]:
        """Authenticate one incoming message; ``(header, None)`` for a HELLO.

        ``data`` is what the message carries (``None``: nothing). Raises
        :class:`Refused` for anything that is not a fresh, authentic request
        of a known session; nothing in it may be used then. ``tag_follows``:
        the transport takes a staged PUT's data tag in a later SEAL (ZeroMQ).
        """
        try:
            h = parse_header(raw)
        except ProtocolError as e:
            raise Refused(Status.BAD_REQUEST, str(e)) from None
        if h.kind != Kind.REQUEST or h.status != 0:
            raise Refused(Status.BAD_REQUEST, "not a request (kind or status byte)")
        if h.key_len != len(key):
            raise Refused(
                Status.BAD_REQUEST, f"header declares a {h.key_len}-byte key, got {len(key)}"
            )
        carried = 0 if data is None else memoryview(data).nbytes
        if h.flags & Flags.TAG_FOLLOWS and not (tag_follows and h.flags & Flags.STAGED):
            raise Refused(Status.BAD_REQUEST, "TAG_FOLLOWS only on a staged ZeroMQ PUT")
        if h.flags & Flags.STAGED:
            if carried or h.op != Op.PUT:
                raise Refused(Status.BAD_REQUEST, "a staged announcement carries no data")
        elif carried != h.data_len:
            raise Refused(
                Status.BAD_REQUEST, f"header declares {h.data_len} data bytes, got {carried}"
            )
        if h.op == Op.HELLO:
            if carried or h.key_len:
                raise Refused(Status.BAD_REQUEST, "malformed HELLO")
            if not verify(self.hello, raw, key, None):
                raise Refused(Status.AUTH_FAILED, "authentication failed: wrong or missing token")
            return h, None
        with self._lock:
            session = self._authentic_session(h, raw, key)
            if h.counter <= session.last:
                raise Refused(
                    Status.REPLAYED,
                    f"request {h.counter} is not newer than {session.last}: replay refused",
                )
            else:
                session.last = h.counter
            self._sessions.move_to_end(h.session)
        return h, session

    def stage(self, session: ServerSession, h: Header, key: bytes) -> None:
        """Remember an announced PUT that got CONTINUE: its data may follow, once."""
        sid = session.sealer.session
        with self._lock:
            session.staged[h.counter] = (bytes(key), h.data_len)
            self._promised[(sid, h.counter)] = (h.data_len, time.monotonic())
            while len(session.staged) > 16:  # abandoned announcements are forgotten
                forgotten = next(iter(session.staged))
                session.staged.pop(forgotten)
                self._promised.pop((sid, forgotten), None)
        self.expire_held()

    def check_staged_data(
        self, raw: Any, key: Any, data: Any
    ) -> tuple[Header, ServerSession]:
        """Authenticate the data message of a two-step PUT (ZeroMQ).

        It repeats the announcement's header (same counter, same data tag) with
        the data: accepted only if that announcement got CONTINUE, and once.
        """
        try:
            h = parse_header(raw)
        except ProtocolError as e:
            raise Refused(Status.BAD_REQUEST, str(e)) from None
        carried = 0 if data is None else memoryview(data).nbytes
        if h.kind != Kind.REQUEST or h.status or h.op != Op.PUT or carried != h.data_len:
            raise Refused(Status.BAD_REQUEST, "malformed data of a two-step PUT")
        with self._lock:
            session = self._authentic_session(h, raw, key)
            if session.staged.pop(h.counter, None) != (bytes(key), h.data_len):
                raise Refused(Status.REPLAYED, "data of a PUT that got no CONTINUE (or a replay)")
            self._promised.pop((h.session, h.counter), None)  # the data itself counts now
            self._sessions.move_to_end(h.session)
        return h, session

    def _authentic_session(self, h: Header, raw: Any, key: Any) -> ServerSession:
        """The known session whose key signed this header (called holding the lock).

        The header carries no data here: a PUT's data is covered by its data tag,
        which the consumer checks, not the server.
        """
        session = self._sessions.get(h.session)
        if session is None:
            raise Refused(Status.UNKNOWN_SESSION, "unknown session: send HELLO first")
        if not verify(session.sealer, raw, key, None):
            raise Refused(Status.AUTH_FAILED, "authentication failed: wrong or missing token")
        return session

    def hold(self, session: ServerSession, h: Header, key: bytes, data: Any) -> None:
        """Keep the data of a TAG_FOLLOWS PUT, unstored, until its SEAL (bounded)."""
        sid = session.sealer.session
        with self._lock:
            self._held[(sid, h.counter)] = (bytes(key), data, time.monotonic())
            mine = [k for k in self._held if k[0] == sid]
            for k in mine[: max(0, len(mine) - HELD_PER_SESSION)]:
                del self._held[k]
        self.expire_held()

    def held_bytes(self) -> int:
        """Bytes of data held for their SEALs or promised room by a CONTINUE.

        Both are about to be stored, so the memory limit counts them already (the
        ZeroMQ server adds them to its table's): the check before a CONTINUE and
        the room it promises are one step on the server's thread.
        """
        with self._lock:
            held = sum(memoryview(data).nbytes for _, data, _ in self._held.values())
            return held + sum(nbytes for nbytes, _ in self._promised.values())

    def expire_held(self) -> None:
        """Drop held data and promises older than HELD_S (the client went away)."""
        now = time.monotonic()
        with self._lock:
            while self._held and next(iter(self._held.values()))[2] < now - HELD_S:
                self._held.popitem(last=False)
            while self._promised and next(iter(self._promised.values()))[1] < now - HELD_S:
                self._promised.popitem(last=False)

    def check_seal(self, raw: Any, key: Any) -> tuple[Header, ServerSession, Any]:
        """Authenticate a SEAL: ``(header, session, the held data)``, taken once.

        The header carries the data tag for the data held under its counter;
        it must repeat that PUT's key and data length.
        """
        try:
            h = parse_header(raw)
        except ProtocolError as e:
            raise Refused(Status.BAD_REQUEST, str(e)) from None
        if h.kind != Kind.SEAL or h.status or h.op != Op.PUT or h.flags or h.key_len != len(key):
            raise Refused(Status.BAD_REQUEST, "malformed SEAL")
        with self._lock:
            session = self._authentic_session(h, raw, key)
            held = self._held.get((h.session, h.counter))
            if (
                held is None
                or held[0] != bytes(key)
                or memoryview(held[1]).nbytes != h.data_len
            ):
                raise Refused(Status.REPLAYED, "SEAL of no data held (or a replay)")
            del self._held[(h.session, h.counter)]
            self._sessions.move_to_end(h.session)
        return h, session, held[1]

    def hello_reply(self, request: Header) -> tuple[bytes, bytes]:
        """Open a session for an authentic HELLO: the reply's header and data."""
        session_id = secrets.token_bytes(SESSION_SIZE)
        sealer = SessionSealer(self._token, session_id, self.server_id)
        with self._lock:
            self._sessions[session_id] = ServerSession(sealer)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        data = HELLO_REPLY.pack(session_id, self.server_id, self.max_data or 0)
        header = pack_header(
            self.hello, Op.HELLO, kind=Kind.REPLY, session=request.session, data=data
        )
        return header, data

    def reply(
        self,
        session: ServerSession,
        h: Header,
        key: bytes,
        status: int,
        data: Any = None,
        kind: int = Kind.REPLY,
        data_tag: tuple[bytes, bytes] | None = None,
    ) -> bytes:
        """The signed header of the reply to request ``h`` (bound to its counter and key).

        ``data_tag``: a stored object's tag, as its producer made it; data the
        server produced itself (status, error messages) is tagged here.
        """
        if data_tag is None:
            data_tag = self.data.tag(key, data)
        return pack_header(
            session.sealer,
            h.op,
            kind=kind,
            session=session.sealer.session,
            counter=h.counter,
            key=key,
            data=data,
            status=status,
            data_tag=data_tag,
        )

    def refusal(self, status: Status, message: str) -> tuple[bytes, bytes]:
        """A refusal signed over the server's own fields only (never the sender's)."""
        data = message.encode()
        header = pack_header(
            self.hello, 0, kind=Kind.REFUSAL, session=self.server_id, data=data, status=status
        )
        return header, data


class ClientSession:
    """A client's side of one session with one server (one connection)."""

    def __init__(self, token: bytes, address: str) -> None:
        self._token = token
        self.address = address
        self.hello = HelloSealer(token)
        self.data = DataSealer(token)
        self.nonce = b""
        self.sealer: SessionSealer | None = None
        self.max_data = 0
        self.pid = os.getpid()
        self._counter = 0

    @property
    def open(self) -> bool:
        # a forked child must never reuse its parent's session (and GCM nonces)
        return self.sealer is not None and self.pid == os.getpid()

    def hello_request(self) -> bytes:
        self.nonce = secrets.token_bytes(SESSION_SIZE)
        return pack_header(self.hello, Op.HELLO, session=self.nonce)

    def accept_hello(self, raw: Any, key: Any, data: Any) -> None:
        """Check the server's HELLO reply and derive the session key."""
        h = self._parse(raw)
        if h.kind == Kind.REFUSAL:
            self._raise_refusal(h, raw, key, data)
        payload = b"" if data is None else bytes(data)
        if (
            h.op != Op.HELLO
            or h.kind != Kind.REPLY
            or h.session != self.nonce
            or len(payload) != HELLO_REPLY.size
            or not verify(self.hello, raw, key, payload)
        ):
            raise AuthenticationError(
                f"the HELLO reply from {self.address} failed authentication: the client and "
                f"the server use different job tokens, or something answers in the server's "
                f"place (check WARPSTORE_TOKEN_FILE on node {node_name()})"
            )
        session_id, server_id, max_data = HELLO_REPLY.unpack(payload)
        self.sealer = SessionSealer(self._token, session_id, server_id)
        self.max_data = max_data
        self.pid = os.getpid()

    def next_counter(self) -> int:
        self._counter += 1
        return self._counter

    def request(
        self,
        op: int,
        key: bytes,
        data: Any,
        *,
        counter: int | None = None,
        staged: bool = False,
        tag_follows: bool = False,
    ) -> tuple[int, bytes]:
        """``(counter, header)`` of a new request (STAGED: announce only, no data).

        The data (if any) is tagged here, once, end to end (see :mod:`.protocol`);
        with ``tag_follows`` (a staged ZeroMQ PUT) not here but in :meth:`seal`.
        """
        assert self.sealer is not None
        counter = self.next_counter() if counter is None else counter
        nbytes = 0 if data is None else memoryview(data).nbytes
        flags = (Flags.STAGED if staged else 0) | (Flags.TAG_FOLLOWS if tag_follows else 0)
        header = pack_header(
            self.sealer,
            op,
            session=self.sealer.session,
            counter=counter,
            key=key,
            data=None if staged else data,
            data_len=nbytes,
            flags=flags,
            data_tag=NO_DATA_TAG if tag_follows else self.data.tag(key, data),
        )
        return counter, header

    def seal(
        self, counter: int, key: bytes, data: Any, sent: Callable[[float], bool] | None = None
    ) -> bytes:
        """The SEAL of TAG_FOLLOWS PUT ``counter``: its data tag, made now (see .protocol).

        ``sent(timeout)`` says whether the data has left (see ``DataSealer.tag``).
        """
        assert self.sealer is not None
        return pack_header(
            self.sealer,
            Op.PUT,
            kind=Kind.SEAL,
            session=self.sealer.session,
            counter=counter,
            key=key,
            data_len=memoryview(data).nbytes,
            data_tag=self.data.tag(key, data, sent),
        )

    def check_put_size(self, key: bytes, nbytes: int) -> None:
        """Refuse locally a PUT the server announced it can never take."""
        if self.max_data and nbytes > self.max_data:
            raise StoreFullError(
                f"server {self.address} takes objects of at most {self.max_data} bytes (its "
                f"memory limit); cannot take {nbytes} bytes for key {key.decode(errors='replace')}"
            )

    def check_reply(self, raw: Any, key: Any, data: Any) -> Header:
        """An authentic reply (REPLY or CONTINUE) of this session, or an exception.

        Refusals raise: :class:`UnknownSession`, :class:`AuthenticationError`
        or :class:`ConnectorError` with the server's words.
        """
        h = self._parse(raw)
        if h.kind == Kind.REFUSAL:
            self._raise_refusal(h, raw, key, data)
        assert self.sealer is not None
        if (
            h.kind not in (Kind.REPLY, Kind.CONTINUE)
            or h.session != self.sealer.session
            or not verify(self.sealer, raw, key, None)
        ):
            raise AuthenticationError(
                f"reply from {self.address} failed authentication; it was discarded unread"
            )
        if not self.data.verify(key, data, h.data_nonce, h.data_tag):
            raise AuthenticationError(
                f"the data of {bytes(key).decode(errors='replace')!r} from {self.address} "
                "failed authentication (altered in flight or in store); it was discarded unread"
            )
        return h

    def _parse(self, raw: Any) -> Header:
        try:
            return parse_header(raw)
        except ProtocolError as e:
            raise ConnectorError(f"malformed reply from {self.address}: {e}") from e

    def _raise_refusal(self, h: Header, raw: Any, key: Any, data: Any) -> None:
        authentic = not len(key) and verify(self.hello, raw, key, data)
        message = (b"" if data is None else bytes(data)).decode(errors="replace")
        if not authentic:
            if h.status == Status.AUTH_FAILED:
                raise AuthenticationError(
                    f"server {self.address} refused our token: the client and the server use "
                    f"different job tokens (check WARPSTORE_TOKEN_FILE on node {node_name()})"
                )
            raise AuthenticationError(
                f"reply from {self.address} failed authentication; it was discarded unread"
            )
        if h.status == Status.UNKNOWN_SESSION:
            raise UnknownSession(f"server {self.address}: {message}")
        if h.status == Status.AUTH_FAILED:
            raise AuthenticationError(f"server {self.address} refused our request: {message}")
        raise ConnectorError(f"server {self.address} refused our request: {message}")


class DataCipher:
    """Optional end-to-end encryption of object data (``encrypt=True`` on a connector).

    The putting client encrypts with AES-GCM under a key derived from the job
    token (``HKDF-SHA256(token, info="warpstore/2 data")``), a random 12-byte
    nonce and the object's id as associated data (a blob cannot be moved to
    another key); the server stores the ciphertext and never sees the
    plaintext; the getting client decrypts. Layout: ``b"WSe1" || nonce ||
    ciphertext || tag``.
    """

    MAGIC = b"WSe1"
    OVERHEAD = 4 + 12 + 16

    def __init__(self, token: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        from warpstore.server.protocol import _hkdf

        self._aead = AESGCM(_hkdf(token, b"warpstore/2 data"))

    def seal(self, object_id: bytes, data: Any) -> bytes:
        nonce = secrets.token_bytes(12)
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        return self.MAGIC + nonce + self._aead.encrypt(nonce, view, object_id)

    def open(self, object_id: bytes, blob: Any) -> bytes:
        from cryptography.exceptions import InvalidTag

        view = memoryview(blob)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        if len(view) < self.OVERHEAD or bytes(view[:4]) != self.MAGIC:
            raise ConnectorError(
                f"object {object_id.decode(errors='replace')} is not encrypted, but this "
                "connector has encrypt=True: it was stored by a connector without encryption"
            )
        try:
            return self._aead.decrypt(bytes(view[4:16]), view[16:], object_id)
        except InvalidTag:
            raise AuthenticationError(
                f"object {object_id.decode(errors='replace')} does not decrypt with this "
                "job's token: it was encrypted by another job, or altered"
            ) from None
