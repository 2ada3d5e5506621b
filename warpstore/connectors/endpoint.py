"""Connector to peer-to-peer endpoints: objects cross sites over direct data channels.

``EndpointConnector(endpoints=[uuid, ...])`` puts into this host's endpoint
(the one of ``endpoints`` configured and running here) and gets from
whichever endpoint holds an object: the local endpoint fetches it from its
peer over a WebRTC data channel that the relay helped to open. Start
endpoints with ``warpstore endpoint configure NAME --relay-server ...`` and
``warpstore endpoint start NAME`` on every site.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from warpstore.connectors.protocols import ConnectorMixin
from warpstore.endpoint.client import EndpointClient
from warpstore.endpoint.config import list_endpoints
from warpstore.exceptions import ConnectorError
from warpstore.serialize import BytesLike

__all__ = ["EndpointConnector", "EndpointKey"]


class EndpointKey(NamedTuple):
    """The object's id and the UUID of the endpoint that holds it."""

    object_id: str
    endpoint_id: str


class EndpointConnector(ConnectorMixin):
    """Objects kept by endpoints; any endpoint can fetch from any other through the relay.

    Args:
        endpoints: UUIDs of the endpoints; one of them must run on this host.
        timeout: seconds to wait for the local endpoint's answer to one request.
        peer_timeout: seconds the local endpoint waits for another endpoint (peer
            connection and reply) on this connector's requests; ``None``: the
            endpoint's own setting (``warpstore endpoint configure --peer-timeout``,
            60 s by default). The name is the original ProxyStore endpoint's.
            Keep it below ``timeout`` so its error, which names the peer, arrives
            first.
    """

    def __init__(
        self, endpoints: Sequence[str], timeout: float = 120.0, peer_timeout: float | None = None
    ) -> None:
        if peer_timeout is not None and not 0 < peer_timeout < timeout:
            raise ValueError(
                f"peer_timeout={peer_timeout}: give seconds, more than 0 and less than "
                f"timeout={timeout} (the wait for the local endpoint includes the peer's)"
            )
        self.endpoints = [str(e) for e in endpoints]
        self.timeout = timeout
        self.peer_timeout = peer_timeout
        here = [
            c for c in list_endpoints()
            if c.uuid in self.endpoints and (c.directory / "endpoint.sock").exists()
        ]
        if not here:
            raise ConnectorError(
                "none of the endpoints "
                + ", ".join(self.endpoints)
                + " is running on this host: configure and start one with "
                "`warpstore endpoint configure NAME` and `warpstore endpoint start NAME`"
            )
        self.local = here[0]
        self._client = EndpointClient(self.local.directory / "endpoint.sock", timeout)

    def __repr__(self) -> str:
        return f"EndpointConnector(local={self.local.name} {self.local.uuid})"

    def close(self) -> None:
        self._client.close()

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"endpoints": self.endpoints, "timeout": self.timeout}
        if self.peer_timeout is not None:
            config["peer_timeout"] = self.peer_timeout
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EndpointConnector:
        return cls(**config)

    def _remote(self, header: dict[str, Any]) -> dict[str, Any]:
        if self.peer_timeout is not None:
            header["peer_timeout"] = self.peer_timeout
        return header

    def put(self, obj: BytesLike) -> EndpointKey:
        reply, _ = self._client.request({"op": "put"}, obj)
        return EndpointKey(str(reply["object_id"]), self.local.uuid)

    def put_batch(self, objs: Sequence[BytesLike]) -> list[EndpointKey]:
        return [self.put(o) for o in objs]

    def get(self, key: EndpointKey) -> BytesLike | None:
        reply, payload = self._client.request(
            self._remote({"op": "get", "object_id": key.object_id, "endpoint": key.endpoint_id})
        )
        return payload if reply["status"] == "ok" else None

    def get_batch(self, keys: Sequence[EndpointKey]) -> list[BytesLike | None]:
        return [self.get(k) for k in keys]

    def exists(self, key: EndpointKey) -> bool:
        reply, _ = self._client.request(
            self._remote(
                {"op": "exists", "object_id": key.object_id, "endpoint": key.endpoint_id}
            )
        )
        return bool(reply["status"] == "ok")

    def evict(self, key: EndpointKey) -> None:
        if key.endpoint_id != self.local.uuid:
            raise ConnectorError(
                f"object {key.object_id} lives on endpoint {key.endpoint_id}: evict it there "
                f"(this is {self.local.uuid})"
            )
        self._client.request({"op": "evict", "object_id": key.object_id})
