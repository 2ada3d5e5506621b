"""Pick the client for a server address: ``tcp://`` is ZeroMQ, ``ucx://`` is UCX.

For code that talks to servers of any transport (the launcher's teardown,
``warpstore server stop``), so that it never needs to know which one a job used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["client_for", "transport_of"]


def transport_of(address: str) -> str:
    if address.startswith("tcp://"):
        return "zmq"
    if address.startswith("ucx://"):
        return "ucx"
    if address.startswith("margo:"):
        return "margo"
    raise ValueError(f"unknown server address scheme: {address!r} (tcp://, ucx:// or margo:)")


def client_for(transport: str, token: bytes, timeout: float = 30.0) -> Any:
    if transport == "zmq":
        from warpstore.server.zmq_client import ZMQClient

        return ZMQClient(token, timeout)
    if transport == "ucx":
        from warpstore.server.ucx_client import UCXClient

        return UCXClient(token, timeout)
    if transport == "margo":
        from warpstore.server.margo_client import MargoClient

        return MargoClient(token, timeout)
    raise ValueError(f"unknown server transport {transport!r} (zmq, ucx or margo)")
