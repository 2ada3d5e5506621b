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
                              LOCATE=10 HAVE=11 RELAY=12 (relaying between nodes' caches)
    5       1     status      0 in requests (else refused); in replies one of ``Status``
    6       1     kind        REQUEST=1 REPLY=2 CONTINUE=3 REFUSAL=4 SEAL=5
    7       1     flags       STAGED=1 (a PUT announced before its data),
                              TAG_FOLLOWS=2 (ZeroMQ: its data tag comes in a SEAL), others 0
    8       16    session     server-chosen session id (HELLO: the client's nonce;
                              REFUSAL: the server's id)
    24      8     counter     u64, the request's number in its session, strictly
                              increasing; a reply carries its request's counter
    32      8     data_len    u64, exact length of the data (0: none)
    40      4     key_len     u32, exact length of the key (<= 1024)
    44      4     reserved    must be 0
    48      12    data_nonce  random nonce of the data tag (zero without data)
    60      16    data_tag    the data's tag, see below (zero without data)
    76      4     reserved    must be 0
    80      16    tag         the message's tag, see below

Sessions. A client opens a session on each connection with ``HELLO``: its
request carries a random 16-byte nonce, the server answers with a fresh random
session id, its own random 16-byte server id (new at each server start) and the
largest PUT it accepts (``max_data``). Both then derive the session key
``K = HKDF-SHA256(token, salt=server_id, info="warpstore/2 session" + session)``
and every later message of the session is tagged with AES-GCM under ``K``: the
header's first 80 bytes and the key are the GCM plaintext (its ciphertext is
discarded) and the 16-byte GCM tag is the message tag. The 12-byte GCM nonce is
``kind || 000000 || counter``: unique per key because the client numbers its
requests (and signs at most one SEAL per request) and the server signs at most
one CONTINUE and one REPLY per request it accepted.

Data. Data is tagged once, end to end, by whoever produced it: the tag is
``GMAC`` (AES-GCM with the data as associated data and the object's key as
plaintext) under ``K_data = HKDF-SHA256(token, info="warpstore/2 data")`` with
a random 12-byte nonce, carried in the header's ``data_nonce``/``data_tag``, so
the message tag covers it; data from ``CHUNKED_MIN`` (4 MiB) on is tagged in 1
MiB pieces on several threads and the tag is a GMAC over the pieces' tags (see
:class:`DataSealer`: as strong, and not bound to one core). The server stores
an object's data tag with it and sends it back with every GET; the client that
gets the object checks it (the producer's tag, bound to the object's key)
before anything else touches the data. The data is hashed twice per object
(once by the producer, once by each consumer) instead of at every hop: measured
in ``benchmarks/connector_throughput.py``, see the README. The server never
reads the data, so it does not check it either: data altered in flight is
refused by its consumer (never unpickled), and every other field by the server.

What the tags therefore bind: the direction (``kind``; a reply sent back as a
request fails), the server's identity (``server_id`` is in the key), the
session and the counter (a recorded request is refused when replayed: the
server keeps, per session, the highest counter it accepted), the header
(op, status, lengths), the key and, through the data tag, the data. Replies are
bound to their request by the counter and key; a client accepts one reply per
pending request and drops others.

HELLO messages and refusals are tagged with ``HMAC-SHA256(K_hello, header[:80]
+ key + data)`` truncated to 16 bytes, where ``K_hello = HKDF-SHA256(token,
info="warpstore/2 hello")``. A refusal (``kind=REFUSAL``: bad structure,
failed authentication, replay, unknown session) is signed over the server's
own fields only (op 0, its server id, counter 0, no key): the server never
signs a field chosen by an unauthenticated sender. A client uses a refusal only
to word its error; ``UNKNOWN_SESSION`` (the server restarted or forgot the
session) makes it open a new session and send the request again.

Two-step PUT (``flags=STAGED``): a PUT whose data the receiver should not take
before it agreed (UCX and Margo above ``EAGER_MAX``, ZeroMQ from 1 MiB) is first
announced: a REQUEST with ``data_len`` and the data tag set and no data. The
server checks the tag, the counter and that the store has room and answers
``CONTINUE`` (or a refusal or ``STORE_FULL``); only then does the data follow
(UCX: as the next message, into a buffer reserved for it; Margo: the server
pulls it; ZeroMQ: header, key and data, the header repeating the announcement,
accepted once and only after that CONTINUE).

