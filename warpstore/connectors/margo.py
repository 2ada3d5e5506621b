"""Connector to the per-node storage servers over Mochi Margo (RPC + RDMA).

On Slingshot (``cxi``), InfiniBand (``ofi+verbs``) or TCP (``tcp``,
``ofi+tcp``), requests are Margo RPCs and large objects move by RDMA pulls
from buffers the server registered once. The same node servers, protocol,
authentication, limits and elastic spawning as the other node-server
connectors; all pymargo calls live in :mod:`warpstore.server.margo_adapter`.

pymargo comes from Spack (``py-mochi-margo``), not PyPI.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from warpstore.connectors._nodeserver import NodeServerConnector

__all__ = ["MargoConnector", "MargoKey"]


class MargoKey(NamedTuple):
    """Key of an object held by a Margo node server: its id, the server's address, its node."""

    object_id: str
    address: str
    node: str


class MargoConnector(NodeServerConnector):
    """Stores objects in the memory of node servers, reached through Margo.

    Takes the arguments of :class:`~warpstore.connectors.zmq.ZMQConnector`, and:

    Args:
        protocol: Mercury protocol of a server this connector starts: ``tcp``,
            ``ofi+tcp``, ``ofi+verbs``, ``cxi`` (Slingshot; needs the job's VNI,
            i.e. a server started by the site's launcher line).
    """

    transport = "margo"
    key_type = MargoKey

    def __init__(self, *args: Any, protocol: str = "tcp", **kwargs: Any) -> None:
        self.protocol = protocol
        super().__init__(*args, **kwargs)

    def _make_client(self, token: bytes, timeout: float) -> Any:
        from warpstore.server.margo_client import MargoClient

        return MargoClient(token, timeout)

    def _server_args(self) -> list[str]:
        return ["--protocol", self.protocol]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "protocol": self.protocol}
