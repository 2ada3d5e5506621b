"""A double of :class:`warpstore.server.margo_adapter.MargoEngine`, for machines without pymargo.

It has exactly the adapter's surface (``address``, ``serve``, ``call``,
``expose``, ``pull``, ``sleep``, ``finalize``) and the semantics of the
Margo calls behind it, within one process:

- RPC payloads and responses must be ``bytes`` (pymargo's raw layer takes and
  returns byte strings); a handler runs on the server's own handler thread
  (an Argobots execution stream), and a call that gets no response within its
  timeout fails, as ``margo_forward_timed`` does; calling a finalized or unknown
  address fails, as an unreachable Mercury address does.
- ``expose`` registers memory: a writable registration of read-only memory is
  refused, the descriptor is opaque bytes naming the owner's address, and the
  registration lives as long as the returned object (pymargo frees the
  ``hg_bulk_t`` in ``Bulk.__del__``).
- ``pull`` needs the origin's address to match the descriptor's owner, a live
  registration on the owner, a writable local registration, and a size within
  both; it copies the bytes as RDMA would.

Counters (``registrations``, ``pulls``, ``rpcs``) let tests check how the
transport uses Margo, e.g. that a server registers each object once.
"""

from __future__ import annotations

import itertools
import struct
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from warpstore.server.margo_adapter import Exposed

_DESC = struct.Struct("<4sQQH")  # magic, bulk id, size, owner address length

_engines: dict[str, DoubleEngine] = {}
_bulks: dict[int, tuple[memoryview, bool, str]] = {}
_lock = threading.Lock()
_ids = itertools.count(1)
_ports = itertools.count(40000)


class MargoDoubleError(RuntimeError):
    """What pymargo raises as MargoException."""


class _Bulk:
    def __init__(self, bulk_id: int) -> None:
        self.bulk_id = bulk_id
        weakref.finalize(self, _free, bulk_id)


def _free(bulk_id: int) -> None:
    with _lock:
        _bulks.pop(bulk_id, None)


class DoubleEngine:
    registrations = 0
    pulls = 0
    rpcs = 0

    def __init__(self, address_spec: str, *, server: bool) -> None:
        protocol, _, rest = address_spec.partition("://")
        host = rest.split(":")[0] if rest else "double"
        port = rest.split(":")[1] if ":" in rest else str(next(_ports))
        self._address = f"{protocol}://{host}:{port}#{next(_ids)}"
        self.server = server
        self._handlers: dict[str, Callable[..., None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argobots-es")
        self._finalized = False
        with _lock:
            _engines[self._address] = self

    @property
    def address(self) -> str:
        return self._address

    def serve(
        self, name: str, handler: Callable[[bytes, Any, Callable[[bytes], None]], None]
    ) -> None:
        if not self.server:
            raise MargoDoubleError("a client-mode engine cannot register RPC handlers")
        self._handlers[name] = handler

    def call(self, address: str, name: str, payload: bytes, timeout: float) -> bytes:
        if not isinstance(payload, bytes):
            raise TypeError("pymargo forwards byte strings only")
        with _lock:
            target = _engines.get(address)
        if target is None or target._finalized:
            raise MargoDoubleError(f"HG_UNREACHABLE: {address}")
        handler = target._handlers.get(name)
        if handler is None:
            raise MargoDoubleError(f"HG_NO_MATCH: no RPC {name!r} at {address}")
        DoubleEngine.rpcs += 1
        response: list[bytes] = []
        done = threading.Event()

        def respond(data: bytes) -> None:
            if not isinstance(data, bytes):
                raise TypeError("pymargo responds with byte strings only")
            response.append(data)
            done.set()

        target._pool.submit(handler, payload, self._address, respond)
        if not done.wait(timeout if timeout > 0 else None):
            raise MargoDoubleError(f"HG_TIMEOUT: no response from {address} in {timeout} s")
        return response[0]

    def expose(self, buffer: Any, writable: bool) -> Exposed:
        view = memoryview(buffer).cast("B")
        if writable and view.readonly:
            raise MargoDoubleError("cannot register read-only memory as read_write")
        bulk_id = next(_ids)
        with _lock:
            _bulks[bulk_id] = (view, writable, self._address)
        DoubleEngine.registrations += 1
        owner = self._address.encode()
        descriptor = _DESC.pack(b"DBLK", bulk_id, view.nbytes, len(owner)) + owner
        return Exposed(buffer, _Bulk(bulk_id), descriptor)

    def pull(self, origin: Any, descriptor: bytes, into: Exposed, size: int) -> None:
        magic, bulk_id, nbytes, olen = _DESC.unpack_from(descriptor)
        owner = descriptor[_DESC.size : _DESC.size + olen].decode()
        if magic != b"DBLK":
            raise MargoDoubleError("HG_INVALID_ARG: not a bulk descriptor")
        if str(origin) != owner:
            raise MargoDoubleError(f"HG_INVALID_ARG: bulk belongs to {owner}, not {origin}")
        with _lock:
            remote = _bulks.get(bulk_id)
            local = _bulks.get(into.bulk.bulk_id)
            owner_engine = _engines.get(owner)
        if remote is None or owner_engine is None or owner_engine._finalized:
            raise MargoDoubleError("HG_NOENTRY: remote bulk handle was freed")
        if local is None or not local[1]:
            raise MargoDoubleError("HG_PERMISSION: local bulk is not writable")
        if size > min(nbytes, remote[0].nbytes, local[0].nbytes):
            raise MargoDoubleError("HG_OVERFLOW: transfer larger than a bulk region")
        local[0][:size] = remote[0][:size]
        DoubleEngine.pulls += 1

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def finalize(self) -> None:
        self._finalized = True
        with _lock:
            _engines.pop(self._address, None)
        self._pool.shutdown(wait=False)
