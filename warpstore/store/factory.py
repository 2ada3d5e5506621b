"""The factories a store puts inside each proxy.

They are all that travels with a proxy: the key, the store's config (to
rebuild the store where it does not exist yet), whether to evict after
reading and an optional deserializer. :class:`PollingStoreFactory` waits for
a key that does not exist yet (the proxy of a :class:`~warpstore.store.future.Future`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from warpstore.exceptions import ProxyResolveError, WarpstoreError
from warpstore.factory import Factory

__all__ = ["PollingStoreFactory", "StoreFactory"]

T = TypeVar("T")

_MISSING: Any = object()


class StoreFactory(Factory[T], Generic[T]):
    """Fetches one object from one store, wherever the proxy is resolved.

    Args:
        key: the object's key in the store.
        store_config: the store's :meth:`~warpstore.store.base.Store.config`.
        evict: evict the object once it has been resolved.
        deserializer: used instead of the store's deserializer.
    """

    __slots__ = ("_obj_future", "deserializer", "evict", "key", "store_config")

    def __init__(
        self,
        key: Any,
        store_config: Mapping[str, Any],
        *,
        evict: bool = False,
        deserializer: Any = None,
    ) -> None:
        self.key = key
        self.store_config = store_config
        self.evict = evict
        self.deserializer = deserializer
        self._obj_future: Future[T] | None = None

    @property
    def store_name(self) -> str:
        name: str = self.store_config["name"]
        return name

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(store={self.store_name!r}, key={self.key!r}, "
            f"evict={self.evict})"
        )

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.key, self.store_config, self.evict, self.deserializer)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.key, self.store_config, self.evict = state[:3]
        self.deserializer = state[3] if len(state) > 3 else None
        self._obj_future = None

    def get_store(self) -> Any:
        """The store in this process: the registered one, or one rebuilt from config."""
        from warpstore.store.registry import get_or_create_store

        return get_or_create_store(self.store_config, register=True)

    def _fetch(self, store: Any) -> Any:
        return store._get(self.key, _MISSING, deserializer=self.deserializer)

    def _missing(self, store: Any) -> ProxyResolveError:
        from warpstore.store.exceptions import ProxyResolveMissingKeyError

        return ProxyResolveMissingKeyError(
            self.key,
            type(store),
            self.store_name,
            f"not in {store.connector!r} (evicted, never put, or put to another store)",
        )

    def resolve(self) -> T:
        """Fetch the object (waiting for a :meth:`resolve_async` already started)."""
        future, self._obj_future = self._obj_future, None
        if future is not None:
            return future.result()
        return self._resolve_now()

    def _resolve_now(self) -> T:
        try:
            store = self.get_store()
            obj = self._fetch(store)
        except ProxyResolveError:
            raise
        except WarpstoreError as e:
            raise ProxyResolveError(
                f"cannot resolve key {self.key!r} from store {self.store_name!r}: {e}",
                store=self.store_name,
                key=self.key,
            ) from e
        if obj is _MISSING:
            raise self._missing(store)
        if self.evict:
            store.evict(self.key)
        result: T = obj
        return result

    def resolve_async(self) -> None:
        """Start fetching on a daemon thread; the next :meth:`resolve` waits for it."""
        if self._obj_future is not None:
            return
        future: Future[T] = Future()
        self._obj_future = future

        def run() -> None:
            try:
                future.set_result(self._resolve_now())
            except BaseException as e:  # handed to the resolving thread
                future.set_exception(e)

        threading.Thread(target=run, name="warpstore-resolve", daemon=True).start()

    def __call__(self) -> T:
        return self.resolve()


# Marks an exception set on a future. Checked before the (possibly custom)
# deserializer runs, so a future's exception reaches any process whatever the
# store's serializer. Part of the stored format: do not change it.
_EXCEPTION_PREFIX = b"warpstore.store.future.exception\n"


class _FutureException:
    """What a future's key resolves to when an exception was set instead of a result."""

    __slots__ = ("exception",)

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception


