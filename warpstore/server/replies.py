"""Checking a server's reply, the same way for every transport's client.

A reply is used only if its tag verifies with the job token; an error status
becomes the matching exception with the server's message; an OK reply must
answer the request that was sent (request id, op, key), so a late or swapped
reply is never read as this one's.
"""

from __future__ import annotations

from typing import Any

from warpstore.exceptions import AuthenticationError, ConnectorError, StoreFullError
from warpstore.server.protocol import Header, Op, Status, unpack_header
from warpstore.server.runtime import node_name

__all__ = ["authenticated_reply", "check_match", "describe", "raise_for_status"]


def describe(op: int, key: bytes, address: str) -> str:
    return f"{Op(op).name} of key {key.decode(errors='replace')!r} at {address}"


def authenticated_reply(
    token: bytes, address: str, header: Any, reply_key: bytes
) -> Header:
    """Parse and authenticate a reply header, or raise AuthenticationError."""
    parsed, authentic = unpack_header(token, header, reply_key)
    if authentic:
        return parsed
    if parsed.status == Status.AUTH_FAILED:
        raise AuthenticationError(
            f"server {address} refused our token: the client and the server use "
            f"different job tokens (check WARPSTORE_TOKEN_FILE on node {node_name()})"
        )
    raise AuthenticationError(
        f"reply from {address} failed authentication; it was discarded unread"
    )


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


def check_match(parsed: Header, rid: int, op: int, key: bytes, reply_key: bytes, what: str) -> None:
    if parsed.request_id != rid or parsed.op != op or reply_key != key:
        raise ConnectorError(f"reply to {what} does not match its request")
