"""Turning a server's authenticated reply status into the client's exception.

The same for every transport's client: an error status becomes the matching
exception with the server's message. Authentication and matching a reply to
its request are :class:`warpstore.server.auth.ClientSession`'s job.
"""

from __future__ import annotations

from typing import Any

from warpstore.exceptions import AuthenticationError, ConnectorError, StoreFullError
from warpstore.server.protocol import Op, Status

__all__ = ["describe", "raise_for_status"]


def describe(op: int, key: bytes, address: str) -> str:
    return f"{Op(op).name} of key {key.decode(errors='replace')!r} at {address}"


def raise_for_status(status: Status, body: Any, what: str) -> None:
    """Turn an error status into StoreFullError or ConnectorError with the server's words."""
    if status in (Status.OK, Status.NOT_FOUND, Status.CONTINUE):
        return
    message = bytes(body).decode(errors="replace") if body is not None else status.name
    if status == Status.STORE_FULL:
        raise StoreFullError(message)
    if status == Status.AUTH_FAILED:
        raise AuthenticationError(f"{what}: {message}")
    raise ConnectorError(f"{what} failed: {message}")