class _FutureDeserializer:
    """Wraps a deserializer: recognises a stored exception, passes anything else on."""

    __slots__ = ("deserializer",)

    def __init__(self, deserializer: Any = None) -> None:
        self.deserializer = deserializer

    def __getstate__(self) -> Any:
        return (self.deserializer,)  # never falsy: pickle skips __setstate__ for None

    def __setstate__(self, state: Any) -> None:
        (self.deserializer,) = state

    def __call__(self, data: Any) -> Any:
        from warpstore.serialize import deserialize

        view = memoryview(data).cast("B")
        n = len(_EXCEPTION_PREFIX)
        if view[:n] == _EXCEPTION_PREFIX:
            return _FutureException(deserialize(view[n:]))
        return (self.deserializer or _store_deserializer)(data)


def _store_deserializer(data: Any) -> Any:
    from warpstore.serialize import deserialize

    return deserialize(data)


class PollingStoreFactory(StoreFactory[T]):
    """A :class:`StoreFactory` that waits until the key exists.

    Args:
        key: the key (reserved with the connector's ``new_key``).
        store_config: the store's config.
        deserializer: used instead of the store's deserializer.
        evict: evict the object once it has been resolved.
        polling_interval: seconds between the first polls.
        polling_backoff_factor: the interval is multiplied by this after each poll.
        polling_interval_limit: the interval never grows beyond this.
        polling_timeout: give up (``ProxyResolveMissingKeyError``) after this
            many seconds; ``None`` waits forever.
    """

    __slots__ = (
        "polling_backoff_factor",
        "polling_interval",
        "polling_interval_limit",
        "polling_timeout",
    )

    def __init__(
        self,
        key: Any,
        store_config: Mapping[str, Any],
        *,
        deserializer: Any = None,
        evict: bool = False,
        polling_interval: float = 1,
        polling_backoff_factor: float = 1,
        polling_interval_limit: float | None = None,
        polling_timeout: float | None = None,
    ) -> None:
        super().__init__(key, store_config, evict=evict, deserializer=deserializer)
        if polling_interval <= 0 or polling_backoff_factor < 1:
            raise ValueError("polling_interval must be > 0 and polling_backoff_factor >= 1")
        self.polling_interval = polling_interval
        self.polling_backoff_factor = polling_backoff_factor
        self.polling_interval_limit = polling_interval_limit
        self.polling_timeout = polling_timeout

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            *super().__getstate__(),
            self.polling_interval,
            self.polling_backoff_factor,
            self.polling_interval_limit,
            self.polling_timeout,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        super().__setstate__(state[:4])
        (
            self.polling_interval,
            self.polling_backoff_factor,
            self.polling_interval_limit,
            self.polling_timeout,
        ) = state[4:]

    def _poll(self, store: Any, timeout: float | None) -> Any:
        """Fetch until found or ``timeout`` seconds have passed; ``_MISSING`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = self.polling_interval
        while True:
            obj = StoreFactory._fetch(self, store)
            if obj is not _MISSING:
                return obj
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return _MISSING
                interval = min(interval, left)
            time.sleep(interval)
            interval *= self.polling_backoff_factor
            if self.polling_interval_limit is not None:
                interval = min(interval, self.polling_interval_limit)

    def _fetch(self, store: Any) -> Any:
        obj = self._poll(store, self.polling_timeout)
        if isinstance(obj, _FutureException):
            raise ProxyResolveError(
                f"the future of key {self.key!r} in store {self.store_name!r} was set to an "
                f"exception: {type(obj.exception).__name__}: {obj.exception}",
                store=self.store_name,
                key=self.key,
            ) from obj.exception
        return obj

    def _missing(self, store: Any) -> ProxyResolveError:
        from warpstore.store.exceptions import ProxyResolveMissingKeyError

        return ProxyResolveMissingKeyError(
            self.key,
            type(store),
            self.store_name,
            f"not set within polling_timeout={self.polling_timeout} s",
        )
