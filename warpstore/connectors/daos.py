"""Connector to DAOS (Aurora's object store) through pydaos's dictionaries.

Objects live in one ``DDict`` (``namespace``) of a DAOS container of type
PYTHON, so they outlive the job and are reachable from every node attached to
the pool, with no warpstore server. Keys carry the value's size, so a read
sizes its buffer in one round trip. All pydaos calls are in
:mod:`warpstore.connectors.daos_adapter`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from warpstore.connectors.daos_adapter import DAOSDict
from warpstore.connectors.protocols import ConnectorMixin
from warpstore.serialize import BytesLike

__all__ = ["DAOSConnector", "DAOSKey"]

_EMPTY = b"\x00"  # DAOS deletes a key whose value is empty; key.size == 0 says "empty"
_UNSIZED = -1  # new_key() without the object: the value is stored behind a 1-byte prefix
_PREFIX = b"\x01"


class DAOSKey(NamedTuple):
    """Key of an object in DAOS: its name in the dictionary and its size in bytes.

    ``size`` is -1 for keys made before their object (``new_key()`` then ``set``).
    """

    name: str
    size: int


class DAOSConnector(ConnectorMixin):
    """Stores objects in a DAOS container's dictionary.

    Args:
        pool: DAOS pool label or UUID (``daos pool list``).
        container: container label or UUID; must be of type PYTHON
            (``daos cont create <pool> <container> --type PYTHON``).
        namespace: name of the dictionary within the container.
        clear: evict, on :meth:`close`, every object this connector put.
    """

    def __init__(
        self, pool: str, container: str, namespace: str = "warpstore", clear: bool = False
    ) -> None:
        self.pool, self.container, self.namespace, self.clear = pool, container, namespace, clear
        self._dict = DAOSDict(pool, container, namespace)
        self._mine: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"DAOSConnector({self._dict.where})"

    def close(self) -> None:
        if self.clear and not self._closed:
            for name in self._mine:
                self._dict.delete(name)
            self._mine.clear()
        self._closed = True

    def config(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "container": self.container,
            "namespace": self.namespace,
            "clear": self.clear,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DAOSConnector:
        return cls(**config)

    def evict(self, key: DAOSKey) -> None:
        self._dict.delete(key.name)
        self._mine.discard(key.name)

    def exists(self, key: DAOSKey) -> bool:
        return self._dict.exists(key.name)

    def _value(self, key: DAOSKey, raw: bytes | None) -> BytesLike | None:
        if raw is None:
            return None
        if key.size == _UNSIZED:
            return memoryview(raw)[1:]
        return b"" if key.size == 0 else raw

    @staticmethod
    def _stored_size(key: DAOSKey) -> int:
        # unsized keys: pydaos's default buffer (a second round trip if larger)
        return 1024 * 1024 if key.size == _UNSIZED else key.size

    def get(self, key: DAOSKey) -> BytesLike | None:
        return self._value(key, self._dict.get(key.name, self._stored_size(key)))

    def get_batch(self, keys: Sequence[DAOSKey]) -> list[BytesLike | None]:
        if not keys:
            return []
        found = self._dict.bget([k.name for k in keys], max(map(self._stored_size, keys)))
        return [self._value(k, found[k.name]) for k in keys]

    def new_key(self, obj: BytesLike | None = None) -> DAOSKey:
        size = _UNSIZED if obj is None else memoryview(obj).nbytes
        return DAOSKey(uuid.uuid4().hex, size)

    def _encode(self, obj: BytesLike) -> bytes:
        data = bytes(obj)  # pydaos stores byte strings
        return data if data else _EMPTY

    def set(self, key: DAOSKey, obj: BytesLike) -> None:
        nbytes = memoryview(obj).nbytes
        if key.size == _UNSIZED:
            value = _PREFIX + bytes(obj)
        elif nbytes == key.size:
            value = self._encode(obj)
        else:
            raise ValueError(
                f"DAOS key {key.name} was made for {key.size} bytes, got {nbytes}: "
                "make it with new_key(obj) or new_key()"
            )
        self._dict.put(key.name, value)
        self._mine.add(key.name)

    def put(self, obj: BytesLike) -> DAOSKey:
        key = self.new_key(obj)
        self.set(key, obj)
        return key

    def put_batch(self, objs: Sequence[BytesLike]) -> list[DAOSKey]:
        keys = [self.new_key(o) for o in objs]
        if keys:
            self._dict.bput({k.name: self._encode(o) for k, o in zip(keys, objs, strict=True)})
            self._mine.update(k.name for k in keys)
        return keys
