"""Lifetimes: evict a group of objects together.

Workflows make many short-lived intermediates; a lifetime ties them to a
``with`` block or a lease so that they are evicted even when no task knows it
was the last reader.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from warpstore.proxy import Proxy, get_factory

if TYPE_CHECKING:
    from warpstore.store.base import Store

__all__ = ["ContextLifetime", "LeaseLifetime", "Lifetime"]


class ContextLifetime:
    """Evicts every object attached to it when closed (or at the end of a ``with``)."""

    def __init__(self, store: Store[Any]) -> None:
        self.store = store
        self._keys: list[Any] = []
        self._lock = threading.Lock()
        self._done = False

    def __enter__(self) -> ContextLifetime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add_key(self, *keys: Any) -> None:
        with self._lock:
            if self._done:
                raise RuntimeError("cannot attach keys to a lifetime that has ended")
            self._keys.extend(keys)

    def add_proxy(self, *proxies: Proxy[Any]) -> None:
        self.add_key(*(get_factory(p).key for p in proxies))  # type: ignore[attr-defined]

    def done(self) -> bool:
        return self._done

    def close(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            keys, self._keys = self._keys, []
        for key in keys:
            self.store.evict(key)


class LeaseLifetime(ContextLifetime):
    """A lifetime that ends by itself ``expiry`` seconds from now unless extended."""

    def __init__(self, store: Store[Any], expiry: float) -> None:
        super().__init__(store)
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

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super().close()


Lifetime = ContextLifetime
