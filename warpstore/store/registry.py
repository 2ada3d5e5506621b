"""Process-wide registry of stores, by name.

A proxy unpickled in another process carries its store's config. The first
proxy of that store to resolve there builds the store (and its connections)
and registers it; every later one reuses it. Building happens under a lock, so
a thread pool resolving many proxies at once still builds exactly one store.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, cast

from warpstore.exceptions import StoreExistsError

if TYPE_CHECKING:
    from warpstore.proxy import Proxy
    from warpstore.store.base import Store

__all__ = [
    "get_or_create_store",
    "get_store",
    "register_store",
    "store_registration",
    "unregister_store",
]

_stores: dict[str, Store[Any]] = {}
_lock = threading.RLock()
# Names of stores closed in this process while registered: objects owned by
# OwnedProxy of such a store are not evicted by rebuilding the store (which
# would, e.g., recreate a FileConnector directory that close() removed).
_closed_names: set[str] = set()


def register_store(store: Store[Any], *, exist_ok: bool = False) -> None:
    """Make ``store`` findable by name in this process.

    Raises:
        StoreExistsError: a store of that name is already registered (also the
            same store registered twice, as in the original) and ``exist_ok``
            is false. A store that was only registered implicitly (by making
            a proxy) may be registered explicitly once.
    """
    with _lock:
        existing = _stores.get(store.name)
        # A registration made implicitly (by a proxy, or by resolving one) only
        # serves to share a cache; the original would not have registered
        # anything, so an explicit registration takes its place.
        implicit = existing is not None and existing._implicit_registration
        if existing is not None and not exist_ok and not implicit:
            raise StoreExistsError(
                f"a store named {store.name!r} is already registered in this process "
                "(pass exist_ok=True to replace it)"
            )
        if existing is not None and existing is not store:
            existing._registered = False
        _stores[store.name] = store
        store._registered = True
        store._implicit_registration = False
        _closed_names.discard(store.name)


def _register_implicitly(store: Store[Any]) -> None:
    """Register ``store`` if its name is free, so proxies resolved here share its cache."""
    with _lock:
        if store.name not in _stores:
            _stores[store.name] = store
            store._registered = True
            store._implicit_registration = True
            _closed_names.discard(store.name)


def get_store(val: str | Proxy[Any]) -> Store[Any] | None:
    """Return the registered store called ``val``, or the store of the proxy ``val``.

    A proxy is never resolved: its factory names the store (which is built
    from the config the proxy carries if this process has none yet).

    Raises:
        ProxyStoreFactoryError: ``val`` is a proxy not made by a store.
    """
    from warpstore.proxy import Proxy, get_factory

    # The Proxy test comes first, by type(): isinstance(proxy, str) would
    # resolve the proxy (a proxy of a str claims to be a str).
    if issubclass(type(val), Proxy):
        from warpstore.store.exceptions import ProxyStoreFactoryError
        from warpstore.store.factory import StoreFactory

        factory = get_factory(cast("Proxy[Any]", val))
        if isinstance(factory, StoreFactory):
            store: Store[Any] = factory.get_store()
            return store
        raise ProxyStoreFactoryError(
            f"the proxy's factory is a {type(factory).__name__}, not a StoreFactory: "
            "it was not made by a store"
        )
    if isinstance(val, str):
        with _lock:
            return _stores.get(val)
    raise TypeError(f"get_store() takes a store name or a proxy, not {type(val).__name__}")


def unregister_store(name_or_store: str | Store[Any]) -> None:
    """Forget a store, given by name or as the object (a missing one is not an error)."""
    name = name_or_store if isinstance(name_or_store, str) else name_or_store.name
    with _lock:
        store = _stores.pop(name, None)
        if store is not None:
            store._registered = False
            store._implicit_registration = False


def _mark_closed(store: Store[Any]) -> None:
    """Called by :meth:`Store.close` of a registered store."""
    with _lock:
        if _stores.get(store.name) in (None, store):
            _closed_names.add(store.name)


def store_closed_here(name: str) -> bool:
    """True if a store of this name was closed in this process and none replaced it."""
    with _lock:
        return name in _closed_names and name not in _stores


def get_or_create_store(config: Mapping[str, Any], *, register: bool = True) -> Store[Any]:
    """Return the registered store of ``config['name']``, building it once if needed.

    Args:
        config: a :class:`~warpstore.store.config.StoreConfig` (or its dict form).
        register: register a newly built store, so the next proxy reuses it.
    """
    import dataclasses

    from warpstore.store.base import Store
    from warpstore.store.config import StoreConfig

    name = config["name"]
    with _lock:
        store = _stores.get(name)
        if store is None:
            # Registration is decided here, not by the config's auto_register.
            cfg = dataclasses.replace(StoreConfig.from_mapping(config), auto_register=False)
            store = Store.from_config(cfg)
            if register:
                _stores[name] = store
                store._registered = True
                store._implicit_registration = True
                _closed_names.discard(name)
        return store


@contextlib.contextmanager
def store_registration(
    *stores: Store[Any], exist_ok: bool = False
) -> Generator[None, None, None]:
    """Register ``stores`` for the ``with`` block, unregistering them on exit."""
    registered: list[Store[Any]] = []
    try:
        for store in stores:
            register_store(store, exist_ok=exist_ok)
            registered.append(store)
        yield
    finally:
        for store in registered:
            unregister_store(store)
