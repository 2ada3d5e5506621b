"""Stores: the high-level interface that makes proxies."""

from warpstore.store.base import Store
from warpstore.store.factory import StoreFactory
from warpstore.store.lifetimes import ContextLifetime, LeaseLifetime, Lifetime
from warpstore.store.registry import get_store, register_store, unregister_store

__all__ = [
    "ContextLifetime",
    "LeaseLifetime",
    "Lifetime",
    "Store",
    "StoreFactory",
    "get_store",
    "register_store",
    "unregister_store",
]
