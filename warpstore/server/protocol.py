"""The node-server wire protocol (version 2), byte by byte.

Every message, request or reply, is a 64-byte header, a key and, when the
message carries data, the data. ZeroMQ sends them as 2 or 3 frames; UCX sends
header + key (+ data of at most ``EAGER_MAX`` bytes) as one tagged message,
larger data as a second one; Margo sends header + key + (data or a bulk
descriptor) as one RPC payload.

Header (little-endian)::

    offset  size  field
    0       4     magic       b"WSv2": protocol name and version
    4       1     op          PUT=1 GET=2 EXISTS=3 EVICT=4 STATUS=5 SHUTDOWN=6 HELLO=7
                              PUT_SHM=8 GET_SHM=9 (same node: see server/shm.py)
    5       1     status      0 in requests (else refused); in replies one of ``Status``
    6       1     kind        REQUEST=1 REPLY=2 CONTINUE=3 REFUSAL=4 DATA=5
    7       1     flags       STAGED=1 (a PUT announced before its data), others 0
    8       16    session     server-chosen session id (HELLO: the client's nonce;
                              REFUSAL: the server's id)
    24      8     counter     u64, the request's number in its session, strictly
                              increasing; a reply carries its request's counter
    32      8     data_len    u64, exact length of the data (0: none)
    40      4     key_len     u32, exact length of the key (<= 1024)
    44      4     reserved    must be 0
    48      16    tag         authentication tag, see below

Sessions. A client opens a session on each connection with ``HELLO``: its
request carries a random 16-byte nonce, the server answers with a fresh random
session id, its own random 16-byte server id (new at each server start) and the
largest PUT it accepts (``max_data``). Both then derive the session key
``K = HKDF-SHA256(token, salt=server_id, info="warpstore/2 session" + session)``
and every later message of the session is tagged with AES-GCM under ``K``:
the header's first 48 bytes and the key are the GCM *plaintext* (its
ciphertext is discarded) and the data is the *associated data*, so the 16-byte
GCM tag authenticates header, key and data at GMAC speed (no copy of the data,
which is only read). The 12-byte GCM nonce is ``kind || 000000 || counter``:
unique per key because the client numbers its requests and the server signs
at most one CONTINUE and one REPLY per request it accepted.

What the tag therefore binds: the direction (``kind``; a reply sent back as a
request fails), the server's identity (``server_id`` is in the key), the
session and the counter (a recorded request is refused when replayed: the
server keeps, per session, the highest counter it accepted), the header
(op, status, lengths), the key and the data. Replies are bound to their
request by the counter and key; a client accepts one reply per pending
request and drops others.

HELLO messages and refusals are tagged with ``HMAC-SHA256(K_hello, header[:48]
+ key + data)`` truncated to 16 bytes, where ``K_hello = HKDF-SHA256(token,
info="warpstore/2 hello")``. A refusal (``kind=REFUSAL``: bad structure,
failed authentication, replay, unknown session) is signed over the server's
own fields only (op 0, its server id, counter 0, no key): the server never
signs a field chosen by an unauthenticated sender. A client uses a refusal only
to word its error; ``UNKNOWN_SESSION`` (the server restarted or forgot the
session) makes it open a new session and send the request again.

Two-step PUT (``flags=STAGED``): a PUT whose data the receiver should not take
before it agreed (UCX above ``EAGER_MAX``; any transport may use it) is first
announced: a REQUEST with ``data_len`` set and no data, tagged over header and
key. The server checks the tag, the counter and that the store has room,
reserves the room and answers ``CONTINUE`` (or a refusal or ``STORE_FULL``).
The client then sends a ``DATA`` message with the same counter, key and
length, tagged over the data, and gets the final REPLY.

Nothing in this protocol is ever unpickled: keys are opaque bytes, data is
opaque bytes, and the STATUS and HELLO replies are JSON / fixed binary.
Pickled objects are only turned back into objects by the client that asked
for them, after the reply's tag was verified.
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "EAGER_MAX",
    "HEADER_SIZE",
    "HELLO_REPLY",
    "MAGIC",
    "MAX_KEY_LEN",
    "SESSION_SIZE",
    "TAG_SIZE",
    "Flags",
    "Header",
    "HelloSealer",
    "Kind",
    "Op",
    "ProtocolError",
    "Sealer",
    "SessionSealer",
    "Status",
    "pack_header",
    "parse_header",
    "peek_lengths",
    "verify",
]

MAGIC = b"WSv2"
HEADER_SIZE = 64
MAX_KEY_LEN = 1024
EAGER_MAX = 64 * 1024  # UCX/Margo: larger data travels separately
SESSION_SIZE = 16
TAG_SIZE = 16
_BODY = struct.Struct("<4sBBBB16sQQII")  # the first 48 bytes, covered by the tag
assert _BODY.size + TAG_SIZE == HEADER_SIZE
# HELLO reply data: session id, server id, max_data (u64, 0 = no limit)
HELLO_REPLY = struct.Struct("<16s16sQ")


class Op(enum.IntEnum):
    PUT = 1
    GET = 2
    EXISTS = 3
    EVICT = 4
    STATUS = 5
    SHUTDOWN = 6
    HELLO = 7
    # same node only (see warpstore.server.shm): no data in the request; a
    # short GET_SHM reply naming a segment (or holding a small object);
    # PUT_SHM's key is b"<object id>\0<segment name>\0<size>"
    PUT_SHM = 8
    GET_SHM = 9


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    ERROR = 2
    AUTH_FAILED = 3
    STORE_FULL = 4
    BAD_REQUEST = 5
    CONTINUE = 6  # header accepted, send the data
    UNKNOWN_SESSION = 7  # open a new session (HELLO) and send again
    REPLAYED = 8  # counter not above the session's last: a replay, refused


class Kind(enum.IntEnum):
    REQUEST = 1
    REPLY = 2
    CONTINUE = 3
    REFUSAL = 4
    DATA = 5


class Flags(enum.IntFlag):
    NONE = 0
    STAGED = 1


class ProtocolError(ValueError):
    """A message that does not follow this protocol."""


@dataclass(frozen=True)
class Header:
    op: int
    status: int
    kind: int
    flags: int
    session: bytes
    counter: int
    data_len: int
    key_len: int
    tag: bytes


Buffer = bytes | bytearray | memoryview


def _bytes_view(data: Any) -> memoryview:
    view = memoryview(data)
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _hkdf(token: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(token)


class Sealer:
    """Computes the tag of a message: header body (48 bytes), key, data."""

    def tag(self, body: bytes, key: Buffer, data: Any) -> bytes:
        raise NotImplementedError


class HelloSealer(Sealer):
    """HMAC-SHA256 under a key derived from the token: HELLO and refusals only."""

    def __init__(self, token: bytes) -> None:
        self._key = _hkdf(token, b"warpstore/2 hello")

    def tag(self, body: bytes, key: Buffer, data: Any) -> bytes:
        mac = hmac.new(self._key, body, "sha256")
        mac.update(key)
        if data is not None:
            mac.update(data)
        return mac.digest()[:TAG_SIZE]


class SessionSealer(Sealer):
    """AES-GCM (GMAC over the data) under one session's key."""

    def __init__(self, token: bytes, session: bytes, server_id: bytes) -> None:
        self.session = session
        self.server_id = server_id
        self._aead = AESGCM(_hkdf(token, b"warpstore/2 session" + session, salt=server_id))

    def tag(self, body: bytes, key: Buffer, data: Any) -> bytes:
        # nonce: kind (body[6]) and counter (body[24:32]), unique per message of a session
        nonce = body[6:7] + b"\0\0\0" + body[24:32]
        plain = body + bytes(key)
        aad: Any = None
        if data is not None:
            aad = data if isinstance(data, bytes) else _bytes_view(data)
            if not len(aad):
                aad = None
        return self._aead.encrypt(nonce, plain, aad)[-TAG_SIZE:]


