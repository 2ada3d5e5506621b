"""Process-wide registry of stores, by name.

A proxy unpickled in another process carries its store's config. The first
proxy of that store to resolve there builds the store (and its connections)
and registers it; every later one reuses it. Building happens under a lock, so
a thread pool resolving many proxies at once still builds exactly one store.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from warpstore.exceptions import StoreExistsError

if TYPE_CHECKING:
    from warpstore.store.base import Store

__all__ = ["get_or_create_store", "get_store", "register_store", "unregister_store"]

_stores: dict[str, Store[Any]] = {}
_lock = threading.RLock()


def register_store(store: Store[Any], *, exist_ok: bool = False) -> None:
    """Make ``store`` findable by name in this process."""
    with _lock:
        existing = _stores.get(store.name)
        if existing is not None and existing is not store and not exist_ok:
            raise StoreExistsError(
                f"a store named {store.name!r} is already registered in this process"
            )
        _stores[store.name] = store


def get_store(name: str) -> Store[Any] | None:
    """Return the registered store called ``name``, or ``None``."""
    with _lock:
        return _stores.get(name)


def unregister_store(name: str) -> None:
    """Forget the store called ``name`` (a missing name is not an error)."""
    with _lock:
        _stores.pop(name, None)


def get_or_create_store(config: dict[str, Any]) -> Store[Any]:
    """Return the registered store of ``config['name']``, building it once if needed."""
    from warpstore.store.base import Store

    name = config["name"]
    with _lock:
        store = _stores.get(name)
        if store is None:
            store = Store.from_config({**config, "register": False})
            _stores[name] = store
            store._registered = True
        return store
