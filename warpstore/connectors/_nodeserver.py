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
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from warpstore.connectors.protocols import ConnectorMixin
from warpstore.serialize import BytesLike
from warpstore.server.auth import DataCipher
from warpstore.server.protocol import Op, Status
from warpstore.server.runtime import load_token
from warpstore.server.spawn import ServerInfo, ServerSettings, ensure_server, stop_server

__all__ = ["NodeServerConnector"]

logger = logging.getLogger(__name__)


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
            status, _ = self._client.request(
                info["address"], Op.STATUS, timeout=self.ping_timeout
            )
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
        self._client.close()

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
            "encrypt": self.encrypt,
            "ping_timeout": self.ping_timeout,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(**config)

    def evict(self, key: Any) -> None:
        self._client.request(key.address, Op.EVICT, key.object_id.encode())

    def exists(self, key: Any) -> bool:
        status, _ = self._client.request(key.address, Op.EXISTS, key.object_id.encode())
        return bool(status == Status.OK)

    def get(self, key: Any) -> BytesLike | None:
        status, frame = self._client.request(key.address, Op.GET, key.object_id.encode())
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
        for address, indices in by_server.items():
            replies = self._client.pipeline(
                address, [(Op.GET, keys[i].object_id.encode(), None) for i in indices]
            )
            for i, (status, frame) in zip(indices, replies, strict=True):
                if status == Status.OK:
                    out[i] = self._open(keys[i], self._payload(frame))
        return out

    def new_key(self, obj: BytesLike | None = None) -> Any:
        server = self.local_server()
        return self.key_type(uuid.uuid4().hex, server["address"], server["node"])

    def put(self, obj: BytesLike) -> Any:
        key = self.new_key()
        self.set(key, obj)
        return key

    def put_batch(self, objs: Sequence[BytesLike]) -> list[Any]:
        if not objs:
            return []
        keys = [self.new_key() for _ in objs]
        self._client.pipeline(
            keys[0].address,
            [
                (Op.PUT, k.object_id.encode(), self._seal(k, o))
                for k, o in zip(keys, objs, strict=True)
            ],
        )
        return keys

    def set(self, key: Any, obj: BytesLike) -> None:
        self._client.request(key.address, Op.PUT, key.object_id.encode(), self._seal(key, obj))
