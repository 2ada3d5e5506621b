"""The node-server wire protocol, byte by byte.

Every message, request or reply, is two or three frames (ZeroMQ frames; the
UCX transport sends header, key and data of at most ``EAGER_MAX`` bytes as one
tagged UCX message, larger data as a second one):

    frame 0: header, exactly 64 bytes
    frame 1: key, ``key_len`` bytes (may be empty)
    frame 2: data, ``data_len`` bytes, present only when ``data_len > 0``

Header (little-endian)::

    offset  size  field
    0       4     magic       b"WSv1": protocol name and version
    4       1     op          PUT=1 GET=2 EXISTS=3 EVICT=4 STATUS=5 SHUTDOWN=6
                              PUT_SHM=7 GET_SHM=8 (same node: see server/shm.py)
    5       1     status      0 in requests; in replies one of ``Status``
    6       2     flags       reserved, must be 0
    8       8     request_id  u64 chosen by the client, echoed in the reply
    16      8     data_len    u64, exact length of the data frame (0: no frame)
    24      4     key_len     u32, exact length of the key frame (<= 1024)
    28      4     reserved    must be 0
    32      32    tag         HMAC-SHA256(token, header[0:32] + key)

The tag authenticates every header, request and reply alike, with the job's
shared secret token: a server refuses (``Status.AUTH_FAILED``) any request
whose tag does not verify, and a client refuses any reply whose tag does not
verify or whose request id, op or key differ from its request. Because the
tag covers ``data_len`` and ``request_id``, a reply cannot be swapped for
another one; the data frame itself is not MAC'd (hashing 100 MiB would cost
more than moving it), so its integrity rests on the transport (TCP, RDMA).

UCX only: the receiver of a tagged message must post a buffer first, so the
first message of each request or reply goes into a buffer of
``HEADER_SIZE + MAX_KEY_LEN + EAGER_MAX`` bytes and the lengths are then read
from its header (:func:`peek_lengths`); data larger than ``EAGER_MAX`` follows
in a message of exactly its size. A PUT of more than ``EAGER_MAX`` bytes is two-step: the
client sends header and key, the server answers ``CONTINUE`` (or a refusal:
wrong token, store full) and only then does the client send the data, so a
refused PUT never leaves unread bytes in the stream.

Nothing in this protocol is ever unpickled: keys are opaque bytes, data is
opaque bytes, and the STATUS reply is JSON. Pickled objects are only turned
back into objects by the client that asked for them, after the reply's tag
was verified.
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass

__all__ = [
    "EAGER_MAX",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_KEY_LEN",
    "Header",
    "Op",
    "ProtocolError",
    "Status",
    "pack_header",
    "peek_lengths",
    "unpack_header",
]

MAGIC = b"WSv1"
HEADER_SIZE = 64
MAX_KEY_LEN = 1024
EAGER_MAX = 64 * 1024  # UCX: larger PUTs wait for CONTINUE before sending data
_BODY = struct.Struct("<4sBBHQQII")  # the first 32 bytes, covered by the tag
TAG_SIZE = 32
assert _BODY.size + TAG_SIZE == HEADER_SIZE


class Op(enum.IntEnum):
    PUT = 1
    GET = 2
    EXISTS = 3
    EVICT = 4
    STATUS = 5
    SHUTDOWN = 6
    # same node only (see warpstore.server.shm): no data frame either way but
    # a short, separately MAC'd GET_SHM reply; PUT_SHM's key frame is
    # b"<object id>\0<segment name>\0<size>", covered by the header's tag
    PUT_SHM = 7
    GET_SHM = 8


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    ERROR = 2
    AUTH_FAILED = 3
    STORE_FULL = 4
    BAD_REQUEST = 5
    CONTINUE = 6  # UCX: header accepted, send the data


class ProtocolError(ValueError):
    """A message that does not follow this protocol."""


@dataclass(frozen=True)
class Header:
    op: int
    status: int
    request_id: int
    data_len: int
    key_len: int
    tag: bytes


def _tag(token: bytes, body: bytes, key: bytes | bytearray | memoryview) -> bytes:
    # hmac.digest() is the one-shot C path: about half the cost of hmac.new()
    return hmac.digest(token, body + bytes(key), "sha256")


def pack_header(
    token: bytes,
    op: int,
    *,
    key: bytes = b"",
    request_id: int = 0,
    data_len: int = 0,
    status: int = 0,
) -> bytes:
    """Build a signed header for a message with ``key`` and ``data_len`` bytes of data."""
    body = _BODY.pack(MAGIC, op, status, 0, request_id, data_len, len(key), 0)
    return body + _tag(token, body, key)


def peek_lengths(header: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(key_len, data_len)`` of a header whose tag is not checked yet.

    For transports that must size receive buffers before the key arrives;
    structural problems raise :class:`ProtocolError`. Nothing here may be
    trusted beyond sizing a bounded key buffer until :func:`unpack_header`
    has verified the tag.
    """
    if len(header) != HEADER_SIZE:
        raise ProtocolError(f"header is {len(header)} bytes, expected {HEADER_SIZE}")
    magic, _op, _status, flags, _rid, data_len, key_len, reserved = _BODY.unpack_from(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r} (not a warpstore v1 message)")
    if flags or reserved:
        raise ProtocolError("reserved header fields are not zero")
    if key_len > MAX_KEY_LEN:
        raise ProtocolError(f"key length {key_len} exceeds {MAX_KEY_LEN}")
    return key_len, data_len


def unpack_header(
    token: bytes, header: bytes | bytearray | memoryview, key: bytes | bytearray | memoryview
) -> tuple[Header, bool]:
    """Parse ``header`` and check its tag against ``key``.

    Returns the header and whether it authenticated. Structural problems
    (wrong size, magic, reserved bits, key length) raise :class:`ProtocolError`
    before any cryptography is done.
    """
    key_len, data_len = peek_lengths(header)  # the structural checks
    if key_len != len(key):
        raise ProtocolError(f"header declares a {key_len}-byte key, frame has {len(key)}")
    _, op, status, _, request_id, _, _, _ = _BODY.unpack_from(header)
    parsed = Header(op, status, request_id, data_len, key_len, bytes(header[_BODY.size :]))
    expected = _tag(token, bytes(header[: _BODY.size]), key)
    return parsed, hmac.compare_digest(expected, parsed.tag)
