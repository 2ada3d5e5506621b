"""Connector to the per-node storage servers over Mochi Margo (RPC + RDMA).

On Slingshot (``cxi``), InfiniBand (``ofi+verbs``) or TCP (``tcp``,
``ofi+tcp``), requests are Margo RPCs and large objects move by RDMA pulls
from buffers the server registered once. The same node servers, protocol,
authentication, limits and elastic spawning as the other node-server
connectors; all pymargo calls live in :mod:`warpstore.server.margo_adapter`.

pymargo comes from Spack (``py-mochi-margo``), not PyPI.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from warpstore.connectors._nodeserver import NodeServerConnector
from warpstore.server.runtime import node_name

logger = logging.getLogger(__name__)

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
        # Every server this connector starts is started by a task, outside the site's
        # launcher line: it has no Slingshot VNI, so CXI cannot work; use TCP and say so.
        protocol = self.protocol
        if protocol.split("+")[-1].startswith("cxi"):
            protocol = "ofi+tcp"
            logger.warning(
                "node %s has no Margo server: starting one from this task, outside the job "
                "launcher, so without a Slingshot VNI; it uses %s instead of %s",
                node_name(),
                protocol,
                self.protocol,
            )
        return ["--protocol", protocol]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "protocol": self.protocol}
