"""Stores: the high-level interface that makes proxies.

Submodules, as in the original: ``base`` (:class:`Store`), ``config``,
``exceptions``, ``executor``, ``factory``, ``future``, ``lifetimes``,
``ref`` (ownership), ``registry``, ``scopes``, ``types``, ``utils``.
"""

from warpstore.store.base import Store
from warpstore.store.factory import PollingStoreFactory, StoreFactory
from warpstore.store.lifetimes import ContextLifetime, LeaseLifetime, Lifetime, StaticLifetime
from warpstore.store.registry import (
    get_or_create_store,
    get_store,
    register_store,
    store_registration,
    unregister_store,
)

__all__ = [
    "ContextLifetime",
    "LeaseLifetime",
    "Lifetime",
    "PollingStoreFactory",
    "StaticLifetime",
    "Store",
    "StoreFactory",
    "get_or_create_store",
    "get_store",
    "register_store",
    "store_registration",
    "unregister_store",
]
