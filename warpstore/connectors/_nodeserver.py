"""What every node-server connector shares, whatever its transport.

A task's connector finds its node's server through the node's runtime file,
or starts one (one per node, under a file lock) on its first put. Keys carry
the owning server's full address, so ``get``, ``exists`` and ``evict`` go
straight to whichever node holds the object; a process that only reads never
needs a server of its own. Subclasses (ZeroMQ, UCX) only say which client
speaks to the servers and what their keys are called.

A proxy made on node A and resolved on node B rebuilds the connector from
:meth:`NodeServerConnector.config`, which carries the interface and port to
use but not node A's address: node B resolves its own.

Same node, shared memory (:mod:`warpstore.server.shm`): when a key belongs
to this node's server, a put writes the serialized object straight into a
new segment and registers it with one small ``PUT_SHM`` message, and a get
asks for the segment's name (``GET_SHM``) and maps it. What comes back is a
read-only mapping: :func:`warpstore.serialize.deserialize` makes numpy arrays
and bytes from it as read-only *views* (no copy at all), or, with
``copy=True``, private writable copies. This is the client base, so every
transport has it; ``shared_memory=False`` (or ``WARPSTORE_SHM=0``) turns it
off.

Same node, small objects (:mod:`warpstore.server.direct`): below
:data:`shm.INLINE_MAX` a put, get, exists or evict of this node's server's
key sends no message at all; the object is a file of the server's area,
which the server also reads for remote requests and counts against its
memory limit. A put that does not fit, or an area that is gone, falls back
to the socket, where the server decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from warpstore.connectors.protocols import ConnectorMixin
from warpstore.exceptions import ConnectorError, StoreFullError
from warpstore.serialize import BytesLike, _allocate
from warpstore.server import shm
from warpstore.server.auth import DataCipher
from warpstore.server.direct import DirectArea, area_path
from warpstore.server.protocol import NO_DATA_TAG, Op, Status, tag_to_hex
from warpstore.server.runtime import load_token
from warpstore.server.spawn import (
    ServerInfo,
    ServerSettings,
    ensure_server,
    find_server,
    stop_server,
)

__all__ = ["NodeServerConnector"]

logger = logging.getLogger(__name__)

_KEEP_MAPPED = 4  # copy=True: how many recently read segments stay mapped

# "not looked up yet", distinct from None ("no local server with shared memory")
_UNSET: Any = object()


def _close(mapping: Any) -> None:
    """Unmap a written segment now if nothing still views it (else when the last view goes)."""
    if mapping is not None:
        with contextlib.suppress(BufferError):
            mapping.close()


def _close_all(mappings: list[Any]) -> None:
    for mapping in mappings:
        _close(mapping)
    mappings.clear()  # the last references: the descriptors (and the pages) go now


class _SegmentAllocator:
    """The buffers :meth:`NodeServerConnector.put_into` gives a serializer.

    Called with a size, it returns a writable mapping of a new segment (a GPU
    array is copied from the device straight into it). Its :meth:`gather`
    takes a message as its parts (header, then the object's own buffers) and
    writes them into a new segment with ``writev(2)``: one copy, no mapping,
    which on tmpfs is the faster way to fill new memory. Small messages
    (under :data:`shm.INLINE_MAX`) get a plain ``bytearray`` for the socket.
    """

    def __init__(self, directory: Path, check: Callable[[int], None]) -> None:
        self.directory = directory
        self.check = check  # refuses sizes the server can never take, before any write
        self.made: list[str] = []
        self._mappings: list[Any] = []

    def __call__(self, n: int) -> Any:
        if n < shm.INLINE_MAX:
            return bytearray(n)  # small: the socket is cheaper than a segment
        self.check(n)
        name, mapping = shm.create_segment(self.directory, n)
        self.made.append(name)
        self._mappings.append(mapping)
        return memoryview(mapping) if mapping is not None else bytearray()

    def gather(self, parts: Sequence[Any], total: int) -> Any:
        if total < shm.INLINE_MAX:
            return None  # the serializer assembles it in a bytearray from __call__
        self.check(total)
        name = shm.write_segment(self.directory, parts)
        self.made.append(name)
        # lazy (only its size is read) and unlocked: not registered yet, nobody else reads it
        mapping = shm.open_segment(self.directory, name, total, lock=False)
        self._mappings.append(mapping)
        return memoryview(mapping) if mapping is not None else b""

    def release(self) -> None:
        for mapping in self._mappings:
            _close(mapping)
        self._mappings.clear()


class _Reservation:
    """A segment's pages allocated in a thread while the data is on the network.

    ``fallocate`` of new tmpfs pages costs about what the copy into them
    costs; started before the fetch and taken after it, it leaves only a
    memcpy for the fill (a node with idle cores does it for free). Both
    ``fallocate`` and the wait for the reply release the GIL.
    """

    def __init__(self, directory: Path, nbytes: int) -> None:
        self.directory, self.nbytes = directory, nbytes
        self.result: tuple[str, int] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = shm.reserve_segment(self.directory, self.nbytes)
        except Exception as e:  # full, say: the fill writes new pages as before
            logger.debug("could not reserve %d bytes in %s: %s", self.nbytes, self.directory, e)

    def take(self, nbytes: int) -> tuple[str, int] | None:
        """The reserved segment if it has the size that arrived (then it is the caller's)."""
        self.thread.join()
        if nbytes != self.nbytes:
            self.discard()
            return None
        result, self.result = self.result, None
        return result

    def discard(self) -> None:
        self.thread.join()
        if self.result is not None:
            name, fd = self.result
            self.result = None
            os.close(fd)
            shm.remove_segment(self.directory, name)


class NodeServerConnector(ConnectorMixin):
    """Stores objects in the memory of node servers; subclasses pick the transport.

    Args:
        port: port of this node's server if one must be started (default: any free port).
        address: IP this node's server binds to (default: ``interface``'s
            address, ``$WARPSTORE_ADDRESS``, or the host name's address).
        interface: network interface to bind to, e.g. ``hsn0`` on Slingshot.
        token: the job's secret; default: ``$WARPSTORE_TOKEN``, ``token_file``,
            ``$WARPSTORE_TOKEN_FILE`` or the job's token file (created if missing).
        token_file: file holding the token (mode 0600); carried in :meth:`config`.
        timeout: seconds to wait for a server's reply before raising.
        memory_limit: byte limit of a server this connector starts.
        runtime_dir: root of the runtime files (default: see :mod:`warpstore.server.runtime`).
        spawn: start this node's server if none is running.
        shared_memory: move same-node objects through shared memory, not the socket
            (off with ``encrypt``: segments would hold plaintext).
        copy: same-node gets return private copies instead of read-only views.
        cache_remote: keep other nodes' objects (64 KiB and up) in this node's server
            once fetched, for every rank of the node (needs a server on this node).
        encrypt: encrypt object data end to end with AES-GCM (the servers and the
            network only see ciphertext); every connector of the job must agree.
            Costs about one memory copy plus 1-2 GB/s of AES per byte, on put and get.
        ping_timeout: seconds a server has to answer the liveness ping before it
            counts as not running (or hung).
    """

    transport = ""
    key_type: Any = None

    def __init__(
        self,
        port: int | None = None,
        address: str | None = None,
        interface: str | None = None,
        token: str | bytes | None = None,
        *,
        token_file: str | None = None,
        timeout: float = 30.0,
        memory_limit: int | None = None,
        runtime_dir: str | None = None,
        spawn: bool = True,
        shared_memory: bool = True,
        copy: bool = False,
        cache_remote: bool = True,
        encrypt: bool = False,
        ping_timeout: float = 5.0,
    ) -> None:
        self.port = port
        self.address = address
        self.interface = interface
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.runtime_dir = runtime_dir
        self.spawn = spawn
        self.encrypt = encrypt
        self.ping_timeout = ping_timeout
        self._token, self.token_file = load_token(token, token_file, runtime_dir)
        self._cipher = DataCipher(self._token) if encrypt else None
        self._client = self._make_client(self._token, timeout)
        self._server: ServerInfo | None = None
        self._lock = threading.Lock()
        # End-to-end encryption keeps plaintext out of the servers: not in segments either.
        self.shared_memory = (
            shared_memory and not encrypt and os.environ.get("WARPSTORE_SHM", "1") != "0"
        )
        self.copy = copy
        self.cache_remote = cache_remote
        self._local: ServerInfo | None = None  # this node's server, found without spawning
        self._local_checked = -1e9
        # small objects written and read straight in this node's server's area
        # (server/direct.py): path -> handle, None where it cannot be opened
        self._areas: dict[tuple[str, int], DirectArea | None] = {}
        # copy=True: segments this process mapped lately, by name (see _copy_out)
        self._mapped: OrderedDict[str, Any] = OrderedDict()

    def _make_client(self, token: bytes, timeout: float) -> Any:
        raise NotImplementedError

    @staticmethod
    def _payload(data: Any) -> BytesLike:
        """The received reply data as a buffer (transports return their own types)."""
        return b"" if data is None else data

    def __repr__(self) -> str:
        where = self._server["address"] if self._server else "no local server yet"
        return f"{type(self).__name__}({where})"

    # -- the local server ------------------------------------------------------

    def _server_args(self) -> list[str]:
        """Transport-specific options for ``warpstore server start`` (none by default)."""
        return []

    def settings(self) -> ServerSettings:
        return ServerSettings(
            self.transport,
            address=self.address,
            interface=self.interface,
            port=self.port,
            token_file=self.token_file,
            memory_limit=self.memory_limit,
            runtime_dir=self.runtime_dir,
            extra_args=self._server_args(),
            # a token given directly has no file: the server gets it in its environment
            token=self._token if self.token_file is None else None,
        )

    def _ping(self, info: ServerInfo) -> bool:
        try:
            status, _ = self._client.request(info["address"], Op.STATUS, timeout=self.ping_timeout)
        except Exception:
            return False
        return bool(status == Status.OK)

    def local_server(self) -> ServerInfo:
        """This node's server (found or started on first call, then remembered)."""
        with self._lock:
            if self._server is None:
                self._server = ensure_server(self.settings(), self._ping, self.spawn)
                if self._server.get("spawned_here"):
                    self._register_elastic(self._server)
            return self._server

    def _register_elastic(self, info: ServerInfo) -> None:
        """A server started by a task inside a launched job joins the job's manifest."""
        manifest = os.environ.get("WARPSTORE_MANIFEST")
        if not manifest:
            return
        from warpstore.hpc.manifest import register_server

        logger.warning(
            "node %s had no server: started %s elastically, outside the job launcher; it has "
            "no Slingshot VNI, so it uses TCP (not CXI)",
            info.get("node"),
            info["address"],
        )
        register_server(manifest, info)

    def server_status(self, address: str | None = None) -> dict[str, Any]:
        """Counters of a server (default: this node's)."""
        import json

        target = address or self.local_server()["address"]
        _, data = self._client.request(target, Op.STATUS)
        result: dict[str, Any] = json.loads(bytes(self._payload(data)))
        return result

    def stop_server(self, address: str | None = None) -> None:
        """Ask a server (default: this node's) to stop, with an authenticated request."""
        target = address or self.local_server()["address"]
        self._client.request(target, Op.SHUTDOWN)
        if address is None:
            info = self._server
            self._server = None
            if info is not None:
                stop_server(info, None)

    # -- Connector protocol ------------------------------------------------------

    def close(self) -> None:
        """Close this process's connections; the servers keep running (and keep the data)."""
        self._forget_mappings()
        self._client.close()
        for area in self._areas.values():
            if area is not None:
                area.close()
        self._areas.clear()

    def _forget_mappings(self, directory: Path | None = None) -> None:
        """Unmap kept segments: all, or those whose object was evicted (file gone).

        An evicted segment's pages are freed when its last mapping goes, i.e.
        here: that (10 ms per 100 MiB) is done by a short-lived thread, not by
        the get that noticed it.
        """
        stale = [
            self._mapped.pop(name)
            for name in list(self._mapped)
            if directory is None or not (directory / name).exists()
        ]
        if stale and directory is not None:
            threading.Thread(target=_close_all, args=(stale,), daemon=True).start()
        else:
            _close_all(stale)

    def config(self) -> dict[str, Any]:
        # No address: the process rebuilding this connector is on another node
        # and must use its own. No token: only the path of the token file.
        return {
            "port": self.port,
            "interface": self.interface,
            "token_file": self.token_file,
            "timeout": self.timeout,
            "memory_limit": self.memory_limit,
            "runtime_dir": self.runtime_dir,
            "spawn": self.spawn,
            "shared_memory": self.shared_memory,
            "copy": self.copy,
            "cache_remote": self.cache_remote,
            "encrypt": self.encrypt,
            "ping_timeout": self.ping_timeout,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(**config)

    # -- same node: shared memory -------------------------------------------------

    def _local_info(self) -> ServerInfo | None:
        """This node's server with shared memory, found without spawning one (looked up
        again at most once a second while there is none: a reader may never put)."""
        if not self.shared_memory:
            return None
        info = self._server or self._local
        if info is None and time.monotonic() >= self._local_checked + 1.0:
            self._local_checked = time.monotonic()
            info = self._local = find_server(self.settings().directory())
        return info if info is not None and info.get("shm_dir") else None

    def _shm_dir(self, address: str, info: ServerInfo | None = _UNSET) -> Path | None:
        """This node's segment directory if ``address`` is this node's server, else ``None``.

        ``info``: this node's server as :meth:`_local_info` already returned it
        (a get asks once, not twice).
        """
        if info is _UNSET:
            info = self._local_info()
        if info is None or info.get("address") != address:
            return None
        return Path(info["shm_dir"])

    def _area(self, address: str, info: ServerInfo | None = _UNSET) -> DirectArea | None:
        """This node's server's area for small objects, if ``address`` is that server."""
        if info is _UNSET:
            info = self._local_info()
        if info is None or info.get("address") != address:
            return None
        where = (info["shm_dir"], info["pid"])
        try:
            return self._areas[where]
        except KeyError:
            pass
        path = area_path(info["shm_dir"], int(info["pid"]))
        area: DirectArea | None = None
        try:
            area = DirectArea(path, self._token)
        except OSError as e:  # an older server, or WARPSTORE_DIRECT=0 on the server
            logger.debug("no direct small-object area at %s: %s", path, e)
        self._areas[where] = area
        return area

    @staticmethod
    def _cache_key(key: Any) -> bytes:
        digest = hashlib.sha256(f"{key.address}\0{key.object_id}".encode()).hexdigest()
        return b"cache-" + digest[:40].encode()

    def _get_cached(self, key: Any, local: ServerInfo) -> BytesLike | None:
        """Another node's object through this node's cache: fetched by one rank, mapped by all.

        A hit is checked with the owner (``EXISTS``, a few bytes) so that an
        evicted object is never served from a stale copy. Ranks that miss at
        once meet at a per-object file lock: one takes it exclusively and
        fetches, the others wait on it shared and then all map the copy at
        once; so each node fetches each object once, from the owner or, when
        the owner says so, from a node that holds a copy (relaying: see
        :mod:`warpstore.server.core`).
        """
        here, directory = local["address"], Path(local["shm_dir"])
        ckey = self._cache_key(key)

        def lookup() -> BytesLike | None:
            status, reply = self._client.request(here, Op.GET_SHM, ckey)
            if status != Status.OK:
                return None
            try:
                return self._map(directory, ckey, reply)
            except shm.SegmentError:
                return None

        data = lookup()
        if data is not None:
            if self.exists(key):
                return data
            self._client.request(here, Op.EVICT, ckey)  # the owner evicted it
            return None
        locks = self.settings().directory() / "fetch-locks"
        locks.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(
            locks / f"{ckey.decode()}.lock",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    # A sibling is fetching it: wait with the others on a *shared*
                    # lock, so that all of them go on together when it is done
                    # (not one after another, each waiting for the previous one).
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    data = lookup()
                    if data is not None:
                        return data
                    continue  # its fetch failed or was not cached: fetch it ourselves
                have: list[bytes] = []
                try:
                    return self._fetch_into_cache(key, here, directory, ckey, lookup, have)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    # after the node's ranks were let go: they need not wait for the owner
                    for blob in have:  # our copy is in place: other nodes may fetch it here
                        with contextlib.suppress(ConnectorError):
                            self._client.request(key.address, Op.HAVE, blob)
        finally:
            os.close(fd)

    def _fetch_into_cache(
        self,
        key: Any,
        here: str,
        directory: Path,
        ckey: bytes,
        lookup: Callable[[], BytesLike | None],
        have: list[bytes],
    ) -> BytesLike | None:
        """The fetching rank (holding the object's lock): into this node, from the
        owner or from another node's copy (the owner says which: see :meth:`_locate`).
        Appends to ``have`` the ``HAVE`` to send the owner once the lock is released."""
        data = lookup()  # a sibling fetched it while we waited
        if data is not None:
            return data
        object_id = key.object_id.encode()
        where = self._locate(key, here)
        if where is None:
            return None
        if isinstance(where, bytearray):  # a small object, sent at once: not cached
            return where
        tag, holder, size = where
        limit = (self._local_info() or {}).get("memory_limit")
        fits = limit is None or size <= limit  # else the fill is refused: reserve nothing
        reserving = _Reservation(directory, size) if size >= shm.INLINE_MAX and fits else None
        try:
            frame: Any = None
            if holder is not None:
                try:
                    status, frame = self._client.request(holder, Op.RELAY, object_id)
                except ConnectorError as e:  # died, hung or refused: the owner still has it
                    logger.debug("relay of %s from %s failed: %s", key.object_id, holder, e)
                    status = Status.NOT_FOUND
                if status != Status.OK:
                    frame = None
            if frame is None:
                status, frame = self._client.request(key.address, Op.GET, object_id)
                if status != Status.OK:
                    return None
            data = self._payload(frame)
            view = memoryview(data).cast("B")
            reserved = reserving.take(view.nbytes) if reserving is not None else None
        finally:
            if reserving is not None:
                reserving.discard()  # what was not taken (a failed fetch, another size)
        if view.nbytes >= shm.INLINE_MAX:
            try:
                relay = (object_id, tag)
                self._put_segment(here, directory, ckey, view, True, relay, reserved)
            except Exception as e:  # full, say: the caller still gets its object
                logger.debug("could not cache %s on this node: %s", key.object_id, e)
            else:
                if tag != NO_DATA_TAG:
                    have.append(b"\0".join([object_id, here.encode(), tag_to_hex(tag)]))
        return data

    def _locate(
        self, key: Any, here: str
    ) -> tuple[tuple[bytes, bytes], str | None, int] | bytearray | None:
        """Ask the owner where to fetch ``key`` from: ``(data tag, holder or None for the
        owner itself, size or 0)``, the object itself if it is small, ``None`` if it
        is gone. While the owner already sends it to
        as many nodes as it serves at once, wait (polling) until one of them holds it."""
        blob = b"\0".join([key.object_id.encode(), here.encode()])
        deadline = time.monotonic() + self.timeout
        pause = 0.002
        while True:
            status, frame = self._client.request(key.address, Op.LOCATE, blob)
            if status != Status.OK:
                return None
            payload = memoryview(self._payload(frame)).cast("B")
            if payload.nbytes and payload[0] == ord("D"):
                return bytearray(payload[1:])
            reply = bytes(payload)
            kind, body = reply[:1], reply[1:]
            if kind == b"W":
                if time.monotonic() >= deadline:  # waited our whole timeout: the owner
                    return NO_DATA_TAG, None, 0
                time.sleep(pause)
                pause = min(pause * 1.5, 0.01)
                continue
            nonce, tag_len = len(NO_DATA_TAG[0]), sum(map(len, NO_DATA_TAG))
            if kind not in (b"O", b"H") or len(body) < tag_len + 8:
                raise ConnectorError(f"malformed LOCATE reply from {key.address}")
            tag = (body[:nonce], body[nonce:tag_len])
            (size,) = struct.unpack_from("<Q", body, tag_len)
            holder = body[tag_len + 8 :].decode("ascii") if kind == b"H" else None
            return tag, holder, size

    def _map(self, directory: Path, key: bytes, reply: Any) -> BytesLike:
        payload = memoryview(self._payload(reply)).cast("B")
        kind = payload[0] if payload.nbytes else 0
        if kind == ord("D"):  # a small object, inline
            return bytearray(payload[1:])
        if kind != ord("S"):
            raise shm.SegmentError("malformed segment reply")
        name, nbytes = shm.unpack_segment_reply(self._token, key, bytes(payload[1:]))
        if self.copy:
            return self._copy_out(directory, name, nbytes)
        mapping = shm.open_segment(directory, name, nbytes)
        return b"" if mapping is None else memoryview(mapping)

    def _copy_out(self, directory: Path, name: str, nbytes: int) -> BytesLike:
        """A private, writable copy of a segment (deserialize builds on it, no second copy).

        Copying out of a populated mapping measured 2x faster than read(2) on
        tmpfs, but mapping 100 MiB of 4 KiB pages and unmapping them again
        cost as much as half the copy. So the last few segments stay mapped
        (by name: a segment never changes while it has its name) and a get of
        the same object again only copies. A kept mapping holds the reader's
        lock, so its segment is unlinked, not recycled, when evicted; kept
        mappings of evicted objects are let go at this process's next get.
        Serialized bytes and str come back as the mapping itself (read-only,
        a :class:`~warpstore.server.shm.CopyMap`): deserialize copies them once.
        """
        self._forget_mappings(directory)
        mapping = self._mapped.get(name)
        if mapping is None:
            mapping = shm.open_segment(directory, name, nbytes, populate=True, views=False)
            if mapping is None:
                return b""
            self._mapped[name] = mapping
            while len(self._mapped) > _KEEP_MAPPED:
                _close(self._mapped.popitem(last=False)[1])
        else:
            self._mapped.move_to_end(name)
        if mapping[:1] in (b"B", b"S"):
            # bytes and str are built by copying out of the buffer anyway: given the
            # (read-only, copy-on-deserialize) mapping itself, that is the one copy
            return memoryview(mapping)
        buffer = _allocate(nbytes)
        memoryview(buffer)[:] = memoryview(mapping)
        return buffer

    def _refuse_oversized(self, address: str, key: bytes, nbytes: int) -> None:
        """Refuse, before writing a byte, an object larger than the server's memory limit."""
        info = self._local_info()
        limit = info.get("memory_limit") if info else None
        if limit is not None and nbytes > limit:
            raise StoreFullError(
                f"server {address} takes objects of at most {limit} bytes (its memory "
                f"limit); cannot take {nbytes} bytes for key {key.decode(errors='replace')}"
            )

    def _put_segment(
        self,
        address: str,
        directory: Path,
        key: bytes,
        view: memoryview,
        cache: bool = False,
        relay: tuple[bytes, tuple[bytes, bytes]] | None = None,
        reserved: tuple[str, int] | None = None,
    ) -> None:
        """Write ``view`` into a new segment and register it. ``cache``: a copy of another
        node's object; ``relay``: its object id and data tag, so that this node's server
        can send it on to other nodes (:meth:`ServerCore._relay`); ``reserved``: a segment
        of the right size whose pages are already allocated (:func:`shm.reserve_segment`)."""
        try:
            self._refuse_oversized(address, key, view.nbytes)
        except BaseException:
            if reserved is not None:
                os.close(reserved[1])
                shm.remove_segment(directory, reserved[0])
            raise
        name = shm.write_segment(directory, [view], reserved)
        try:
            fields = [key, name.encode(), b"%d" % view.nbytes] + ([b"cache"] if cache else [])
            if cache and relay is not None and relay[1] != NO_DATA_TAG:
                fields += [relay[0], tag_to_hex(relay[1])]
            self._client.request(address, Op.PUT_SHM, b"\0".join(fields))
        except BaseException:
            shm.remove_segment(directory, name)  # a no-op once the server adopted it
            raise

    # -- Connector protocol (data) -------------------------------------------------

    def evict(self, key: Any) -> None:
        area = self._area(key.address)
        if area is not None and area.evict(key.object_id.encode()):
            return  # a small same-node object: the server never held it
        self._client.request(key.address, Op.EVICT, key.object_id.encode())
        local = self._local_info() if self.cache_remote else None
        if local is not None and local["address"] != key.address:
            self._client.request(local["address"], Op.EVICT, self._cache_key(key))

    def exists(self, key: Any) -> bool:
        area = self._area(key.address)
        if area is not None and area.exists(key.object_id.encode()):
            return True
        status, _ = self._client.request(key.address, Op.EXISTS, key.object_id.encode())
        return bool(status == Status.OK)

    def get(self, key: Any) -> BytesLike | None:
        object_id = key.object_id.encode()
        local = self._local_info()
        if local is not None and local["address"] != key.address and self.cache_remote:
            return self._get_cached(key, local)
        area = self._area(key.address, local)
        if area is not None:  # a small same-node object: no message at all
            small = area.get(object_id)
            if small is not None:
                return small
        directory = self._shm_dir(key.address, local)
        if directory is not None:
            status, reply = self._client.request(key.address, Op.GET_SHM, object_id)
            if status != Status.OK:
                return None
            try:
                return self._map(directory, object_id, reply)
            except shm.SegmentError as e:  # evicted in between, say: ask the socket
                logger.debug("falling back to a socket get of %s: %s", key.object_id, e)
        status, frame = self._client.request(key.address, Op.GET, object_id)
        if status != Status.OK:
            return None
        # The received buffer is private to us and writable: deserialize can
        # build numpy arrays straight on top of it, with no copy.
        return self._open(key, self._payload(frame))

    def _open(self, key: Any, data: BytesLike) -> BytesLike:
        if self._cipher is None:
            return data
        return self._cipher.open(key.object_id.encode(), data)

    def _seal(self, key: Any, obj: BytesLike) -> BytesLike:
        if self._cipher is None:
            return obj
        return self._cipher.seal(key.object_id.encode(), obj)

    def get_batch(self, keys: Sequence[Any]) -> list[BytesLike | None]:
        by_server: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            by_server[key.address].append(i)
        out: list[BytesLike | None] = [None] * len(keys)
        local = self._local_info() if self.cache_remote else None
        if local is not None:  # other nodes' objects: through this node's cache, as get does
            remote = [i for a, idx in by_server.items() if a != local["address"] for i in idx]
            for address in {keys[i].address for i in remote}:
                del by_server[address]
            self._get_batch_cached(keys, remote, local, out)
        for address, indices in by_server.items():
            directory = self._shm_dir(address)
            area = self._area(address) if directory is not None else None
            if area is not None:  # small same-node objects first, straight from the area
                for i in indices:
                    out[i] = area.get(keys[i].object_id.encode())
                indices = [i for i in indices if out[i] is None]
                if not indices:
                    continue
            op = Op.GET if directory is None else Op.GET_SHM
            replies = self._client.pipeline(
                address, [(op, keys[i].object_id.encode(), None) for i in indices]
            )
            for i, (status, frame) in zip(indices, replies, strict=True):
                if status != Status.OK:
                    continue
                if directory is None:
                    out[i] = self._open(keys[i], self._payload(frame))
                    continue
                try:
                    out[i] = self._map(directory, keys[i].object_id.encode(), frame)
                except shm.SegmentError:
                    out[i] = self.get(keys[i])
        return out

    def _get_batch_cached(
        self, keys: Sequence[Any], indices: list[int], local: ServerInfo, out: list[Any]
    ) -> None:
        """Other nodes' objects of a batch: node-cache hits in one pipeline (each checked
        with its owner, in one pipeline per owner, as :meth:`_get_cached` does), misses
        fetched one by one under the per-object lock so each node fetches each once."""
        if not indices:
            return
        here, directory = local["address"], Path(local["shm_dir"])
        ckeys = {i: self._cache_key(keys[i]) for i in indices}
        replies = self._client.pipeline(here, [(Op.GET_SHM, ckeys[i], None) for i in indices])
        hits: dict[str, list[int]] = defaultdict(list)
        misses = []
        for i, (status, reply) in zip(indices, replies, strict=True):
            data = None
            if status == Status.OK:
                with contextlib.suppress(shm.SegmentError):
                    data = self._map(directory, ckeys[i], reply)
            if data is None:
                misses.append(i)
            else:
                out[i] = data
                hits[keys[i].address].append(i)
        for owner, idx in hits.items():
            found = self._client.pipeline(
                owner, [(Op.EXISTS, keys[i].object_id.encode(), None) for i in idx]
            )
            for i, (status, _) in zip(idx, found, strict=True):
                if status != Status.OK:  # the owner evicted it: never serve a stale copy
                    out[i] = None
                    self._client.request(here, Op.EVICT, ckeys[i])
        for i in misses:
            out[i] = self._get_cached(keys[i], local)

    def new_key(self, obj: BytesLike | None = None) -> Any:
        server = self.local_server()
        return self.key_type(uuid.uuid4().hex, server["address"], server["node"])

    def put(self, obj: BytesLike) -> Any:
        key = self.new_key()
        self.set(key, obj)
        return key

    def put_into(self, write: Callable[[Callable[[int], Any] | None], BytesLike]) -> Any:
        """Put what ``write(allocate)`` serializes, into a segment when the server is local.

        ``write`` serializes with ``allocate`` (``None`` when the server is on
        another node: ``write`` picks its own buffer) and returns the message.
        With shared memory the message is written once, straight into the
        segment every process of the node reads (see :class:`_SegmentAllocator`;
        a GPU array: straight from the device). :class:`~warpstore.store.Store`
        uses this when present.
        """
        key = self.new_key()
        directory = self._shm_dir(key.address)
        if directory is None:
            self.set(key, write(None))
            return key
        object_id = key.object_id.encode()
        allocate = _SegmentAllocator(
            directory, lambda n: self._refuse_oversized(key.address, object_id, n)
        )
        try:
            data = write(allocate)
            if not allocate.made:
                area = self._area(key.address)
                if area is None or not area.put(object_id, [data]):
                    self._client.request(key.address, Op.PUT, object_id, data)
                return key
            if len(allocate.made) != 1:  # the writer did not use our buffer after all
                raise RuntimeError("serializer allocated more than one buffer")
            nbytes = memoryview(data).nbytes
            del data
            allocate.release()
            name = allocate.made[0]
            blob = b"\0".join([key.object_id.encode(), name.encode(), b"%d" % nbytes])
            self._client.request(key.address, Op.PUT_SHM, blob)
        except BaseException:
            for name in allocate.made:
                shm.remove_segment(directory, name)
            raise
        return key

    def put_batch(self, objs: Sequence[BytesLike]) -> list[Any]:
        if not objs:
            return []
        keys = [self.new_key() for _ in objs]
        directory = self._shm_dir(keys[0].address)
        if directory is not None:  # same node: segments and the direct area, one by one
            for k, o in zip(keys, objs, strict=True):
                self.set(k, o)
            return keys
        self._client.pipeline(
            keys[0].address,
            [
                (Op.PUT, k.object_id.encode(), self._seal(k, o))
                for k, o in zip(keys, objs, strict=True)
            ],
        )
        return keys

    def set(self, key: Any, obj: BytesLike) -> None:
        view = memoryview(obj).cast("B")
        if view.nbytes < shm.INLINE_MAX:
            area = self._area(key.address)
            if area is not None and area.put(key.object_id.encode(), [view]):
                return
        directory = self._shm_dir(key.address) if view.nbytes >= shm.INLINE_MAX else None
        if directory is None:
            self._client.request(key.address, Op.PUT, key.object_id.encode(), self._seal(key, obj))
            return

        self._put_segment(key.address, directory, key.object_id.encode(), view)