Tag after the data (ZeroMQ, ``flags=STAGED|TAG_FOLLOWS``): so that the producer
tags the data while ZeroMQ's I/O thread sends it (the tag would otherwise delay
every large PUT by one GMAC pass), the announcement and the data message carry
a zero data tag, and the data tag follows in a ``SEAL`` message: kind ``SEAL``,
the PUT's counter (its GCM nonce differs from the request's by the kind), op,
key and ``data_len`` of the announcement, the data tag, no data. The server
holds data that came this way, unstored and invisible, until its SEAL arrives
(at most 2 per session, each for at most 30 s: ``auth.HELD_PER_SESSION``,
``HELD_S``), accepts one SEAL per held PUT and only then stores the object with
that tag and replies. Nothing changes for the consumer: an object is visible
only with its producer's tag, checked before anything touches it.

Admission (ZeroMQ only). Before any message of this protocol, a ZeroMQ
connection must be admitted at the ZMTP handshake with a one-time credential
made from the token (:mod:`.admission`): libzmq buffers a multipart message
whole before anyone could check its tags, so frames from peers without the
token must never be accepted at all. UCX and Margo take data above
``EAGER_MAX`` only after the server's go-ahead (two-step PUT, below).

Nothing in this protocol is ever unpickled: keys are opaque bytes, data is
opaque bytes, and the STATUS and HELLO replies are JSON / fixed binary.
Pickled objects are only turned back into objects by the client that asked
for them, after the reply's tag was verified.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import itertools
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "BODY_SIZE",
    "CHUNKED_MIN",
    "CHUNK_SIZE",
    "EAGER_MAX",
    "HEADER_SIZE",
    "HELLO_REPLY",
    "MAGIC",
    "MAX_KEY_LEN",
    "NO_DATA_TAG",
    "SESSION_SIZE",
    "TAG_SIZE",
    "DataSealer",
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
    "tag_from_hex",
    "tag_to_hex",
    "verify",
]

MAGIC = b"WSv2"
HEADER_SIZE = 96
MAX_KEY_LEN = 1024
EAGER_MAX = 64 * 1024  # UCX/Margo: larger data travels separately
SESSION_SIZE = 16
TAG_SIZE = 16
NONCE_SIZE = 12
NO_DATA_TAG = (bytes(NONCE_SIZE), bytes(TAG_SIZE))
_BODY = struct.Struct("<4sBBBB16sQQII12s16sI")  # the first 80 bytes, covered by the tag
BODY_SIZE = _BODY.size
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
    # relaying between nodes' caches (see ServerCore._locate): no data in requests.
    # LOCATE and HAVE go to the owner, key b"<object id>\0<asking node's server>"
    # (HAVE: + b"\0" + the data tag in hex); RELAY goes to a holder, key b"<object id>"
    LOCATE = 10
    HAVE = 11
    RELAY = 12


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
    SEAL = 5  # the data tag of a TAG_FOLLOWS PUT, after its data (ZeroMQ)


class Flags(enum.IntFlag):
    NONE = 0
    STAGED = 1
    TAG_FOLLOWS = 2


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
    data_nonce: bytes
    data_tag: bytes
    tag: bytes

    @property
    def data_tag_pair(self) -> tuple[bytes, bytes]:
        return self.data_nonce, self.data_tag


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
    """AES-GCM over header and key under one session's key (data: see DataSealer)."""

    def __init__(self, token: bytes, session: bytes, server_id: bytes) -> None:
        self.session = session
        self.server_id = server_id
        self._aead = AESGCM(_hkdf(token, b"warpstore/2 session" + session, salt=server_id))

    def tag(self, body: bytes, key: Buffer, data: Any) -> bytes:
        # nonce: kind (body[6]) and counter (body[24:32]), unique per message of a session
        nonce = body[6:7] + b"\0\0\0" + body[24:32]
        return self._aead.encrypt(nonce, body + bytes(key), None)[-TAG_SIZE:]


