"""The factory a store puts inside each proxy.

It is all that travels with a proxy: the key, the store's config (to rebuild
the store where it does not exist yet) and whether to evict after reading.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from warpstore.exceptions import ProxyResolveError, WarpstoreError

__all__ = ["StoreFactory"]

T = TypeVar("T")

_MISSING: Any = object()


class StoreFactory(Generic[T]):
    """Fetches one object from one store, wherever the proxy is resolved."""

    __slots__ = ("evict", "key", "store_config")

    def __init__(self, key: Any, store_config: dict[str, Any], *, evict: bool = False) -> None:
        self.key = key
        self.store_config = store_config
        self.evict = evict

    @property
    def store_name(self) -> str:
        name: str = self.store_config["name"]
        return name

    def __repr__(self) -> str:
        return f"StoreFactory(store={self.store_name!r}, key={self.key!r}, evict={self.evict})"

    def __getstate__(self) -> tuple[Any, dict[str, Any], bool]:
        return (self.key, self.store_config, self.evict)

    def __setstate__(self, state: tuple[Any, dict[str, Any], bool]) -> None:
        self.key, self.store_config, self.evict = state

    def get_store(self) -> Any:
        """The store in this process: the registered one, or one rebuilt from config."""
        from warpstore.store.registry import get_or_create_store

        return get_or_create_store(self.store_config)

    def __call__(self) -> T:
        try:
            store = self.get_store()
            obj = store._get(self.key, _MISSING)
        except WarpstoreError as e:
            raise ProxyResolveError(
                f"cannot resolve key {self.key!r} from store {self.store_name!r}: {e}",
                store=self.store_name,
                key=self.key,
            ) from e
        if obj is _MISSING:
            raise ProxyResolveError(
                f"key {self.key!r} is not in store {self.store_name!r} "
                f"({store.connector!r}): evicted, never put, or put to another store",
                store=self.store_name,
                key=self.key,
            )
        if self.evict:
            store.evict(self.key)
        result: T = obj
        return result
