"""Type aliases shared by the store modules (the original's ``proxystore.store.types``).

They live apart from :mod:`warpstore.store.base` so that annotating user code
(a custom serializer, a connector key) never imports the whole store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from warpstore.connectors.protocols import Connector
from warpstore.serialize import BytesLike

__all__ = ["ConnectorKeyT", "ConnectorT", "DeserializerT", "SerializerT"]

ConnectorT = TypeVar("ConnectorT", bound=Connector[Any])
"""A connector type."""

ConnectorKeyT = tuple[Any, ...]
"""A connector key: every connector's key is a small ``NamedTuple``."""

SerializerT = Callable[[Any], BytesLike]
"""Turns an object into bytes."""

DeserializerT = Callable[[BytesLike], Any]
"""Turns bytes back into an object."""
