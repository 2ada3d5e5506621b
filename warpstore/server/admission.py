"""Admission to a node server's ZeroMQ socket: no frame from a peer without the token.

Why this exists: libzmq delivers a multipart message only whole, and its
high-water mark counts messages, not frames, so a peer that could merely
connect could send one message of many frames (each under ``MAXMSGSIZE``),
never finish it, and make the server hold every frame. The protocol's tags
(:mod:`.protocol`) are checked only once a message is complete: too late.

So the ROUTER socket speaks ZeroMQ's PLAIN mechanism and asks a ZAP handler
(RFC 27, this module's :class:`Admission`, a thread in the server) to admit
each connection during the ZMTP handshake, before libzmq accepts any message
frame from it. The PLAIN "password" is a one-time credential only a holder of
the job token can make::

    time (u64, seconds) || nonce (16 random bytes) ||
    HMAC-SHA256(HKDF(token, info="warpstore/2 admission"),
                "warpstore/2 admission" || port || time || nonce)[:16]

The server admits it once (it remembers each nonce for the time window) and
only within ``WINDOW_S`` seconds of its own clock, so a credential seen on the
wire cannot be used again, and the server's port is in the MAC, so it cannot
be taken to another port. A peer without the token is refused at the
handshake: a NULL-mechanism peer at the greeting, a PLAIN one after its
HELLO command. What it can make the server hold is then one handshake frame
of at most ``MAXMSGSIZE`` bytes per connection, for at most the handshake
interval (``HANDSHAKE_IVL_MS``); libzmq gives no way to bound that further.

Why PLAIN and not CURVE: CURVE would also admit by key, but it encrypts every
frame (measured on this 2-core VM, 100 MiB over loopback: put 455 ms vs 104
ms, get 441 vs 112 ms, see ``benchmarks/connector_throughput.py``), while
PLAIN costs nothing after the handshake. Confidentiality, where wanted, is the
protocol's ``encrypt=True``; integrity and replay protection are the
protocol's tags, as before.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import struct
import threading
import time
from hashlib import sha256
from typing import Any

import zmq

from warpstore.server.protocol import _hkdf

__all__ = [
    "HANDSHAKE_IVL_MS",
    "USERNAME",
    "WINDOW_S",
    "Admission",
    "credential",
    "port_of",
]

logger = logging.getLogger("warpstore.server")

USERNAME = b"warpstore/2"
WINDOW_S = 300  # clocks of a cluster's nodes agree far better than this (NTP)
HANDSHAKE_IVL_MS = 10_000  # a connection not admitted by then is closed (libzmq)
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
_INFO = b"warpstore/2 admission"
_CRED = struct.Struct("<Q16s16s")


def port_of(address: str) -> int:
    """The TCP port of ``tcp://host:port`` or ``tcp://[v6]:port``."""
    return int(address.rsplit(":", 1)[1])


def _mac(key: bytes, port: int, when: int, nonce: bytes) -> bytes:
    msg = _INFO + struct.pack("<HQ", port, when) + nonce
    return hmac.new(key, msg, sha256).digest()[:16]


def credential(token: bytes, port: int, now: float | None = None) -> bytes:
    """A fresh one-time PLAIN password for the server listening on ``port``."""
    when = int(time.time() if now is None else now)
    nonce = secrets.token_bytes(16)
    return _CRED.pack(when, nonce, _mac(_hkdf(token, _INFO), port, when, nonce))


class Admission:
    """The ZAP handler of one server: admits connections with a fresh credential.

    Runs in its own thread on the server's ZeroMQ context (ZAP is an inproc
    REP socket libzmq asks during each handshake), so admission never waits
    for the server's main loop and the main loop never polls a second socket.
    """

    def __init__(self, context: Any, token: bytes) -> None:
        self._key = _hkdf(token, _INFO)
        self.port = 0  # set once the ROUTER socket is bound; nothing is admitted before
        self.refused = 0
        self._seen: dict[bytes, float] = {}  # nonce -> when it may be forgotten
        self._stop = threading.Event()
        self._sock = context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)  # before the ROUTER binds: no handshake without us
        self._thread = threading.Thread(target=self._run, name="warpstore-zap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(200):
                    continue
                request = self._sock.recv_multipart()
                self._sock.send_multipart(self._answer(request))
        except zmq.ZMQError as e:  # the context is being terminated
            if not self._stop.is_set():
                logger.warning("ZeroMQ admission handler stopped: %s", e)
        finally:
            self._sock.close(linger=0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        # version, request id, domain, address, identity, mechanism, credentials...
        if len(request) < 6 or request[0] != b"1.0":
            return [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"bad", b"", b""]
        request_id, address, mechanism = request[1], request[3], request[5]
        ok, why = False, "not the PLAIN mechanism"
        if mechanism == b"PLAIN" and len(request) == 8:
            ok, why = self.admit(request[6], request[7])
        if ok:
            return [b"1.0", request_id, b"200", b"OK", USERNAME, b""]
        self.refused += 1
        if self.refused <= 10 or self.refused % 1000 == 0:
            logger.warning(
                "refused a ZeroMQ connection from %s: %s (%d refused so far)",
                address.decode(errors="replace"), why, self.refused,
            )
        return [b"1.0", request_id, b"400", why.encode(), b"", b""]

    def admit(self, username: bytes, password: bytes, now: float | None = None) -> tuple[bool, str]:
        """``(True, "")`` for a fresh credential of this server, else ``(False, why)``."""
        now = time.time() if now is None else now
        if username != USERNAME or len(password) != _CRED.size or not self.port:
            return False, "no warpstore credential (wrong or missing job token)"
        when, nonce, mac = _CRED.unpack(password)
        if not hmac.compare_digest(mac, _mac(self._key, self.port, when, nonce)):
            return False, "credential made without the job token (wrong token)"
        if abs(now - when) > WINDOW_S:
            return False, f"credential older than {WINDOW_S} s (or the clocks of the nodes differ)"
        if nonce in self._seen:
            return False, "credential used before (a replay)"
        if len(self._seen) > 4096:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
        self._seen[nonce] = now + 2 * WINDOW_S
        return True, ""
