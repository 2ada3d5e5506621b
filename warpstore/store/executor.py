"""An executor that passes arguments and results by proxy (the original's
``proxystore.store.executor``).

:class:`StoreExecutor` wraps any :class:`concurrent.futures.Executor` (a
process pool, Parsl's executors, a Globus Compute or Dask client): arguments
chosen by a ``should_proxy`` policy are put in the store and sent as proxies,
and the task's result is proxied by the same policy on the worker. Proxied
arguments are evicted when their task is done; results come back as
:class:`~warpstore.store.ref.OwnedProxy` (evicted when the caller drops
them) unless ``ownership=False``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, Generic, TypeVar

from warpstore.proxy import Proxy
from warpstore.store.base import Store
from warpstore.store.config import StoreConfig
from warpstore.store.registry import get_or_create_store
from warpstore.store.utils import get_key

__all__ = ["ProxyAlways", "ProxyNever", "ProxySize", "ProxyType", "StoreExecutor"]

R = TypeVar("R")


class ProxyAlways:
    """Policy: proxy everything (except ``None`` and ``bool``, which cannot be proxied)."""

    def __call__(self, item: Any) -> bool:
        return True


class ProxyNever:
    """Policy: proxy nothing (the default)."""

    def __call__(self, item: Any) -> bool:
        return False


class ProxyType:
    """Policy: proxy instances of the given types.

    Args:
        types: e.g. ``ProxyType(numpy.ndarray, bytes)``.
    """

    def __init__(self, *types: type) -> None:
        self.types = types

    def __call__(self, item: Any) -> bool:
        return isinstance(item, self.types)


class ProxySize:
    """Policy: proxy objects of at least ``min_bytes`` (a warpstore addition).

    The size is the buffer size of bytes-like objects and arrays (``nbytes``),
    and ``sys.getsizeof`` of anything else (the shallow size, so a container
    of large objects is judged by its own size only).

    Args:
        min_bytes: the smallest size that is proxied.
    """

    def __init__(self, min_bytes: int) -> None:
        if min_bytes < 0:
            raise ValueError(f"min_bytes must be >= 0, got {min_bytes}")
        self.min_bytes = min_bytes

    def __call__(self, item: Any) -> bool:
        if isinstance(item, bytes | bytearray | memoryview):
            return memoryview(item).nbytes >= self.min_bytes
        nbytes = getattr(type(item), "nbytes", None)
        if nbytes is not None:
            size = getattr(item, "nbytes", None)
            if isinstance(size, int):
                return size >= self.min_bytes
        return sys.getsizeof(item) >= self.min_bytes


def _should(item: Any, should_proxy: Callable[[Any], bool]) -> bool:
    # Never re-proxy a proxy (type(), not isinstance: isinstance would resolve it).
    return not issubclass(type(item), Proxy) and should_proxy(item)


class _FunctionWrapper(Generic[R]):
    """Runs on the worker: calls the function and proxies its result by the policy."""

    def __init__(
        self,
        function: Callable[..., R],
        *,
        store_config: StoreConfig,
        should_proxy: Callable[[Any], bool],
        return_owned_proxy: bool,
    ) -> None:
        self.function = function
        self.store_config = store_config
        self.should_proxy = should_proxy
        self.return_owned_proxy = return_owned_proxy

    def __repr__(self) -> str:
        return f"_FunctionWrapper({getattr(self.function, '__qualname__', self.function)!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.function(*args, **kwargs)
        if _should(result, self.should_proxy):
            store = get_or_create_store(self.store_config)
            if self.return_owned_proxy:
                return store.owned_proxy(result, skip_nonproxiable=True)
            return store.proxy(result, skip_nonproxiable=True)
        return result


class StoreExecutor(Executor):
    """Wraps ``executor`` so that arguments and results travel by proxy.

    Args:
        executor: runs the tasks; shut down with this executor.
        store: the store proxies are made in; closed with this executor if
            ``close_store``. Its connector must be reachable from the workers.
        should_proxy: decides, per positional argument, keyword argument and
            result (containers are not searched), whether it is proxied;
            must pickle. Default :class:`ProxyNever`.
        ownership: results come back as :class:`~warpstore.store.ref.OwnedProxy`
            (evicted when collected) rather than plain proxies (which the
            caller must evict).
        close_store: close ``store`` on :meth:`shutdown`.
    """

    def __init__(
        self,
        executor: Executor,
        store: Store[Any],
        should_proxy: Callable[[Any], bool] | None = None,
        *,
        ownership: bool = True,
        close_store: bool = True,
    ) -> None:
        self.executor = executor
        self.store = store
        self.should_proxy: Callable[[Any], bool] = should_proxy or ProxyNever()
        self.ownership = ownership
        self.close_store = close_store
        self._registered: dict[Any, _FunctionWrapper[Any]] = {}

    def _wrapped(self, function: Callable[..., R]) -> _FunctionWrapper[R]:
        wrapper = self._registered.get(function)
        if wrapper is None:
            wrapper = _FunctionWrapper(
                function,
                store_config=self.store.config(),
                should_proxy=self.should_proxy,
                return_owned_proxy=self.ownership,
            )
            self._registered[function] = wrapper
        return wrapper

    def _proxy(self, item: Any, keys: list[Any]) -> Any:
        if _should(item, self.should_proxy):
            proxy = self.store.proxy(item, skip_nonproxiable=True)
            if issubclass(type(proxy), Proxy):
                keys.append(get_key(proxy))
            return proxy
        return item

    def _evict(self, keys: list[Any]) -> Callable[[Any], None]:
        def callback(_: Any) -> None:
            for key in keys:
                self.store.evict(key)

        return callback

    def submit(self, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``function(*args, **kwargs)``; proxied arguments are evicted once it is done."""
        keys: list[Any] = []
        pargs = tuple(self._proxy(a, keys) for a in args)
        pkwargs = {k: self._proxy(v, keys) for k, v in kwargs.items()}
        future = self.executor.submit(self._wrapped(function), *pargs, **pkwargs)
        future.add_done_callback(self._evict(keys))
        return future

    def map(  # type: ignore[override]
        self, function: Callable[..., R], *iterables: Iterable[Any], **kwargs: Any
    ) -> Iterator[Any]:
        """Like :meth:`Executor.map`; proxied arguments are evicted once every result is in."""
        keys: list[Any] = []
        proxied = [[self._proxy(item, keys) for item in it] for it in iterables]
        results = self.executor.map(self._wrapped(function), *proxied, **kwargs)

        def iterate() -> Iterator[Any]:
            try:
                for result in results:
                    # Some executor-like clients hand back futures from map().
                    if hasattr(result, "result") and hasattr(result, "add_done_callback"):
                        yield result.result(timeout=kwargs.get("timeout"))
                    else:
                        yield result
            finally:
                self._evict(keys)(None)

        return iterate()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the wrapped executor down, then close the store if ``close_store``."""
        if isinstance(self.executor, Executor):
            self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)
        elif hasattr(self.executor, "close"):
            self.executor.close()  # executor-like clients (Dask's Client)
        else:
            warnings.warn(
                f"cannot shut down a {type(self.executor).__name__}: it is not an Executor "
                "and has no close()",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.close_store:
            self.store.close()


