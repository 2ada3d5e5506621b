"""The transport-independent heart of a node's storage server.

An in-memory object table with a byte limit, per-key metadata and counters.
Transports (ZeroMQ here; UCX and Margo plug into the same core) parse and
authenticate messages, then call :meth:`ServerCore.handle`; the core never
sees a socket, and a transport never touches the table directly.

Stored values are whatever buffer object the transport received (a ZeroMQ
frame, a UCX receive buffer): the core keeps that buffer as it is, so a large
object is held once, never copied into a second Python object.

With shared memory enabled (:meth:`ServerCore.enable_shm`, done by every
server that ``warpstore server start`` runs) objects also live in segments
of :mod:`warpstore.server.shm`: a same-node put arrives as a segment
(``PUT_SHM``), and a same-node get (``GET_SHM``) of an object that came over
the network moves it into a segment once and from then on only hands out its
name. Remote gets of segment objects send the mapping itself. The byte limit
counts each object once, wherever it lives. Because this is the core, every
transport (ZeroMQ, UCX, Margo) gets it.

Small same-node objects never reach the core at all (:mod:`warpstore.server.direct`):
clients keep them as files of the server's area. The core makes the area, counts it
in the byte limit (under the area's lock), answers remote GET/EXISTS/EVICT from it, and
adds its objects and operations to :meth:`ServerCore.status`.
An evicted segment that no process maps any more goes to a small pool
(:func:`warpstore.server.shm.recycle_segment`) for the next same-node put to
overwrite: writing into existing pages costs a memcpy, filling new ones
twice that. The pool is bounded (``$WARPSTORE_SHM_POOL`` bytes, default
512 MiB, at most 8 segments, each kept at most 30 s) and, with a memory
limit, counts against it: it is the first thing dropped when room is needed.

Relaying between nodes (``LOCATE``/``HAVE``/``RELAY``): when many nodes fetch
one object into their node caches, a node is pointed at a node that already
holds a copy if one has room (each holder serves at most :data:`RELAY_FANOUT`
others, ``$WARPSTORE_RELAY_FANOUT``, 0 = off), else the owner sends it itself,
to at most 2 x :data:`RELAY_FANOUT` nodes at a time; the rest wait for a holder.
So N nodes do not cost the owner's link N transfers in sequence: a tree. The
owner hands out only holders that registered (``HAVE``) the object's current
data tag, and forgets them when the object is evicted or replaced; a holder
serves a copy with the producer's data tag, so the reader checks it as it
would the owner's. A holder that fails or dropped its copy costs the reader
one failed request, then it asks the owner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import shutil
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warpstore.server import shm
from warpstore.server.direct import (
    COUNTERS,
    DirectArea,
    SweepTimer,
    area_path,
    direct_bytes,
    set_server_bytes,
    sweep_area,
    sweep_areas,
)
from warpstore.server.protocol import NO_DATA_TAG, DataSealer, Op, Status, tag_from_hex
from warpstore.server.spare import SPARE_MIN, SpareMaker
from warpstore.units import format_size, parse_size

logger = logging.getLogger("warpstore.server")

__all__ = ["RELAY_FANOUT", "Entry", "ObjectTable", "RateLimitedLog", "Reply", "ServerCore"]

RELAY_FANOUT = 2  # nodes each holder sends one object to
_SIZE = struct.Struct("<Q")  # an object's size in LOCATE replies
# The owner sends an object to 2 x fanout nodes at once before it makes later ones wait for
# a holder: waiting costs a copy's transfer plus its fill into the holder's shared memory
# (new tmpfs pages, slower than a fast NIC), so it pays only once the owner's link is busy.
OWNER_SENDS_PER_FANOUT = 2
RELAY_PENDING_S = 5.0  # a node's fetch that never said HAVE stops counting after this


@dataclass
class _Relays:
    """Who holds (or is fetching straight from the owner) copies of one owned object."""

    holders: dict[str, int] = field(default_factory=dict)  # node server -> nodes sent to
    pending: dict[str, float] = field(default_factory=dict)  # fetching from us, since


@dataclass
class Entry:
    """One stored object and what is known about it."""

    data: Any
    nbytes: int
    created: float
    reads: int = 0
    segment: str | None = None  # name of its shared-memory segment, if it has one
    cached: bool = False  # a node-local copy of another node's object: dropped first
    tag: tuple[bytes, bytes] | None = None  # the producer's data tag, sent with every GET
    relay_id: bytes | None = None  # a node-local copy others may fetch: the object's id


@dataclass
class Reply:
    """What the core answers; the transport signs and sends it."""

    status: Status
    data: Any = b""
    message: str = ""
    tag: tuple[bytes, bytes] | None = None  # a stored object's data tag (GET)


class ObjectTable:
    """Key -> buffer, never holding more than ``memory_limit`` bytes of values."""

    def __init__(
        self, memory_limit: int | None = None, on_drop: Callable[[Entry], None] | None = None
    ) -> None:
        self.memory_limit = memory_limit
        self.entries: dict[bytes, Entry] = {}
        self.nbytes = 0
        self.on_drop = on_drop  # called for each entry replaced or evicted
        self.reserved = 0  # room promised to two-step PUTs whose data is on its way
        self.cache_dropped = 0  # node-local copies dropped to make room
        # same-node clients' small objects (server/direct.py): they count against the
        # limit too, and direct puts must leave what this table holds and promised
        self.direct: DirectArea | None = None
        # bytes the server keeps outside the table that the limit covers too (its pool
        # of recycled segments): direct puts and _fits must leave room for them
        self.held_elsewhere: Callable[[], int] = lambda: 0

    def _fits(self, key: bytes, nbytes: int, extra: int = 0) -> bool:
        if self.memory_limit is None:
            return True
        old = self.entries.get(key)
        used = self.nbytes + self.reserved + self.held_elsewhere() - (old.nbytes if old else 0)
        used += extra
        return used + nbytes <= self.memory_limit

    def can_hold(self, key: bytes, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit, after dropping node-local copies of other nodes'
        objects (oldest first: they can be fetched again) if that makes them fit."""
        if self.direct is None or self.memory_limit is None:
            return self._can_hold(key, nbytes, 0)
        # Under the area's lock: no direct put slips in between this check and
        # the claim that makes direct puts leave room for these bytes.
        with self.direct.locked() as usage:
            if not self._can_hold(key, nbytes, direct_bytes(usage)):
                return False
            old = self.entries.get(key)
            held = self.nbytes + self.reserved + self.held_elsewhere()
            claim = held + nbytes - (old.nbytes if old else 0)
            set_server_bytes(usage, max(claim, held))
            return True

    def _can_hold(self, key: bytes, nbytes: int, extra: int) -> bool:
        if self._fits(key, nbytes, extra):
            return True
        cached = sorted((e.created, k) for k, e in self.entries.items() if e.cached and k != key)
        for _, victim in cached:
            self.cache_dropped += 1
            self.evict(victim, publish=False)
            if self._fits(key, nbytes, extra):
                return True
        return False

    def _publish(self) -> None:
        # only a limit needs it: without one the server never takes the area's lock
        if self.direct is not None and self.memory_limit is not None:
            self.direct.publish_server_bytes(self.nbytes + self.reserved + self.held_elsewhere())

    def put(
        self,
        key: bytes,
        data: Any,
        nbytes: int,
        tag: tuple[bytes, bytes] | None = None,
        segment: str | None = None,
        cached: bool = False,
    ) -> None:
        old = self.entries.get(key)
        if old is not None:
            self.nbytes -= old.nbytes
        self.entries[key] = Entry(
            data, nbytes, time.time(), segment=segment, cached=cached, tag=tag
        )
        self.nbytes += nbytes
        if old is not None and self.on_drop is not None:
            self.on_drop(old)
        self._publish()

    def get(self, key: bytes) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            entry.reads += 1
        return entry

    def evict(self, key: bytes, publish: bool = True) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        self.nbytes -= entry.nbytes
        if self.on_drop is not None:
            self.on_drop(entry)
        if publish:
            self._publish()
        return True