def pack_header(
    sealer: Sealer,
    op: int,
    *,
    kind: int = Kind.REQUEST,
    session: bytes = bytes(SESSION_SIZE),
    counter: int = 0,
    key: bytes = b"",
    data: Any = None,
    data_len: int | None = None,
    status: int = 0,
    flags: int = 0,
) -> bytes:
    """A signed header for a message carrying ``key`` and ``data``.

    ``data_len`` defaults to the size of ``data``; give it without ``data``
    for a STAGED announcement (the tag then covers header and key only).
    """
    if data_len is None:
        data_len = 0 if data is None else memoryview(data).nbytes
    body = _BODY.pack(
        MAGIC, op, status, kind, flags, session, counter, data_len, len(key), 0
    )
    return body + sealer.tag(body, key, data)


def peek_lengths(header: Buffer) -> tuple[int, int]:
    """``(key_len, data_len)`` of a header whose tag is not checked yet.

    For transports that must size receive buffers before the key arrives;
    structural problems raise :class:`ProtocolError`. Nothing here may be
    trusted beyond sizing a bounded key buffer until :func:`verify` passed.
    """
    h = parse_header(header)
    return h.key_len, h.data_len


def parse_header(header: Buffer) -> Header:
    """Parse (not authenticate) a header; structural problems raise ProtocolError."""
    if len(header) != HEADER_SIZE:
        raise ProtocolError(f"header is {len(header)} bytes, expected {HEADER_SIZE}")
    magic, op, status, kind, flags, session, counter, data_len, key_len, reserved = (
        _BODY.unpack_from(header)
    )
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r} (not a warpstore v2 message)")
    if reserved or flags & ~int(Flags.STAGED):
        raise ProtocolError("reserved header fields are not zero")
    if kind not in Kind._value2member_map_:
        raise ProtocolError(f"unknown message kind {kind}")
    if key_len > MAX_KEY_LEN:
        raise ProtocolError(f"key length {key_len} exceeds {MAX_KEY_LEN}")
    return Header(
        op, status, kind, flags, session, counter, data_len, key_len,
        bytes(header[_BODY.size : HEADER_SIZE]),
    )


def verify(sealer: Sealer, header: Buffer, key: Buffer, data: Any) -> bool:
    """Whether ``header``'s tag is right for this key and data (constant-time compare)."""
    body = bytes(header[: _BODY.size])
    if len(key) != _BODY.unpack_from(body)[8]:
        return False
    expected = sealer.tag(body, key, data)
    return hmac.compare_digest(expected, bytes(header[_BODY.size : HEADER_SIZE]))
