"""The endpoint daemon: a local object store that peers read over direct WebRTC channels.

One daemon per endpoint (``warpstore endpoint start NAME``). Local processes
talk to it over a Unix socket in the endpoint's private directory (the file
system's permissions are the authentication). Other endpoints are reached
peer to peer: the relay only introduces them (signalling), then aiortc opens a
DTLS-encrypted SCTP data channel over UDP (ICE, with hole punching where NATs
allow), and objects travel on it in chunks.

Local socket protocol: a request is a 4-byte big-endian length, a JSON header
(``op``: ping, put, get, exists, evict; ``object_id``, ``endpoint``, ``size``;
optionally ``peer_timeout``, the seconds to wait for another endpoint)
and, for put, ``size`` bytes; the answer has the same shape (``status``: ok,
missing, error). Data channel protocol: a JSON text message per request
(``rid``, ``op``, ``object_id``), answered by a JSON header (``rid``,
``status``, ``size``) and then ``size`` bytes in binary messages of at most
``CHUNK`` bytes; each peer connection carries one request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import uuid as uuidlib
from pathlib import Path
from typing import Any

from warpstore.endpoint.config import EndpointConfig
from warpstore.endpoint.relay import challenge_response
from warpstore.server.runtime import read_token_file

__all__ = ["CHUNK", "Endpoint", "ObjectStore", "read_frame", "write_frame"]

logger = logging.getLogger("warpstore.endpoint")

CHUNK = 60_000  # below aiortc's 65536-byte SCTP message limit
HIGH_WATER = 4 * 2**20  # pause sending while this much is buffered on a channel
_LEN = struct.Struct(">I")
_SIZE = struct.Struct(">Q")
PEER_TIMEOUT = 60.0  # default of EndpointConfig.peer_timeout
MAX_PEER_TIMEOUT = 24 * 3600.0
MAX_OBJECT_SIZE = 1 << 36  # 64 GiB: a larger declared size is refused before any byte


# -- framing on the local socket ---------------------------------------------------------


async def write_frame(
    writer: asyncio.StreamWriter, header: dict[str, Any], data: Any = None
) -> None:
    raw = json.dumps(header).encode()
    writer.write(_LEN.pack(len(raw)) + raw)
    if data is not None:
        writer.write(data)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if n > 1 << 20:
        raise ValueError(f"header of {n} bytes")
    header: dict[str, Any] = json.loads(await reader.readexactly(n))
    return header


class ObjectStore:
    """Objects in memory, and on disk too when the endpoint persists them."""

    def __init__(self, directory: Path | None) -> None:
        self.objects: dict[str, bytes] = {}
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for path in directory.iterdir():
                if path.suffix != ".tmp":
                    self.objects[path.name] = path.read_bytes()
            logger.info("loaded %d persisted objects from %s", len(self.objects), directory)

    def put(self, object_id: str, data: bytes) -> None:
        if self.directory is not None:
            path = self.directory / object_id
            tmp = path.with_name(object_id + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self.objects[object_id] = data

    def get(self, object_id: str) -> bytes | None:
        return self.objects.get(object_id)

    def evict(self, object_id: str) -> None:
        self.objects.pop(object_id, None)
        if self.directory is not None:
            (self.directory / object_id).unlink(missing_ok=True)


def _valid_id(object_id: Any) -> str:
    if not isinstance(object_id, str) or not object_id.isalnum() or len(object_id) > 64:
        raise ValueError(f"bad object id {object_id!r}")
    return object_id


class _Peer:
    """One data channel to another endpoint, used for one request at a time."""

    def __init__(self, pc: Any, channel: Any) -> None:
        self.pc, self.channel = pc, channel
        self.lock = asyncio.Lock()
        self.opened = asyncio.get_running_loop().create_future()
        self.pending: asyncio.Future[tuple[dict[str, Any], bytes]] | None = None
        self.header: dict[str, Any] | None = None
        self.parts: list[bytes] = []
        self.received = 0
        self.rid: str | None = None  # the request being answered

    def on_message(self, message: Any) -> None:
        """A reply header (text) or a part of its data (binary), from the peer.

        Anything malformed fails the pending request at once with a clear
        error (it used to be dropped, leaving the request to wait out its
        timeout); a declared size above ``MAX_OBJECT_SIZE`` is refused before
        any of it is received.
        """
        if isinstance(message, str):
            try:
                header = json.loads(message)
                if not isinstance(header, dict):
                    raise ValueError("not a JSON object")
                size = header.get("size", 0)
                if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                    raise ValueError(f"bad size {size!r}")
                if size > MAX_OBJECT_SIZE:
                    raise ValueError(
                        f"declared size {size} exceeds the {MAX_OBJECT_SIZE}-byte limit"
                    )
                if self.rid is not None and header.get("rid") != self.rid:
                    raise ValueError("reply to another request")
            except ValueError as e:
                self._fail(f"malformed reply header from the peer: {e}")
                return
            self.header, self.parts, self.received = header, [], 0
        else:
            if self.header is None:
                self._fail("data from the peer without a reply header")
                return
            self.parts.append(message)
            self.received += len(message)
        if self.header is not None:
            size = int(self.header.get("size", 0))
            if self.received > size:
                self._fail(f"the peer sent {self.received} bytes for a {size}-byte reply")
            elif self.received == size:
                if self.pending is not None and not self.pending.done():
                    self.pending.set_result((self.header, b"".join(self.parts)))
                self.header = None

    def _fail(self, message: str) -> None:
        logger.warning("%s", message)
        self.header, self.parts, self.received = None, [], 0
        if self.pending is not None and not self.pending.done():
            self.pending.set_exception(ConnectionError(message))


class Endpoint:
    def __init__(self, config: EndpointConfig, relay_token: bytes | None) -> None:
        self.config = config
        self.relay_token = relay_token
        self.store = ObjectStore(config.directory / "objects" if config.persist else None)
        self.peers: dict[str, _Peer] = {}
        self._answers: dict[str, asyncio.Future[str]] = {}
        self._relay: Any = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifetime ------------------------------------------------------------------

    async def run(self) -> None:
        if self.config.addresses:
            import aioice.ice

            addresses = list(self.config.addresses)
            aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: addresses
        relay_task = None
        if self.config.relay_server:  # first: the socket appearing means "ready"
            await self._connect_relay()
            relay_task = asyncio.create_task(self._relay_loop())
        sock = self.config.directory / "endpoint.sock"
        sock.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._serve_local, path=str(sock))
        os.chmod(sock, 0o600)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        logger.info(
            "endpoint %s (%s) ready: %s, relay %s, %s",
            self.config.name,
            self.config.uuid,
            sock,
            self.config.relay_server or "none",
            "persistent" if self.config.persist else "in memory",
        )
        try:
            await self._stop.wait()
        finally:
            server.close()
            if relay_task is not None:
                relay_task.cancel()
            for peer in list(self.peers.values()):
                with contextlib.suppress(Exception):
                    await peer.pc.close()
            if self._relay is not None:
                with contextlib.suppress(Exception):
                    await self._relay.close()
            sock.unlink(missing_ok=True)
            logger.info("endpoint %s stopped", self.config.name)

    # -- relay (signalling only) -----------------------------------------------------

    async def _connect_relay(self) -> None:
        from websockets.asyncio.client import connect

        assert self.relay_token is not None
        ws = await connect(self.config.relay_server or "", max_size=256 * 1024)
        challenge = json.loads(await ws.recv())
        await ws.send(
            json.dumps(
                {
                    "type": "register",
                    "uuid": self.config.uuid,
                    "name": self.config.name,
                    "response": challenge_response(
                        self.relay_token, challenge["challenge"], self.config.uuid
                    ),
                }
            )
        )
        answer = json.loads(await ws.recv())
        if answer.get("type") != "registered":
            await ws.close()
            raise PermissionError(
                f"relay {self.config.relay_server} refused endpoint {self.config.name}: "
                f"{answer.get('error', answer)} (check the relay token file)"
            )
        self._relay = ws

    async def _relay_loop(self) -> None:
        try:
            async for raw in self._relay:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = None
                if not isinstance(msg, dict):
                    logger.warning("dropped a malformed message from the relay")
                    continue
                if msg.get("type") == "unknown-peer":
                    fut = self._answers.pop(str(msg.get("id")), None)
                    if fut is not None and not fut.done():
                        fut.set_exception(
                            ConnectionError(f"endpoint {msg.get('peer')} is not on the relay")
                        )
                elif msg.get("type") == "signal" and msg.get("kind") == "offer":
                    task = asyncio.create_task(self._accept(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif msg.get("type") == "signal" and msg.get("kind") == "answer":
                    fut = self._answers.pop(str(msg.get("id")), None)
                    if fut is not None and not fut.done():
                        fut.set_result(str(msg["sdp"]))
        except Exception as e:
            logger.warning("endpoint %s lost the relay: %s", self.config.name, e)

    async def _signal(self, to: str, kind: str, sdp: str, sid: str) -> None:
        if self._relay is None:
            raise ConnectionError(f"endpoint {self.config.name} has no relay to reach {to}")
        await self._relay.send(
            json.dumps({"type": "signal", "to": to, "kind": kind, "sdp": sdp, "id": sid})
        )

    # -- peer connections ----------------------------------------------------------------

    async def _connect(self, peer_uuid: str, timeout: float) -> _Peer:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        peer = self.peers.get(peer_uuid)
        if peer is not None and peer.pc.connectionState not in ("failed", "closed"):
            return peer
        pc = RTCPeerConnection()
        channel = pc.createDataChannel("warpstore", ordered=True)
        peer = _Peer(pc, channel)
        def opened() -> None:
            if not peer.opened.done():
                peer.opened.set_result(True)

        channel.on("open", opened)
        channel.on("message", peer.on_message)
        await pc.setLocalDescription(await pc.createOffer())
        sid = uuidlib.uuid4().hex
        answer = self._answers[sid] = asyncio.get_running_loop().create_future()
        await self._signal(peer_uuid, "offer", pc.localDescription.sdp, sid)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            sdp = await asyncio.wait_for(answer, timeout)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            await asyncio.wait_for(
                peer.opened, max(0.0, deadline - asyncio.get_running_loop().time())
            )
        except BaseException:
            self._answers.pop(sid, None)
            await pc.close()
            raise
        self.peers[peer_uuid] = peer
        return peer

    async def _accept(self, offer: dict[str, Any]) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection()

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            def on_message(message: Any) -> None:
                if not isinstance(message, str):  # requests are text; nothing else is expected
                    return
                try:
                    request = json.loads(message)
                except ValueError:
                    logger.warning("dropped a malformed request from a peer")
                    return
                if isinstance(request, dict):
                    queue.put_nowait(request)

            channel.on("message", on_message)
            task = asyncio.create_task(self._respond(channel, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._signal(str(offer["from"]), "answer", pc.localDescription.sdp, str(offer["id"]))
        self.peers.setdefault("in:" + str(offer["from"]) + ":" + str(offer["id"]), _Peer(pc, None))

    async def _respond(self, channel: Any, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            request = await queue.get()
            rid, op = request.get("rid"), request.get("op")
            try:
                object_id = _valid_id(request.get("object_id"))
                data = self.store.get(object_id)
            except ValueError as e:
                channel.send(
                    json.dumps({"rid": rid, "status": "error", "size": 0, "message": str(e)})
                )
                continue
            if op == "exists" or data is None:
                status = "ok" if data is not None else "missing"
                channel.send(json.dumps({"rid": rid, "status": status, "size": 0}))
                continue
            channel.send(json.dumps({"rid": rid, "status": "ok", "size": len(data)}))
            view = memoryview(data)
            for start in range(0, len(data), CHUNK):
                while channel.bufferedAmount > HIGH_WATER:
                    await asyncio.sleep(0.001)
                channel.send(bytes(view[start : start + CHUNK]))

    async def _remote(
        self, peer_uuid: str, op: str, object_id: str, timeout: float
    ) -> tuple[str, bytes]:
        """``op`` on another endpoint: connecting and its reply within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        where = (
            f"(peer_timeout {timeout:g} s: EndpointConnector(peer_timeout=...) or "
            f"`warpstore endpoint configure {self.config.name} --peer-timeout`)"
        )
        try:
            peer = await self._connect(peer_uuid, timeout)
        except asyncio.TimeoutError:
            raise ConnectionError(
                f"cannot reach endpoint {peer_uuid} from {self.config.name}: no peer "
                f"connection within {timeout:g} s {where}"
            ) from None
        except ConnectionError as e:
            raise ConnectionError(
                f"cannot reach endpoint {peer_uuid} from {self.config.name}: {e}"
            ) from e
        async with peer.lock:
            rid = uuidlib.uuid4().hex
            peer.rid = rid
            peer.pending = loop.create_future()
            peer.channel.send(json.dumps({"rid": rid, "op": op, "object_id": object_id}))
            try:
                header, data = await asyncio.wait_for(
                    peer.pending, max(0.0, deadline - loop.time())
                )
            except ConnectionError as e:  # a malformed reply: this channel is out of step
                self.peers.pop(peer_uuid, None)
                await peer.pc.close()
                raise ConnectionError(f"endpoint {peer_uuid}: {e}") from None
            except asyncio.TimeoutError:
                self.peers.pop(peer_uuid, None)
                await peer.pc.close()
                raise ConnectionError(
                    f"endpoint {peer_uuid} did not answer {op} of {object_id} within "
                    f"{timeout:g} s {where}"
                ) from None
        if header.get("status") == "error":
            raise ConnectionError(f"endpoint {peer_uuid}: {header.get('message')}")
        return str(header["status"]), data

    # -- local socket --------------------------------------------------------------------

    async def _serve_local(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    request = await read_frame(reader)
                except asyncio.IncompleteReadError:
                    return
                data = None
                if request.get("op") == "put":
                    (size,) = _SIZE.unpack(await reader.readexactly(_SIZE.size))
                    if size > MAX_OBJECT_SIZE:
                        raise ValueError(f"object of {size} bytes exceeds {MAX_OBJECT_SIZE}")
                    data = await reader.readexactly(size)
                try:
                    header, payload = await self._local_op(request, data)
                except (ValueError, ConnectionError, KeyError) as e:
                    header, payload = {"status": "error", "message": str(e)}, None
                if payload is not None:
                    header["size"] = len(payload)
                await write_frame(writer, header, payload)
        except Exception as e:
            logger.warning("endpoint %s: local client dropped: %s", self.config.name, e)
        finally:
            writer.close()

    async def _local_op(
        self, request: dict[str, Any], data: bytes | None
    ) -> tuple[dict[str, Any], bytes | None]:
        op = request.get("op")
        if op == "ping":
            return {
                "status": "ok",
                "uuid": self.config.uuid,
                "name": self.config.name,
                "relay": self._relay is not None,
                "objects": len(self.store.objects),
                "pid": os.getpid(),
            }, None
        if op == "put":
            object_id = uuidlib.uuid4().hex
            self.store.put(object_id, data or b"")
            return {"status": "ok", "object_id": object_id}, None
        object_id = _valid_id(request.get("object_id"))
        where = str(request.get("endpoint") or self.config.uuid)
        if where != self.config.uuid:
            if op == "evict":
                return {"status": "error", "message": "evict objects on their own endpoint"}, None
            timeout = _peer_timeout(request.get("peer_timeout"), self.config.peer_timeout)
            status, payload = await self._remote(where, str(op), object_id, timeout)
            return {"status": status}, (payload if op == "get" and status == "ok" else None)
        local = self.store.get(object_id)
        if op == "get":
            return ({"status": "ok"}, local) if local is not None else ({"status": "missing"}, None)
        if op == "exists":
            return {"status": "ok" if local is not None else "missing"}, None
        if op == "evict":
            self.store.evict(object_id)
            return {"status": "ok"}, None
        raise ValueError(f"unknown operation {op!r}")


def _peer_timeout(requested: Any, configured: float) -> float:
    """A request's ``peer_timeout`` (a client's choice), else the endpoint's own."""
    if requested is None:
        return configured
    if (
        isinstance(requested, bool)
        or not isinstance(requested, (int, float))
        or not 0 < requested <= MAX_PEER_TIMEOUT
    ):
        raise ValueError(
            f"peer_timeout {requested!r}: give seconds, more than 0 and at most "
            f"{MAX_PEER_TIMEOUT:g}"
        )
    return float(requested)


def run_endpoint(config: EndpointConfig) -> int:
    """The daemon's main: log to endpoint.log, write endpoint.pid, serve until SIGTERM."""
    logging.basicConfig(
        level=os.environ.get("WARPSTORE_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s [endpoint {config.name}] %(name)s: %(message)s",
    )
    for noisy in ("aioice", "aiortc"):  # per-packet INFO lines: keep the log readable
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token = None
    if config.relay_server:
        if not config.relay_token_file:
            logger.error("endpoint %s has a relay but no relay token file", config.name)
            return 2
        try:
            token = read_token_file(config.relay_token_file)
        except OSError as e:
            logger.error("endpoint %s: %s", config.name, e)
            return 2
    pid_file = config.directory / "endpoint.pid"
    pid_file.write_text(str(os.getpid()))
    try:
        asyncio.run(Endpoint(config, token).run())
    except (OSError, PermissionError) as e:
        logger.error("endpoint %s failed: %s", config.name, e)
        return 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
    return 0
