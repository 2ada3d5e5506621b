"""In-process connector: a dict of bytes.

For tests, single-process pipelines and as the fast path for objects that
never leave the process. Proxies from it resolve only in the same process
(or in threads of it); :meth:`LocalConnector.config` carries an id so that a
store rebuilt in the same process finds the same dict.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

from warpstore.connectors.protocols import ConnectorMixin
from warpstore.serialize import BytesLike

__all__ = ["LocalConnector", "LocalKey"]

_instances: weakref.WeakValueDictionary[str, LocalConnector] = weakref.WeakValueDictionary()


class LocalKey(NamedTuple):
    """Key of an object held by a :class:`LocalConnector`."""

    id: str


class LocalConnector(ConnectorMixin):
    """Keeps serialized objects in this process's memory."""

    def __init__(self, *, store_id: str | None = None) -> None:
        self.store_id = store_id or uuid.uuid4().hex
        existing = _instances.get(self.store_id)
        # Share the dict with a live connector of the same id in this process:
        # that is what lets Store.from_config() find the data again.
        self._data: dict[str, bytes] = existing._data if existing else {}
        self._lock = threading.Lock()
        _instances[self.store_id] = self

    def __repr__(self) -> str:
        return f"LocalConnector(store_id={self.store_id!r}, objects={len(self._data)})"

    def close(self) -> None:
        """Nothing to release: the data goes when the last connector sharing it goes."""

    def config(self) -> dict[str, Any]:
        return {"store_id": self.store_id}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LocalConnector:
        return cls(**config)

    def evict(self, key: LocalKey) -> None:
        self._data.pop(key.id, None)

    def exists(self, key: LocalKey) -> bool:
        return key.id in self._data

    def get(self, key: LocalKey) -> BytesLike | None:
        # Stored as immutable bytes: deserialize() copies out of it, so a
        # consumer that mutates its array never changes the stored object.
        return self._data.get(key.id)

    def get_batch(self, keys: Sequence[LocalKey]) -> list[BytesLike | None]:
        return [self.get(k) for k in keys]

    def new_key(self, obj: BytesLike | None = None) -> LocalKey:
        return LocalKey(uuid.uuid4().hex)

    def put(self, obj: BytesLike) -> LocalKey:
        key = self.new_key()
        self.set(key, obj)
        return key

    def put_batch(self, objs: Sequence[BytesLike]) -> list[LocalKey]:
        return [self.put(o) for o in objs]

    def set(self, key: LocalKey, obj: BytesLike) -> None:
        data = bytes(obj)
        with self._lock:
            self._data[key.id] = data
