"""The only module that calls pymargo (Mochi Margo's Python binding).

Everything warpstore needs from Margo fits in :class:`MargoEngine`: raw RPCs
(bytes in, bytes out), exposing a buffer for RDMA (a bulk handle and its
serialized descriptor), pulling from a remote bulk, yielding to Argobots, and
finalizing. Keeping pymargo behind this surface means one file to adapt when
pymargo changes, and one surface for tests to replace: pymargo cannot be
installed on machines without Mercury/Argobots, so the Margo transport is
tested through a double of exactly this class (``tests/margo_double.py``).

Why the raw ``_pymargo`` calls: pymargo's ``Engine.register`` and
``RemoteFunction`` pickle RPC arguments and unpickle them on arrival, before
any handler runs. A node server must never unpickle network input, so RPCs are
registered and forwarded with the byte-string layer under them
(``_pymargo.register``, ``_pymargo.create``, ``Handle._forward``,
``Handle._respond``), as pymargo's own ``Engine``/``RemoteFunction`` do
internally; the payload is warpstore's signed protocol, checked before use.

Bulk handles: a server registers each stored object's buffer once, when the
object arrives, and reuses that registration for every GET; only clients
register per transfer (their own fresh buffers). Per-transfer registration on
the server was the known cost, and leak, of the original design's Margo path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ENGINE_FACTORY", "Exposed", "MargoEngine", "make_engine"]

Handler = Callable[[bytes, Any, Callable[[bytes], None]], None]


class Exposed:
    """A buffer registered for RDMA: keep it alive as long as peers may read it."""

    def __init__(self, buffer: Any, bulk: Any, descriptor: bytes) -> None:
        self.buffer = buffer
        self.bulk = bulk
        self.descriptor = descriptor


class MargoEngine:
    """A Margo instance in server or client mode, reduced to what warpstore uses.

    ``address_spec`` is Mercury's: ``tcp``, ``ofi+tcp``, ``ofi+verbs``, ``cxi``,
    ``na+sm``, optionally with an interface and port (``ofi+tcp://hsn0:7000``).
    """

    def __init__(self, address_spec: str, *, server: bool) -> None:
        try:
            from pymargo import bulk as pbulk
            from pymargo import core
        except ImportError as e:
            from warpstore.exceptions import ConnectorError

            raise ConnectorError(
                "the Margo transport needs pymargo (py-mochi-margo), built against Mercury "
                "and Argobots: install it with Spack (`spack install py-mochi-margo`, or "
                "`spack install py-warpstore +margo`); it is not on PyPI. "
                f"Import failed: {e}"
            ) from e
        import _pymargo  # pymargo's extension module, installed with it

        self._core = core
        self._bulk = pbulk
        self._raw = _pymargo
        mode = core.server if server else core.client
        self._engine = core.Engine(address_spec, mode=mode, use_progress_thread=True)
        self._rpc_ids: dict[str, int] = {}
        self._addresses: dict[str, Any] = {}

    @property
    def address(self) -> str:
        return str(self._engine.address)

    # -- RPCs, bytes only ----------------------------------------------------

    def serve(self, name: str, handler: Handler) -> None:
        """Call ``handler(raw_input, origin, respond)`` for each ``name`` RPC."""

        def raw_handler(handle: Any, raw_input: bytes) -> None:
            handler(bytes(raw_input), handle.get_addr(), handle._respond)

        self._raw.register(self._engine.mid, name, 0, raw_handler)

    def call(self, address: str, name: str, payload: bytes, timeout: float) -> bytes:
        """Forward ``payload`` to ``address`` and return the raw response."""
        rpc_id = self._rpc_ids.get(name)
        if rpc_id is None:
            rpc_id = self._rpc_ids[name] = self._raw.register_on_client(
                self._engine.mid, name, 0
            )
        addr = self._addresses.get(address)
        if addr is None:
            addr = self._addresses[address] = self._engine.lookup(address)
        handle = self._raw.create(self._engine.mid, addr.hg_addr, rpc_id)
        # margo_forward_timed takes milliseconds
        raw = handle._forward(provider_id=0, input=payload, timeout=timeout * 1000.0)
        return b"" if raw is None else bytes(raw)

    # -- bulk ------------------------------------------------------------------

    def expose(self, buffer: Any, writable: bool) -> Exposed:
        mode = self._bulk.read_write if writable else self._bulk.read_only
        bulk = self._engine.create_bulk(buffer, mode)
        return Exposed(buffer, bulk, bytes(bulk.to_bytes()))

    def pull(self, origin: Any, descriptor: bytes, into: Exposed, size: int) -> None:
        """RDMA-read ``size`` bytes from the remote bulk ``descriptor`` into ``into``."""
        if isinstance(origin, str):
            origin = self._addresses.get(origin) or self._engine.lookup(origin)
        remote = self._bulk.Bulk.from_bytes(self._engine, descriptor)
        self._engine.transfer(self._bulk.pull, origin, remote, 0, into.bulk, 0, size)

    # -- lifetime ----------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Let Argobots run handlers for a while (and Python signal handlers after)."""
        self._engine.sleep(seconds)

    def finalize(self) -> None:
        self._addresses.clear()
        self._engine.finalize()


# What the Margo server and client construct. A test replaces it with its
# double; nothing else in warpstore knows pymargo exists.
ENGINE_FACTORY: Callable[..., Any] = MargoEngine


def make_engine(address_spec: str, *, server: bool) -> Any:
    return ENGINE_FACTORY(address_spec, server=server)
