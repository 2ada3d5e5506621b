"""Pick the client for a server address: ``tcp://`` is ZeroMQ, ``ucx://`` is UCX.

For code that talks to servers of any transport (the launcher's teardown,
``warpstore server stop``), so that it never needs to know which one a job used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["RequestClient", "client_for", "transport_of"]


class RequestClient:
    """What the transports' clients share: one request is a pipeline of one."""

    def pipeline(
        self, address: str, requests: Sequence[tuple[int, bytes, Any]], timeout: float | None = None
    ) -> list[tuple[Any, Any]]:
        raise NotImplementedError

    def request(
        self,
        address: str,
        op: int,
        key: bytes = b"",
        data: Any = None,
        timeout: float | None = None,
    ) -> tuple[Any, Any]:
        """One request, one reply: (status, data)."""
        return self.pipeline(address, [(op, key, data)], timeout)[0]


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
