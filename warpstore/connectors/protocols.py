"""The one interface every connector implements.

The Store talks only to this Protocol, so a connector is chosen (or swapped,
or routed between) by configuration and never by changes to task code. Keys are
small ``NamedTuple`` s: cheap to pickle inside a proxy's factory and readable
in logs and error messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from warpstore._closing import Closing
from warpstore.serialize import BytesLike

__all__ = [
    "Connector",
    "ConnectorMixin",
    "DeferrableConnector",
    "connector_from_path",
    "connector_path",
]

KeyT = TypeVar("KeyT")


@runtime_checkable
class Connector(Protocol[KeyT]):
    """A byte store addressed by keys the connector itself creates."""

    def close(self) -> None:
        """Release resources; calling it twice is harmless."""

    def config(self) -> dict[str, Any]:
        """Everything :meth:`from_config` needs to rebuild this connector elsewhere."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Connector[KeyT]:
        """Rebuild a connector, e.g. in the process that resolves a proxy."""

    def evict(self, key: KeyT) -> None:
        """Remove ``key``; a missing key is not an error."""

    def exists(self, key: KeyT) -> bool:
        """Tell whether ``key`` is stored."""

    def get(self, key: KeyT) -> BytesLike | None:
        """Return the bytes for ``key``, or ``None`` if it is not stored."""

    def get_batch(self, keys: Sequence[KeyT]) -> list[BytesLike | None]:
        """Like :meth:`get` for many keys, in one round trip where the backend allows."""

    def put(self, obj: BytesLike) -> KeyT:
        """Store ``obj`` and return its new key."""

    def put_batch(self, objs: Sequence[BytesLike]) -> list[KeyT]:
        """Like :meth:`put` for many objects, in one round trip where the backend allows."""


@runtime_checkable
class DeferrableConnector(Connector[KeyT], Protocol[KeyT]):
    """A connector that lets the caller pick a key before the data exists.

    Used to hand out a proxy for an object that a task will produce later.
    """

    def new_key(self, obj: BytesLike | None = None) -> KeyT:
        """Reserve a key (``obj``, if given, is only a size hint)."""

    def set(self, key: KeyT, obj: BytesLike) -> None:
        """Store ``obj`` under a key from :meth:`new_key`."""


class ConnectorMixin(Closing):
    """Makes a connector a context manager: ``with FileConnector(d) as c:`` closes it.

    Every built-in connector inherits it; a user's connector may too (the
    Protocol does not require it).
    """


def connector_path(connector: Connector[Any] | type) -> str:
    """Return ``module:QualName`` of a connector, for configs carried by proxies."""
    cls = connector if isinstance(connector, type) else type(connector)
    return f"{cls.__module__}:{cls.__qualname__}"


def connector_from_path(path: str, config: dict[str, Any]) -> Connector[Any]:
    """Import the class named by :func:`connector_path` and rebuild it from ``config``."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"connector path {path!r} is not of the form 'module:ClassName'")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    rebuilt: Connector[Any] = obj.from_config(config)
    return rebuilt