@dataclass
class ServerCore:
    """Object table + counters + the meaning of each operation."""

    address: str
    node: str
    memory_limit: int | None = None
    transport: str = "zmq"
    table: ObjectTable = field(init=False)
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.time)
    stopping: bool = False
    shm_dir: Path | None = None
    bytes_shared: int = 0  # handed to same-node readers as segments, not sent
    cache: Counter[str] = field(default_factory=Counter)  # node-local copies of remote objects
    direct: DirectArea | None = None  # same-node clients' small objects (server/direct.py)
    _token: bytes = b""
    _sweeper: SweepTimer | None = None
    pool: dict[str, tuple[int, float]] = field(default_factory=dict)  # recycled: size, since
    pool_limit: int = 0
    pool_files: int = 8
    pool_ttl: float = 30.0
    recycled: int = 0  # segments recycled into the pool
    spares: SpareMaker | None = None  # pooled segments made ahead of puts (server/spare.py)
    _making_room: bool = False
    # relaying (owner side): object id -> its holders; (holder side) object id -> cache key
    relays: dict[bytes, _Relays] = field(default_factory=dict)
    relay_index: dict[bytes, bytes] = field(default_factory=dict)
    # $WARPSTORE_RELAY_FANOUT=0: the owner sends every node its copy itself (no relaying)
    relay_fanout: int = field(
        default_factory=lambda: max(0, int(os.environ.get("WARPSTORE_RELAY_FANOUT", RELAY_FANOUT)))
    )
    _sealer: DataSealer | None = None

    def __post_init__(self) -> None:
        self.table = ObjectTable(self.memory_limit, on_drop=self._dropped)
        self.table.held_elsewhere = self._held_in_pool

    def enable_shm(self, directory: Path, token: bytes) -> None:
        """Keep objects for same-node clients in segments under ``directory``.

        Segments that crashed processes left in it are removed first.
        """
        removed = shm.sweep(directory)
        removed_direct = sweep_areas(directory)
        if removed or removed_direct:
            logger.info(
                "removed %d segments and %d small objects of dead processes from %s",
                len(removed),
                len(removed_direct),
                directory,
            )
        self.shm_dir = directory
        self._token = token
        self._sealer = DataSealer(token)
        if os.environ.get("WARPSTORE_DIRECT", "1") != "0":
            area = area_path(directory, os.getpid())
            shutil.rmtree(area, ignore_errors=True)  # an earlier process with our pid
            self.direct = DirectArea(area, token, create=True, memory_limit=self.table.memory_limit)
            self.table.direct = self.direct
            self._sweeper = SweepTimer(lambda: sweep_area(area))
        self.pool_limit = parse_size(os.environ.get("WARPSTORE_SHM_POOL", "512MiB"))
        if self.pool_limit > 0:
            shm.pool_directory(directory)
            if os.environ.get("WARPSTORE_SHM_SPARE", "1") != "0":
                self.spares = SpareMaker(directory)

    def abandon_shm(self) -> None:
        """Remove what this process made in the node's shared memory (its small-object
        area) and nothing else: a server refused because another one already runs on the
        node shares that server's segment directory and must leave it be."""
        if self.direct is not None:
            self.table.direct = None
            self.direct.remove()
            self.direct = None

    def close_shm(self) -> None:
        """Remove every segment this server holds (at shutdown); mappings stay valid."""
        if self.shm_dir is None:
            return
        if self.spares is not None:
            self.spares.close()
            self.spares = None
        self.abandon_shm()
        for entry in self.table.entries.values():
            if entry.segment:
                shm.remove_segment(self.shm_dir, entry.segment)
                entry.segment = None
        self._trim_pool(everything=True)
        for directory in (self.shm_dir / shm.POOL, self.shm_dir, self.shm_dir.parent):
            with contextlib.suppress(OSError):  # only while empty: leave others' files
                directory.rmdir()

    def _dropped(self, entry: Entry) -> None:
        if entry.relay_id is not None:  # no longer sent on to other nodes
            self.relay_index.pop(entry.relay_id, None)
        if not entry.segment or self.shm_dir is None:
            return
        if (
            self.pool_limit > 0
            and not self._making_room
            and self._unmapped(entry)
            and self._pool_room(entry.nbytes)
        ):
            name = shm.recycle_segment(self.shm_dir, entry.segment)
            if name is not None:
                self.pool[name] = (entry.nbytes, time.monotonic())
                self.recycled += 1
            return
        shm.remove_segment(self.shm_dir, entry.segment)

    @staticmethod
    def _unmapped(entry: Entry) -> bool:
        """Drop our own mapping of a dropped entry; ``False`` if something still uses it
        (a reply being sent straight from it, say): then it must not be recycled."""
        data, entry.data = entry.data, b""
        if not isinstance(data, memoryview):
            return True
        mapping = data.obj
        try:
            data.release()
            if isinstance(mapping, mmap.mmap):
                mapping.close()
        except BufferError:
            return False
        return True

    def _held_in_pool(self) -> int:
        """What the memory limit counts besides objects: the pool and spares being made."""
        spares = self.spares.pending() if self.spares is not None else 0
        return sum(size for size, _ in self.pool.values()) + spares

    def _take_spares(self) -> None:
        """Move finished spares into the pool's accounting (they are in its directory)."""
        if self.spares is not None:
            for name, nbytes in self.spares.take():
                self.pool[name] = (nbytes, time.monotonic())

    def _make_spare(self, nbytes: int) -> None:
        """After a same-node put of ``nbytes``: have a segment of that size ready for the
        next one, unless the pool holds one that fits (within 2x) or there is no room."""
        if self.spares is None or nbytes < SPARE_MIN:
            return
        self._pool_bytes()  # takes finished spares, forgets claimed segments
        fits = any(nbytes <= size <= 2 * nbytes for size, _ in self.pool.values())
        if fits or self.spares.pending():
            return
        if self._pool_room(nbytes):
            self.spares.request(nbytes)

    def _pool_bytes(self) -> int:
        """Bytes in the pool, forgetting segments that writers have claimed since."""
        assert self.shm_dir is not None
        self._take_spares()
        pool = self.shm_dir / shm.POOL
        for name in [n for n in self.pool if not (pool / n).exists()]:
            del self.pool[name]
        return sum(size for size, _ in self.pool.values())

    def _pool_room(self, nbytes: int) -> bool:
        """Whether a dropped segment of ``nbytes`` may wait in the pool (after making room)."""
        if nbytes > self.pool_limit:
            return False
        self._trim_pool(need=nbytes, files=self.pool_files - 1)
        limit = self.table.memory_limit
        used = self._pool_bytes()
        held = self.table.nbytes + self.table.reserved + self._direct_bytes()
        if limit is not None and held + used + nbytes > limit:
            return False
        return used + nbytes <= self.pool_limit

    def _trim_pool(self, need: int = 0, files: int | None = None, everything: bool = False) -> None:
        """Unlink pooled segments, oldest first: expired ones, then until ``need`` more
        bytes fit (pool limit and memory limit) and at most ``files`` remain."""
        self._take_spares()
        if not self.pool or self.shm_dir is None:
            return
        pool = self.shm_dir / shm.POOL
        now = time.monotonic()
        limit = self.table.memory_limit
        held = self.table.nbytes + self.table.reserved + self._direct_bytes()
        for name, (_, since) in sorted(self.pool.items(), key=lambda item: item[1][1]):
            used = self._pool_bytes()
            if name not in self.pool:
                continue
            over = (
                everything
                or now - since > self.pool_ttl
                or used + need > self.pool_limit
                or (files is not None and len(self.pool) > files)
                or (
                    limit is not None
                    and held + used + need > limit
                )
            )
            if not over:
                break
            del self.pool[name]
            (pool / name).unlink(missing_ok=True)

    def _direct_bytes(self) -> int:
        """Bytes of same-node clients' small objects; only a memory limit needs them."""
        if self.direct is None or self.table.memory_limit is None:
            return 0
        return int(self.direct.usage()["bytes"])

    def describe(self) -> str:
        return f"{self.transport} server {self.address} on node {self.node}"

    def handle(
        self, op: int, key: bytes, data: Any, nbytes: int, tag: tuple[bytes, bytes] | None = None
    ) -> Reply:
        """Carry out one authenticated, well-formed request (``tag``: a PUT's data tag)."""
        try:
            name = Op(op).name
        except ValueError:
            self.errors["unknown_op"] += 1
            return Reply(Status.BAD_REQUEST, message=f"unknown operation {op}")
        self.requests[name] += 1
        if self._sweeper is not None:
            self._sweeper.tick()
        direct = self.direct
        if self.pool and time.monotonic() - min(t for _, t in self.pool.values()) > self.pool_ttl:
            self._trim_pool()  # expired segments give their memory back
        if op == Op.PUT:
            reply = self._put(key, data, nbytes, tag)
            if reply.status == Status.OK:
                self.relays.pop(key, None)  # copies elsewhere hold the old value
                if direct is not None:
                    direct.evict(key, count=False)  # the newer value is the table's
            return reply
        if op == Op.GET:
            small = direct.get(key, count=False) if direct is not None and key else None
            if small is not None:  # a same-node client's small object; we tag it
                self.bytes_out += len(small)
                return Reply(Status.OK, small)
            entry = self.table.get(key)
            if entry is None:
                return Reply(Status.NOT_FOUND)
            self.bytes_out += entry.nbytes
            return Reply(Status.OK, entry.data, tag=self._data_tag(key, entry))
        if op == Op.EXISTS:
            found = key in self.table.entries or (
                direct is not None and bool(key) and direct.exists(key, count=False)
            )
            return Reply(Status.OK if found else Status.NOT_FOUND)
        if op == Op.EVICT:
            self.table.evict(key)
            self.relays.pop(key, None)
            if direct is not None and key:
                direct.evict(key, count=False)
            return Reply(Status.OK)
        if op == Op.STATUS:
            return Reply(Status.OK, json.dumps(self.status()).encode())
        if op == Op.SHUTDOWN:
            self.stopping = True
            return Reply(Status.OK)
        if op == Op.PUT_SHM:
            return self._put_shm(key)
        if op == Op.GET_SHM:
            return self._get_shm(key)
        if op == Op.LOCATE:
            return self._locate(key)
        if op == Op.HAVE:
            return self._have(key)
        if op == Op.RELAY:
            return self._relay(key)
        raise AssertionError(f"unhandled op {name}")  # pragma: no cover

    def _full(self, key: bytes, nbytes: int) -> Reply | None:
        if self.table.memory_limit is not None:
            if self.spares is not None and self.spares.pending():
                self.spares.wait()  # a spare being made is pooled memory too: let it land
            self._trim_pool(need=nbytes)  # pooled segments go before any object does
        self._making_room = True  # node-local copies dropped now are unlinked, not pooled
        try:
            if self.table.can_hold(key, nbytes):  # drops node-local copies first if needed
                return None
        finally:
            self._making_room = False
        self.errors["store_full"] += 1
        limit = self.table.memory_limit or 0
        held = self.table.nbytes + (self.direct.usage()["bytes"] if self.direct else 0)
        return Reply(
            Status.STORE_FULL,
            message=(
                f"{self.describe()} is full: it holds {held} bytes "
                f"({format_size(held)}) of its {limit}-byte "
                f"({format_size(limit)}) limit and cannot take {nbytes} more "
                f"({format_size(nbytes)}) for key {key.decode(errors='replace')}"
            ),
        )

    def _put(
        self, key: bytes, data: Any, nbytes: int, tag: tuple[bytes, bytes] | None = None
    ) -> Reply:
        if not key:
            self.errors["bad_request"] += 1
            return Reply(Status.BAD_REQUEST, message="PUT needs a key")
        full = self._full(key, nbytes)
        if full is not None:
            return full
        self.table.put(key, data, nbytes, tag)
        self.bytes_in += nbytes
        return Reply(Status.OK)

    def _bad(self, message: str) -> Reply:
        self.errors["bad_request"] += 1
        return Reply(Status.BAD_REQUEST, message=message)

    def _put_shm(self, blob: bytes) -> Reply:
        """Adopt a same-node writer's segment: ``blob`` is ``id\0segment\0size``.

        A fourth field ``cache`` marks a node-local copy of another node's
        object (fetched once by one rank for all the node's ranks): it counts
        as fetched remotely and is the first to go when room is needed.
        """
        if self.shm_dir is None:
            return self._bad(f"{self.describe()} has no shared memory")
        relay: tuple[bytes, tuple[bytes, bytes]] | None = None
        try:
            key, name_b, size_b, *flags = bytes(blob).split(b"\0")
            name, nbytes = name_b.decode("ascii"), int(size_b)
            if len(flags) == 3 and flags[0] == b"cache":  # + object id, data tag: relayable
                relay = (flags[1], tag_from_hex(flags[2]))
                flags = flags[:1]
            if flags not in ([], [b"cache"]):
                raise ValueError(flags)
        except ValueError:
            return self._bad("malformed PUT_SHM key")
        cached = bool(flags)
        if not key or nbytes < 0:
            return self._bad("PUT_SHM needs a key and a size")
        full = self._full(key, nbytes)
        if full is not None:
            return full  # the writer removes its segment
        try:
            segment, mapping = shm.adopt_segment(self.shm_dir, name, nbytes)
        except shm.SegmentError as e:
            return self._bad(str(e))
        if self.direct is not None:
            self.direct.evict(key, count=False)
        data = memoryview(mapping) if mapping is not None else b""
        self.table.put(
            key, data, nbytes, segment=segment, cached=cached, tag=relay[1] if relay else None
        )
        if not cached:
            self.relays.pop(key, None)
        elif relay is not None:
            self.relay_index[relay[0]] = key
            self.table.entries[key].relay_id = relay[0]
        if cached:  # not a put of this node's: counted as a cache fill, not a PUT_SHM
            self.requests["PUT_SHM"] -= 1
            self.requests["CACHE_FILL"] += 1
            self.cache["fetched_bytes"] += nbytes
            self.cache["fetched"] += 1
        else:
            self.bytes_in += nbytes
            self._make_spare(nbytes)
        return Reply(Status.OK)

    def _get_shm(self, key: bytes) -> Reply:
        """A same-node get: ``b"S"`` + the object's signed segment name (made now if it
        had none), or, for objects under :data:`shm.INLINE_MAX` bytes that are not in a
        segment, ``b"D"`` + the bytes themselves (a mapping would cost more than a copy).
        """
        if self.shm_dir is None:
            return self._bad(f"{self.describe()} has no shared memory")
        small = self.direct.get(key, count=False) if self.direct is not None and key else None
        if small is not None:
            self.bytes_out += len(small)
            return Reply(Status.OK, b"D" + small)
        entry = self.table.get(key)
        if entry is None:
            return Reply(Status.NOT_FOUND)
        if entry.segment is None:
            if entry.nbytes < shm.INLINE_MAX:
                self.bytes_out += entry.nbytes
                return Reply(Status.OK, b"D" + bytes(entry.data))
            # Arrived over the network: move it into a segment once. The
            # received buffer is dropped, so it is still held once.
            name, mapping = shm.create_segment(self.shm_dir, entry.nbytes, prefix="s")
            if mapping is not None:
                mapping[:] = entry.data
                entry.data = memoryview(mapping)
            entry.segment = name
        self.bytes_shared += entry.nbytes
        if entry.cached:
            self.cache["served_bytes"] += entry.nbytes
            self.cache["served"] += 1
        signed = shm.pack_segment_reply(self._token, key, entry.segment, entry.nbytes)
        return Reply(Status.OK, b"S" + signed)

    def _data_tag(self, key: bytes, entry: Entry) -> tuple[bytes, bytes] | None:
        """The object's data tag, made once: a same-node put (a segment) arrives
        without one, and every remote GET of it would hash it again otherwise."""
        if entry.tag is None and self._sealer is not None and entry.nbytes:
            entry.tag = self._sealer.tag(key, entry.data)
        return entry.tag

    def _locate(self, blob: bytes) -> Reply:
        """Owner: where the node server ``asking`` should fetch object ``key`` from.

        The reply is ``b"O"`` + the data tag + the size (u64; from us), ``b"H"`` +
        the data tag + the size + a holder's address (from that node's copy),
        ``b"W"`` (we already send it to as many nodes as we send to at once: ask
        again once one has it), or, for an object under :data:`shm.INLINE_MAX`
        (never cached), ``b"D"`` + the object itself, as a GET would send it.
        """
        try:
            key, asking_b = bytes(blob).split(b"\0")
            asking = asking_b.decode("ascii")
        except ValueError:
            return self._bad("malformed LOCATE key")
        if not key or not asking:
            return self._bad("LOCATE needs an object id and the asking server")
        entry = self.table.entries.get(key)
        small: bytes | bytearray | None = None
        if entry is None and self.direct is not None:
            small = self.direct.get(key, count=False)
        elif entry is not None and entry.nbytes < shm.INLINE_MAX:
            small = bytes(entry.data)
        if small is not None:  # too small to cache or relay: here it is, one round trip
            self.requests["LOCATE"] -= 1  # counted as what it is, a GET
            self.requests["GET"] += 1
            self.bytes_out += len(small)
            return Reply(Status.OK, b"D" + small)
        if entry is None:
            return Reply(Status.NOT_FOUND)
        tag = self._data_tag(key, entry) or NO_DATA_TAG
        # the size lets the reader allocate its copy's pages while the data travels
        tag_size = b"".join(tag) + _SIZE.pack(entry.nbytes)
        if not self.relay_fanout:
            return Reply(Status.OK, b"O" + tag_size)
        state = self.relays.setdefault(key, _Relays())
        state.holders.pop(asking, None)  # asking again: its copy is gone
        now = time.monotonic()
        for node, since in list(state.pending.items()):
            if now - since > RELAY_PENDING_S or node == asking:
                del state.pending[node]
        fanout = self.relay_fanout
        free = [(served, h) for h, served in state.holders.items() if served < fanout]
        if free:  # the holder that sent it to the fewest nodes so far
            served, holder = min(free)
            state.holders[holder] = served + 1
            self.cache["relay_pointed"] += 1
            return Reply(Status.OK, b"H" + tag_size + holder.encode())
        if fanout and len(state.pending) >= OWNER_SENDS_PER_FANOUT * fanout:
            return Reply(Status.OK, b"W")
        state.pending[asking] = now
        return Reply(Status.OK, b"O" + tag_size)

    def _have(self, blob: bytes) -> Reply:
        """Owner: node server ``holder`` now holds a copy of ``key`` with data tag ``tag``
        (registered only if that is the object's current tag: never an old value)."""
        try:
            key, holder_b, tag_hex = bytes(blob).split(b"\0")
            holder, tag = holder_b.decode("ascii"), tag_from_hex(tag_hex)
        except ValueError:
            return self._bad("malformed HAVE key")
        entry = self.table.entries.get(key)
        state = self.relays.get(key)
        if entry is None or state is None or entry.tag != tag or not holder:
            return Reply(Status.NOT_FOUND)
        state.pending.pop(holder, None)
        state.holders.setdefault(holder, 0)
        return Reply(Status.OK)

    def _relay(self, key: bytes) -> Reply:
        """Holder: send this node's copy of another node's object, with the producer's
        data tag (the reader checks it against the object's id, as from the owner)."""
        ckey = self.relay_index.get(bytes(key))
        entry = self.table.entries.get(ckey) if ckey is not None else None
        if entry is None or entry.tag is None:
            self.relay_index.pop(bytes(key), None)
            return Reply(Status.NOT_FOUND)
        self.bytes_out += entry.nbytes
        self.cache["relayed"] += 1
        self.cache["relayed_bytes"] += entry.nbytes
        return Reply(Status.OK, entry.data, tag=entry.tag)

    def status(self) -> dict[str, Any]:
        """What ``warpstore server status`` prints and the job report collects.

        Same-node clients' direct operations on small objects (which this
        server never sees) are in ``direct`` and counted in the totals: a PUT
        is a PUT whichever way it came.
        """
        usage = self.direct.usage() if self.direct is not None else None
        requests = Counter(self.requests)
        if usage is not None:
            requests.update({op: usage[op] for op in COUNTERS if usage[op]})
        return {
            "address": self.address,
            "node": self.node,
            "pid": os.getpid(),
            "transport": self.transport,
            "objects": len(self.table.entries) + (usage["objects"] if usage else 0),
            "bytes": self.table.nbytes + (usage["bytes"] if usage else 0),
            "memory_limit": self.table.memory_limit,
            "requests": dict(requests),
            "requests_total": sum(requests.values()),
            "errors": dict(self.errors),
            "bytes_in": self.bytes_in + (usage["bytes_in"] if usage else 0),
            "bytes_out": self.bytes_out + (usage["bytes_out"] if usage else 0),
            "direct": usage,
            "bytes_shared": self.bytes_shared,
            # node-local cache: bytes fetched from other nodes vs served from here
            "cache": {
                **{
                    k: self.cache[k]
                    for k in (
                        "fetched",
                        "fetched_bytes",
                        "served",
                        "served_bytes",
                        "relayed",
                        "relayed_bytes",
                        "relay_pointed",
                    )
                },
                "dropped": self.table.cache_dropped,
            },
            "shm_dir": str(self.shm_dir) if self.shm_dir else None,
            "shm_pool": {"segments": len(self.pool), "recycled": self.recycled},
            # segments made ahead of same-node puts (server/spare.py)
            "shm_spares": self.spares.made if self.spares is not None else 0,
            "uptime_s": round(time.time() - self.started, 3),
        }


class RateLimitedLog:
    """Log a flood of bad messages as a few lines with counts, not one line each."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last = 0.0
        self.suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            extra = f" ({self.suppressed} similar messages suppressed)" if self.suppressed else ""
            logger.warning(msg + extra, *args)
            self.last = now
            self.suppressed = 0
        else:
            self.suppressed += 1
