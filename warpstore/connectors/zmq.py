"""Connector to the per-node storage servers over ZeroMQ.

``ZMQConnector()`` in a task: on its first put it connects to its node's
server, or starts one if there is none (see
:mod:`warpstore.connectors._nodeserver` for what all node-server connectors
share). ZeroMQ runs over TCP everywhere, Slingshot and InfiniBand included.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from warpstore.connectors._nodeserver import NodeServerConnector
from warpstore.serialize import BytesLike
from warpstore.server.zmq_client import ZMQClient

__all__ = ["ZMQConnector", "ZMQKey"]


class ZMQKey(NamedTuple):
    """Key of an object held by a node server: its id, the server's address, its node."""

    object_id: str
    address: str
    node: str


class ZMQConnector(NodeServerConnector):
    """Stores objects in the memory of node servers, reached over ZeroMQ.

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
    """

    transport = "zmq"
    key_type = ZMQKey

    def _make_client(self, token: bytes, timeout: float) -> Any:
        return ZMQClient(token, timeout)

    @staticmethod
    def _payload(data: Any) -> BytesLike:
        # a zmq.Frame: its buffer is private to us and writable
        return b"" if data is None else data.buffer
