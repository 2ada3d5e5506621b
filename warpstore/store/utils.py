"""Store helpers that work on proxies without resolving them (the original's
``proxystore.store.utils``)."""

from __future__ import annotations

from typing import Any

from warpstore.proxy import Proxy, get_factory, is_resolved
from warpstore.proxy import resolve_async as _proxy_resolve_async
from warpstore.store.exceptions import ProxyStoreFactoryError
from warpstore.store.factory import StoreFactory

__all__ = ["get_key", "resolve_async"]


def _store_factory(proxy: Proxy[Any]) -> StoreFactory[Any]:
    factory = get_factory(proxy)
    if isinstance(factory, StoreFactory):
        return factory
    raise ProxyStoreFactoryError(
        f"the proxy's factory is a {type(factory).__name__}, not a StoreFactory: "
        "it was not made by a store"
    )


def get_key(proxy: Proxy[Any]) -> Any:
    """The store key of a store-made proxy (the proxy is not resolved).

    Raises:
        ProxyStoreFactoryError: the proxy was not made by a store.
    """
    return _store_factory(proxy).key


def resolve_async(proxy: Proxy[Any]) -> None:
    """Start fetching a store-made proxy's target in the background.

    Raises:
        ProxyStoreFactoryError: the proxy was not made by a store.
    """
    _store_factory(proxy)
    if not is_resolved(proxy):
        _proxy_resolve_async(proxy)
