"""Lifetimes: evict a group of objects together.

Workflows make many short-lived intermediates; a lifetime ties them to a
``with`` block or a lease so that they are evicted even when no task knows it
was the last reader.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from warpstore._closing import Closing
from warpstore.proxy import Proxy, get_factory

if TYPE_CHECKING:
    from warpstore.store.base import Store

__all__ = [
    "ContextLifetime",
    "LeaseLifetime",
    "Lifetime",
    "StaticLifetime",
    "register_lifetime_atexit",
]


class ContextLifetime(Closing):
    """Evicts every object attached to it when closed (or at the end of a ``with``)."""

    def __init__(self, store: Store[Any] | None, *, name: str | None = None) -> None:
        self.store = store
        self.name = name or f"{type(self).__name__}-{id(self):x}"
        self._keys: list[tuple[Store[Any] | None, Any]] = []
        self._lock = threading.Lock()
        self._done = False


    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, done={self._done})"

    def add_key(self, *keys: Any, store: Store[Any] | None = None) -> None:
        """Evict ``keys`` (of ``store``, default this lifetime's store) when the lifetime ends."""
        with self._lock:
            if self._done:
                raise RuntimeError(f"cannot attach keys to {self.name}: it has ended")
            if store is None and self.store is None:
                raise ValueError(f"{self.name} has no store of its own: pass store=")
            self._keys.extend((store, key) for key in keys)

    def add_proxy(self, *proxies: Proxy[Any]) -> None:
        """Evict the objects of store-made ``proxies`` (never resolved here) when it ends."""
        for p in proxies:
            factory: Any = get_factory(p)
            if not hasattr(factory, "key") or not hasattr(factory, "get_store"):
                from warpstore.store.exceptions import ProxyStoreFactoryError

                raise ProxyStoreFactoryError(
                    f"a proxy with a {type(factory).__name__} was not made by a store"
                )
            self.add_key(factory.key, store=factory.get_store())

    def done(self) -> bool:
        return self._done

    def close(self, *, close_stores: bool = False) -> None:
        """Evict every attached object; with ``close_stores``, then close the stores too."""
        with self._lock:
            if self._done:
                return
            self._done = True
            keys, self._keys = self._keys, []
        stores: dict[int, Store[Any]] = {}
        for store, key in keys:
            target = store if store is not None else self.store
            if target is not None:
                target.evict(key)
                stores[id(target)] = target
        if close_stores:
            if self.store is not None:
                stores[id(self.store)] = self.store
            for target in stores.values():
                target.close()


class LeaseLifetime(ContextLifetime):
    """A lifetime that ends by itself ``expiry`` seconds from now unless extended."""

    def __init__(self, store: Store[Any], expiry: float, *, name: str | None = None) -> None:
        super().__init__(store, name=name)
        self._deadline = time.monotonic() + expiry
        self._timer: threading.Timer | None = None
        self._schedule()

    def _schedule(self) -> None:
        delay = max(0.0, self._deadline - time.monotonic())
        self._timer = threading.Timer(delay, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        if time.monotonic() >= self._deadline:
            self.close()
        else:
            self._schedule()

    def extend(self, seconds: float) -> None:
        """Push the end of the lease ``seconds`` further away."""
        self._deadline += seconds

    def close(self, *, close_stores: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super().close(close_stores=close_stores)


class StaticLifetime(ContextLifetime):
    """The one lifetime that lasts as long as the process: its objects go at exit.

    ``StaticLifetime()`` always returns the same instance; keys of any store
    can be attached (``add_key(key, store=store)`` or ``add_proxy(p)``).
    """

    _instance: StaticLifetime | None = None
    _instance_lock = threading.Lock()

    def __new__(cls) -> StaticLifetime:
        with cls._instance_lock:
            if cls._instance is None:
                inst = super().__new__(cls)
                ContextLifetime.__init__(inst, None, name="static")
                atexit.register(inst.close)
                cls._instance = inst
            return cls._instance

    def __init__(self) -> None:  # state is set once, in __new__
        pass


def register_lifetime_atexit(
    lifetime: ContextLifetime, close_stores: bool = True
) -> Callable[[], None]:
    """Close ``lifetime`` (and, with ``close_stores``, its stores) when the process exits.

    Returns the registered callback, for ``atexit.unregister``.
    """

    def callback() -> None:
        lifetime.close(close_stores=close_stores)

    atexit.register(callback)
    return callback


Lifetime = ContextLifetime
