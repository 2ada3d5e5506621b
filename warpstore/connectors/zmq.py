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

    Arguments: see :class:`~warpstore.connectors._nodeserver.NodeServerConnector`
    (port, address, interface, token, token_file, timeout, memory_limit,
    runtime_dir, spawn, encrypt, ping_timeout), and:

    Args:
        heartbeat_timeout: seconds without an answer to ZeroMQ's heartbeat after
            which a connection counts as dead (a killed or hung server is an error
            after this long, not after ``timeout``).
    """

    transport = "zmq"
    key_type = ZMQKey

    def __init__(self, *args: Any, heartbeat_timeout: float = 5.0, **kwargs: Any) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        super().__init__(*args, **kwargs)

    def _make_client(self, token: bytes, timeout: float) -> Any:
        return ZMQClient(token, timeout, self.heartbeat_timeout)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "heartbeat_timeout": self.heartbeat_timeout}

    @staticmethod
    def _payload(data: Any) -> BytesLike:
        # a zmq.Frame: its buffer is private to us and writable
        return b"" if data is None else data.buffer