class DataSealer:
    """The end-to-end data tag: GMAC of the data, bound to the object's key.

    Two constructions, chosen by the data's length alone (so the verifier
    always knows which one applies; the header's ``data_len`` is covered by
    the message tag):

    * **single pass** (``len < CHUNKED_MIN``): ``tag = GMAC(K_data, nonce,
      AAD=data, plaintext=key)``, i.e. AES-GCM with the data as associated
      data and the object's key as plaintext, the ciphertext discarded;
      ``nonce`` is 12 random bytes.
    * **chunked** (``len >= CHUNKED_MIN``): GMAC runs at 5-6 GB/s per core
      here, two passes per object cost about 20 % of a 100 MiB put+get, and
      one GMAC pass cannot be split across threads. So: a one-time key per
      message ``K_msg = HMAC-SHA256(K_chunk, nonce)`` (``K_chunk =
      HKDF-SHA256(token, info="warpstore/2 data chunked")``, ``nonce`` the
      same 12 random bytes carried in the header); the data is cut into
      ``CHUNK_SIZE`` pieces, piece ``i`` is tagged ``t_i = GMAC(K_msg,
      nonce=i as 12 bytes big-endian, AAD=piece_i)`` on a small thread pool
      (one AESGCM object per thread: cryptography releases the GIL, but one
      object shared by threads serialises them), and the tag is ``GMAC(K_msg,
      nonce=0xff * 12, AAD=u64 data_len || u64 n || t_0 .. t_{n-1},
      plaintext=key)``.

    Why the chunked tag is as strong as the single pass: every (key, nonce)
    pair of GCM is used once (a fresh pseudo-random ``K_msg`` per message,
    the chunk indices are distinct and never all-ones), so each ``t_i`` and
    the final tag are GMAC outputs of a never-reused nonce, unforgeable and
    unpredictable without ``K_msg``. ``t_i`` never leaves the process; a
    changed piece changes its ``t_i`` except with GHASH's collision chance
    (about ``CHUNK_SIZE / 16 / 2**128``), and the final tag is a GMAC over the
    ordered list, so a changed, swapped (the nonce is the index), dropped or
    added piece, a changed length or another object key is a GMAC forgery of
    the final tag. A different token gives a different ``K_chunk``. The
    nonce is random as before, so the nonce-collision bound is the single
    pass's (96 bits). Verification recomputes the tag and compares in
    constant time.
    """

    def __init__(self, token: bytes) -> None:
        self._aead = AESGCM(_hkdf(token, b"warpstore/2 data"))
        self._chunk_key = _hkdf(token, b"warpstore/2 data chunked")

    def tag(
        self, key: Buffer, data: Any, sent: Callable[[float], bool] | None = None
    ) -> tuple[bytes, bytes]:
        """``(nonce, tag)`` for ``data`` stored under ``key`` (nothing for no data).

        ``sent`` (ZeroMQ's TAG_FOLLOWS PUT, whose data is being sent while it
        is tagged): ``sent(timeout)`` waits up to ``timeout`` s and says
        whether the data has left. Until then the pieces are tagged only on
        CPU the send leaves idle (see :func:`_gmac_pieces`), so the tag
        slows the send down as little as it can; the tag is the same.
        """
        view = _data_view(data)
        if view is None:
            return NO_DATA_TAG
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce, self._compute(nonce, key, view, sent)

    def verify(self, key: Buffer, data: Any, nonce: bytes, tag: bytes) -> bool:
        view = _data_view(data)
        if view is None:
            return (nonce, tag) == NO_DATA_TAG
        return hmac.compare_digest(self._compute(bytes(nonce), key, view), tag)

    def _compute(
        self, nonce: bytes, key: Buffer, view: Any, sent: Callable[[float], bool] | None = None
    ) -> bytes:
        if len(view) < CHUNKED_MIN:
            return self._aead.encrypt(nonce, bytes(key), view)[-TAG_SIZE:]
        msg_key = hmac.digest(self._chunk_key, nonce, "sha256")
        view = memoryview(view)  # slices of a memoryview share the buffer, bytes' would copy
        size = len(view)
        n = -(-size // CHUNK_SIZE)
        chunk_tags = b"".join(_gmac_pieces(msg_key, view, n, sent))
        lengths = struct.pack(">QQ", size, n)
        return AESGCM(msg_key).encrypt(_FINAL_NONCE, bytes(key), lengths + chunk_tags)[-TAG_SIZE:]


CHUNK_SIZE = 1 << 20  # the chunked data tag's piece size (part of the tag's definition)
CHUNKED_MIN = 4 << 20  # data from this size on uses the chunked tag (DataSealer)
_FINAL_NONCE = b"\xff" * NONCE_SIZE
# the process's tagging threads by kind ("" helps the caller, "idle" tags behind a send),
# each with the pid that made it (a forked child has none of its parent's threads)
_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}
_pool_lock = threading.Lock()
# how often a caller whose data is being sent checks whether the send has finished
_SENT_POLL_S = 0.002


