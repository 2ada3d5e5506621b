"""Hand-made protocol-v2 messages for tests: a raw session and a reply reader.

Tests of bad input need to send what no warpstore client would send (a replay,
a wrong tag, a reply as a request); this opens a session the way clients do
and leaves every later byte to the test.
"""

from __future__ import annotations

import zmq

from warpstore.server.admission import USERNAME, credential, port_of
from warpstore.server.auth import ClientSession
from warpstore.server.protocol import HEADER_SIZE, Kind, parse_header, verify


class RawZMQ:
    """A DEALER socket to a server, with (optionally) an open session."""

    def __init__(
        self, address: str, token: bytes, timeout_ms: int = 5000, password: bytes | None = None
    ) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        # admitted at the ZeroMQ handshake like a client (server/admission.py), unless the
        # test hands in its own (recorded, forged) credential
        self.sock.setsockopt(zmq.PLAIN_USERNAME, USERNAME)
        self.sock.setsockopt(
            zmq.PLAIN_PASSWORD, password or credential(token, port_of(address))
        )
        self.sock.connect(address)
        self.session = ClientSession(token, address)

    def hello(self) -> ClientSession:
        self.sock.send_multipart([self.session.hello_request(), b""])
        frames = self.sock.recv_multipart()
        self.session.accept_hello(frames[0], frames[1], frames[2])
        return self.session

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def reply(self) -> tuple[int, int, bytes, list[bytes]]:
        """``(kind, status, body, frames)`` of the next message, its tag checked."""
        frames = self.sock.recv_multipart()
        return (*check_reply(self.session, frames), frames)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def check_reply(session: ClientSession, frames: list[bytes]) -> tuple[int, int, bytes]:
    """Kind, status and body of a server message; asserts that its tag verifies.

    Refusals are signed with the hello key over the server's own fields only:
    no key, no counter, the server id in place of the session.
    """
    assert len(frames[0]) == HEADER_SIZE
    h = parse_header(frames[0])
    body = frames[2] if len(frames) > 2 else b""
    if h.kind == Kind.REFUSAL:
        assert verify(session.hello, frames[0], frames[1], body or None)
        assert h.counter == 0 and h.op == 0 and frames[1] == b""
    else:
        assert session.sealer is not None
        assert verify(session.sealer, frames[0], frames[1], body or None)
    return h.kind, h.status, bytes(body)
