"""Errors raised by stores (the original's ``proxystore.store.exceptions``).

Every one derives from :class:`warpstore.exceptions.WarpstoreError`, so one
``except`` catches any warpstore failure, and keeps the original's name so
code written for the original catches the same thing after the rename.
"""

from __future__ import annotations

from typing import Any

from warpstore.exceptions import ProxyResolveError, StoreExistsError, WarpstoreError

__all__ = [
    "NonProxiableTypeError",
    "ProxyResolveMissingKeyError",
    "ProxyStoreFactoryError",
    "StoreError",
    "StoreExistsError",
]


class StoreError(WarpstoreError):
    """Base class of errors raised by a store."""


class ProxyStoreFactoryError(StoreError):
    """The proxy was not made by a store, so it has no store key to act on."""


class NonProxiableTypeError(StoreError, TypeError):
    """The object is of a type that is never proxied (``None``, ``bool``, numbers...).

    A proxy of ``None`` or of a ``bool`` cannot behave like its target
    (``is None`` and ``if flag`` test the proxy itself), so the store refuses
    rather than hand out a proxy that silently misbehaves.
    """


class ProxyResolveMissingKeyError(ProxyResolveError):
    """The key of a proxy is not in its store (evicted, never put, or another store's).

    Args:
        key: the key that was not found.
        store_type: the class of the store that was asked.
        store_name: the name of that store.
        detail: extra words for the message (e.g. which connector was asked).
    """

    def __init__(
        self, key: Any, store_type: type, store_name: str, detail: str = ""
    ) -> None:
        self.store_type = store_type
        self.store_name = store_name
        super().__init__(
            f"proxy cannot resolve key {key!r} from {store_type.__name__}(name={store_name!r})"
            f"{': ' + detail if detail else ''}",
            store=store_name,
            key=key,
        )