def _tag_workers() -> int:
    """Threads that tag one object's pieces at once, the caller's included."""
    return max(1, min(4, os.cpu_count() or 1))


def _forget_pools() -> None:
    # a forked child has none of its parent's threads, and a lock another thread held
    global _pools, _pool_lock
    _pools, _pool_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _lower_priority() -> None:
    """Let this thread run only on CPU nothing else wants (SCHED_IDLE; else nice 19).

    The background taggers share the cores with the send they overlap (the
    client's and, on one host, the server's I/O threads): at normal priority
    they slowed the send by about as much as they saved (measured).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread (Linux)
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _gmac_pool(kind: str = "") -> ThreadPoolExecutor:
    """The process's tagging threads of one kind ("idle": at the lowest CPU priority)."""
    with _pool_lock:
        pool = _pools.get(kind)
        if pool is None or pool[0] != os.getpid():
            if kind == "idle":
                executor = ThreadPoolExecutor(
                    max_workers=_tag_workers(),
                    thread_name_prefix="warpstore-gmac-idle",
                    initializer=_lower_priority,
                )
            else:
                executor = ThreadPoolExecutor(
                    max_workers=max(1, _tag_workers() - 1), thread_name_prefix="warpstore-gmac"
                )
            pool = _pools[kind] = (os.getpid(), executor)
        return pool[1]


