"""Connector to the per-node storage servers over UCX (ucxx).

The same node servers, protocol, authentication, limits and elastic spawning
as :class:`~warpstore.connectors.zmq.ZMQConnector`; the bytes travel over UCX,
which picks the fastest transport it has between two processes: shared memory
on a node, RDMA (verbs, Slingshot) or TCP between nodes. Large objects are
received straight into a buffer of their size (see
:mod:`warpstore.server.ucx_client`).

UCX is configured by its environment: pass ``ucx_env`` (e.g. ``{"UCX_TLS":
"rc,sm,self", "UCX_NET_DEVICES": "mlx5_0:1"}``) or set the variables before
the first use; they apply to the whole process and to servers it starts. PyPI's
``libucx-cu12`` has no verbs: on InfiniBand/RoCE set
``RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true`` to use the system's UCX.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from warpstore.connectors._nodeserver import NodeServerConnector
from warpstore.server.ucx_env import apply_ucx_env

__all__ = ["UCXConnector", "UCXKey"]


class UCXKey(NamedTuple):
    """Key of an object held by a UCX node server: its id, the server's address, its node."""

    object_id: str
    address: str
    node: str


class UCXConnector(NodeServerConnector):
    """Stores objects in the memory of node servers, reached over UCX.

    Takes the arguments of :class:`~warpstore.connectors.zmq.ZMQConnector`, and:

    Args:
        ucx_env: UCX variables (``UCX_*``, ``RAPIDS_*``) to export before UCX starts.
    """

    transport = "ucx"
    key_type = UCXKey

    def __init__(self, *args: Any, ucx_env: dict[str, str] | None = None, **kwargs: Any) -> None:
        self.ucx_env = dict(ucx_env or {})
        apply_ucx_env(self.ucx_env)  # before the client (or a spawned server) starts UCX
        super().__init__(*args, **kwargs)

    def _make_client(self, token: bytes, timeout: float) -> Any:
        from warpstore.server.ucx_client import UCXClient

        return UCXClient(token, timeout)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "ucx_env": self.ucx_env}
