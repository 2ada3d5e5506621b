"""``warpstore relay``: introduces endpoints to each other; no object data passes through it.

Endpoints connect over websockets and register with their UUID, proving that
they hold the relay's token: the relay sends a random challenge and the
endpoint answers ``HMAC-SHA256(token, challenge + uuid)``. A registered
endpoint may then send signalling messages (WebRTC offers and answers) to
another registered endpoint by UUID, and the relay forwards them with the
sender's UUID attached. That is all it does: the objects themselves travel
over the peers' direct (UDP, DTLS-encrypted) data channels.

Messages are JSON text frames; anything else, or anything before a successful
registration, closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from typing import Any

__all__ = ["Relay", "challenge_response"]

logger = logging.getLogger("warpstore.relay")

MAX_MESSAGE = 256 * 1024  # signalling only: an SDP is a few KiB


def challenge_response(token: bytes, challenge: str, uuid: str) -> str:
    return hmac.new(token, (challenge + uuid).encode(), hashlib.sha256).hexdigest()


class Relay:
    """A websockets server that registers endpoints and forwards their signalling."""

    def __init__(self, token: bytes, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token, self.host, self.port = token, host, port
        self.peers: dict[str, Any] = {}  # uuid -> websocket
        self.names: dict[str, str] = {}

    async def serve(self, ready: asyncio.Future[int] | None = None) -> None:
        from websockets.asyncio.server import serve

        async with serve(self._handle, self.host, self.port, max_size=MAX_MESSAGE) as server:
            self.port = server.sockets[0].getsockname()[1]
            logger.info("relay listening on ws://%s:%d", self.host, self.port)
            if ready is not None:
                ready.set_result(self.port)
            await asyncio.Future()  # until cancelled

    async def _handle(self, ws: Any) -> None:
        challenge = secrets.token_hex(16)
        uuid = None
        peer = getattr(ws, "remote_address", None)
        try:
            await ws.send(json.dumps({"type": "challenge", "challenge": challenge}))
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            uuid = str(hello.get("uuid", ""))
            expected = challenge_response(self.token, challenge, uuid)
            if hello.get("type") != "register" or not uuid or not hmac.compare_digest(
                expected, str(hello.get("response", ""))
            ):
                logger.warning("relay: refused a registration from %s (uuid %r)", peer, uuid)
                await ws.send(json.dumps({"type": "error", "error": "registration refused"}))
                uuid = None
                return
            old = self.peers.get(uuid)
            if old is not None:
                await old.close()
            self.peers[uuid] = ws
            self.names[uuid] = str(hello.get("name", ""))
            logger.info("relay: endpoint %s (%s) registered from %s", uuid, self.names[uuid], peer)
            await ws.send(json.dumps({"type": "registered", "uuid": uuid}))
            async for raw in ws:
                await self._forward(uuid, raw)
        except (asyncio.TimeoutError, ValueError, TypeError) as e:
            logger.warning("relay: dropped %s: %s", peer, e)
        except Exception as e:  # connection closed mid-way, and the like
            logger.info("relay: connection from %s ended: %s", peer, e)
        finally:
            if uuid is not None and self.peers.get(uuid) is ws:
                del self.peers[uuid]
                logger.info("relay: endpoint %s left", uuid)

    async def _forward(self, sender: str, raw: Any) -> None:
        msg = json.loads(raw)
        if msg.get("type") != "signal":
            return
        target = self.peers.get(str(msg.get("to")))
        if target is None:
            await self.peers[sender].send(
                json.dumps({"type": "unknown-peer", "peer": msg.get("to"), "id": msg.get("id")})
            )
            return
        await target.send(json.dumps({**msg, "from": sender}))


def run_relay(token: bytes, host: str, port: int) -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Relay(token, host, port).serve())
