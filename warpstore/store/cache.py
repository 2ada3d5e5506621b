"""A small thread-safe LRU cache of deserialized objects.

Resolving many proxies of the same key in one process (every task of a
worker reading the same model weights, say) should fetch and deserialize once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Generic, TypeVar

K = TypeVar("K")

__all__ = ["LRUCache"]


class LRUCache(Generic[K]):
    """Least-recently-used cache; ``maxsize=0`` disables caching."""

    def __init__(self, maxsize: int = 16) -> None:
        if maxsize < 0:
            raise ValueError(f"cache size must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: K) -> bool:
        return key in self._data

    def exists(self, key: K) -> bool:
        """The original's name for ``key in cache``."""
        return key in self._data

    def get(self, key: K, default: Any = None) -> Any:
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def set(self, key: K, value: Any) -> None:
        if self.maxsize == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def evict(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