def _gmac_piece(aead: AESGCM, view: memoryview, i: int) -> bytes:
    """Piece ``i``'s tag (see :class:`DataSealer`)."""
    return aead.encrypt(
        i.to_bytes(NONCE_SIZE, "big"), b"", view[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
    )


class _SharedPieces:
    """One object's pieces, each tagged by whichever thread claims it next."""

    def __init__(self, msg_key: bytes, view: memoryview, n: int) -> None:
        self.msg_key, self.view, self.n = msg_key, view, n
        self.tags: list[bytes | None] = [None] * n
        self._claims = itertools.count()  # next() is atomic under the GIL
        self._finished = itertools.count(1)
        self.done = threading.Event()

    def _tag(self, aead: AESGCM, i: int) -> None:
        self.tags[i] = _gmac_piece(aead, self.view, i)
        if next(self._finished) == self.n:
            self.done.set()

    def work(self) -> None:
        """Tag unclaimed pieces until none is left."""
        aead = AESGCM(self.msg_key)
        while (i := next(self._claims)) < self.n:
            self._tag(aead, i)

    def finish(self) -> list[bytes]:
        """The caller's share: the unclaimed pieces, then any still being tagged elsewhere.

        A thread at the lowest priority may hold a claimed piece for long on a
        busy node: the caller tags it too (the same tag) instead of waiting.
        """
        self.work()
        aead = AESGCM(self.msg_key)
        for i, tag in enumerate(self.tags):
            if tag is None:
                self._tag(aead, i)
        return self.tags  # type: ignore[return-value]  # none is None any more


def _helpers(pool: ThreadPoolExecutor, pieces: _SharedPieces, count: int) -> list[Future[None]]:
    """Up to ``count`` pool threads working on ``pieces``; none if the pool takes no work.

    A pool refuses work once the interpreter is shutting down (a put from an
    atexit handler) or when it is broken: the caller then tags every piece.
    """
    futures: list[Future[None]] = []
    with contextlib.suppress(RuntimeError):
        for _ in range(count):
            futures.append(pool.submit(pieces.work))
    return futures


def _gmac_pieces(
    msg_key: bytes, view: memoryview, n: int, sent: Callable[[float], bool] | None = None
) -> list[bytes]:
    """The pieces' tags in order, made on min(4, cores) threads, the caller's included.

    Each thread claims the next untagged piece (so a thread that gets less CPU
    takes fewer). With ``sent`` (ZeroMQ's TAG_FOLLOWS PUT, whose data is being
    sent meanwhile), until the data has left only threads at the lowest CPU
    priority tag (they take the cycles the transfer leaves idle); then the
    caller joins at its own priority and takes every piece not yet done. On a
    node whose cores are all busy the tag therefore costs at most what tagging
    after the send would, and on one with idle cycles it is ready before the
    send ends. If neither the send nor the tagging finishes (a stalled peer on
    a busy node), the caller joins after the time a 1 GB/s send would take.
    """
    pieces = _SharedPieces(msg_key, view, n)
    workers = min(_tag_workers(), n)
    if sent is None:  # normal priority: the others finish their pieces soon, wait for them
        futures = _helpers(_gmac_pool(), pieces, workers - 1)
        pieces.work()
        for future in futures:
            future.result()
        return pieces.tags  # type: ignore[return-value]  # all tagged
    if _helpers(_gmac_pool("idle"), pieces, workers):
        join_by = time.monotonic() + max(0.5, len(view) / 1e9)
        while not pieces.done.wait(_SENT_POLL_S) and time.monotonic() < join_by:
            if sent(0):
                break
    return pieces.finish()


def tag_to_hex(tag: tuple[bytes, bytes]) -> bytes:
    """A data tag (nonce, tag) as hex, as LOCATE/HAVE/PUT_SHM keys carry it (no NUL bytes)."""
    return b"".join(tag).hex().encode()


def tag_from_hex(text: bytes) -> tuple[bytes, bytes]:
    """The data tag :func:`tag_to_hex` wrote; ``ValueError`` if it is not one."""
    raw = bytes.fromhex(text.decode("ascii"))
    if len(raw) != NONCE_SIZE + TAG_SIZE:
        raise ValueError(f"a data tag is {NONCE_SIZE + TAG_SIZE} bytes")
    return raw[:NONCE_SIZE], raw[NONCE_SIZE:]


def _data_view(data: Any) -> Any:
    if data is None:
        return None
    view = data if isinstance(data, bytes) else _bytes_view(data)
    return view if len(view) else None


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
    data_tag: tuple[bytes, bytes] = NO_DATA_TAG,
) -> bytes:
    """A signed header for a message carrying ``key`` and ``data``.

    ``data_len`` defaults to the size of ``data``; give it without ``data``
    for a STAGED announcement. ``data_tag`` is the data's ``(nonce, tag)``
    from :class:`DataSealer` (HELLO and refusals: none, their HMAC covers
    the data itself).
    """
    if data_len is None:
        data_len = 0 if data is None else memoryview(data).nbytes
    nonce, dtag = data_tag
    body = _BODY.pack(
        MAGIC, op, status, kind, flags, session, counter, data_len, len(key), 0, nonce, dtag, 0
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
    (
        magic, op, status, kind, flags, session, counter, data_len, key_len, reserved,
        data_nonce, data_tag, reserved2,
    ) = _BODY.unpack_from(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r} (not a warpstore v2 message)")
    if reserved or reserved2 or flags & ~int(Flags.STAGED | Flags.TAG_FOLLOWS):
        raise ProtocolError("reserved header fields are not zero")
    if kind not in Kind._value2member_map_:
        raise ProtocolError(f"unknown message kind {kind}")
    if key_len > MAX_KEY_LEN:
        raise ProtocolError(f"key length {key_len} exceeds {MAX_KEY_LEN}")
    return Header(
        op, status, kind, flags, session, counter, data_len, key_len, data_nonce, data_tag,
        bytes(header[_BODY.size : HEADER_SIZE]),
    )


def verify(sealer: Sealer, header: Buffer, key: Buffer, data: Any) -> bool:
    """Whether ``header``'s tag is right for this key and data (constant-time compare)."""
    body = bytes(header[: _BODY.size])
    if len(key) != _BODY.unpack_from(body)[8]:
        return False
    expected = sealer.tag(body, key, data)
    return hmac.compare_digest(expected, bytes(header[_BODY.size : HEADER_SIZE]))
