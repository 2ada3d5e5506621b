"""A Dask distributed ``Client`` that passes large task data by proxy.

``Client(..., ps_store=store, ps_threshold=100_000)`` (the name and arguments
of the original's ``proxystore_ex.plugins.distributed.Client``): every
argument of ``submit``/``map`` whose serialized size reaches the threshold is
put in ``store`` by the client, and the task graph carries only a small
:class:`~warpstore.store.factory.StoreFactory`. The scheduler therefore never
sees, and never fetches, the data; the task wrapper on the worker turns each
factory into a :class:`~warpstore.proxy.Proxy` that resolves only when the
task function uses it. A result at or above the threshold is stored by the
worker and comes back from ``future.result()`` (or ``client.gather``) as a
proxy, fetched when used.

Ownership, so nothing is left behind: the stored arguments and the stored
result of a submission belong to its future. They are evicted when the
future is released (garbage collected) and no proxy handed out by
``result()`` is still alive. A future passed as an argument to another
submission stays alive until that submission is released. Keys of results
are reserved by the client up front (connectors with ``new_key``), so even a
result nobody asked for is evicted with its future.

Because each submission owns its data, proxied submissions get a unique key
(``<func>-proxy-<uuid>``) unless you pass ``key=``: Dask does not merge two
identical ``pure`` submissions into one task, as it would without a store.
A task still running when its future is released may store its result after
the eviction (Dask cannot stop a running task): release futures of finished
tasks, or close the store's connector with ``clear``, to be sure.
"""

from __future__ import annotations

import logging
import sys
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from dask.base import normalize_token
from dask.sizeof import sizeof
from dask.utils import funcname
from distributed import Client as DaskClient
from distributed import Future as DaskFuture

from warpstore.proxy import Proxy, get_factory
from warpstore.store import Store
from warpstore.store.factory import StoreFactory
from warpstore.store.registry import get_or_create_store, get_store

__all__ = ["Client", "Future"]

logger = logging.getLogger(__name__)


@sizeof.register(Proxy)  # type: ignore[no-untyped-call, untyped-decorator]
def _sizeof_proxy(p: Proxy[Any]) -> int:
    # Dask measures arguments and results to balance memory; a proxy's size is
    # its own (small) size, and measuring must never fetch the target.
    return sys.getsizeof(p)


@normalize_token.register(Proxy)  # type: ignore[no-untyped-call, untyped-decorator]
def _normalize_proxy(p: Proxy[Any]) -> Any:
    # Tokenizing (for task keys) by the stored object's identity, never its value.
    factory = get_factory(p)
    if isinstance(factory, StoreFactory):
        return ("warpstore-proxy", factory.store_name, repr(factory.key))
    return ("warpstore-proxy", id(p))


def _evict(store: Store[Any], key: Any) -> None:
    try:
        store.evict(key)
    except Exception as e:  # a finalizer must never raise
        logger.warning("could not evict %r from store %r: %s", key, store.name, e)


class _Owner:
    """Evicts one key when the last thing holding this object (a future, a proxy) is gone."""

    __slots__ = ("__weakref__", "key")

    def __init__(self, store: Store[Any], key: Any) -> None:
        self.key = key
        weakref.finalize(self, _evict, store, key)


def _plain_factory(key: Any, config: Any, evict: bool, deserializer: Any) -> StoreFactory[Any]:
    return StoreFactory(key, config, evict=evict, deserializer=deserializer)


class _OwnedFactory(StoreFactory[Any]):
    """A result factory that keeps its owner alive for as long as its proxy lives.

    A copy pickled to another process is a plain factory: ownership stays here.
    """

    __slots__ = ("owner",)

    def __init__(self, inner: StoreFactory[Any], owner: _Owner) -> None:
        super().__init__(
            inner.key, inner.store_config, evict=False, deserializer=inner.deserializer
        )
        self.owner = owner

    def __reduce__(self) -> tuple[Any, ...]:
        return (_plain_factory, (self.key, self.store_config, False, self.deserializer))


def _is(value: Any, cls: type) -> bool:
    """``isinstance`` by the real type: never asks a proxy for its ``__class__`` (a fetch)."""
    return issubclass(type(value), cls)


def _to_proxy(value: Any) -> Any:
    return Proxy(value) if _is(value, StoreFactory) else value


class _ProxyTask:
    """Runs on the worker: factories in, proxies to the function, large results stored."""

    def __init__(
        self, func: Callable[..., Any], store_config: Any, threshold: int | None
    ) -> None:
        self.func = func
        self.store_config = store_config
        self.threshold = threshold
        self.__name__ = funcname(func)

    def __call__(self, result_key: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_to_proxy(a) for a in args)
        kwargs = {k: _to_proxy(v) for k, v in kwargs.items()}
        result = self.func(*args, **kwargs)
        if self.threshold is None:
            return result
        if _is(result, Proxy):
            factory = get_factory(result)
            if isinstance(factory, StoreFactory):
                return factory  # already stored: pass the reference on, unresolved
        store = get_or_create_store(self.store_config)
        data = store.serialize(result)
        if memoryview(data).nbytes < self.threshold:
            return result
        if result_key is not None:
            store.connector.set(result_key, data)  # type: ignore[attr-defined]
            key = result_key
        else:
            key = store.connector.put(data)
        return store.factory(key)


class Future(DaskFuture[Any]):
    """A Dask future whose stored result comes back as a proxy, and that owns its data."""

    _ps_store: Store[Any] | None = None
    _ps_owners: list[Any]
    _ps_result_owner: _Owner | None = None

    def _ps_wrap(self, result: Any) -> Any:
        if not _is(result, StoreFactory) or self._ps_store is None:
            return result
        owner = self._ps_result_owner
        if owner is None or owner.key != result.key:
            # a connector without new_key: the worker chose the key
            owner = self._ps_result_owner = _Owner(self._ps_store, result.key)
        return Proxy(_OwnedFactory(result, owner))

    def result(self, timeout: Any = None, **kwargs: Any) -> Any:
        """Wait for the task; a stored result is returned as a proxy (fetched when used)."""
        return self._ps_wrap(super().result(timeout, **kwargs))


def _adopt(
    base: DaskFuture[Any], store: Store[Any], owners: list[Any], result_owner: _Owner | None
) -> Future:
    base.__class__ = Future
    fut: Future = base  # type: ignore[assignment]
    fut._ps_store = store
    fut._ps_owners = owners
    fut._ps_result_owner = result_owner
    return fut


class Client(DaskClient):
    """``distributed.Client`` that proxies task arguments and results above a size threshold.

    Args:
        args, kwargs: passed to :class:`distributed.Client`.
        ps_store: the store for large objects; it must be reachable from the
            workers (node servers, Redis, a shared file system...). ``None``:
            a plain Dask client.
        ps_threshold: serialized size in bytes from which an argument or a
            result is proxied.

    ``submit`` and ``map`` also take ``proxy_args`` and ``proxy_result``
    (default ``True``) to switch proxying off for one call.
    """

    def __init__(
        self,
        *args: Any,
        ps_store: Store[Any] | None = None,
        ps_threshold: int = 100_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        if ps_store is not None and get_store(ps_store.name) is None:
            # proxies resolved in this process must find this very store
            ps_store._ensure_registered()
        self._ps_store = ps_store
        self._ps_threshold = ps_threshold

    # -- client side ---------------------------------------------------------------

    def _ps_reserve(self) -> Any:
        assert self._ps_store is not None
        new_key = getattr(self._ps_store.connector, "new_key", None)
        return None if new_key is None else new_key()

    def _ps_arg(self, value: Any, owners: list[Any], threshold: int | None) -> Any:
        assert self._ps_store is not None
        # type() first: isinstance() of a proxy without a cached class would fetch it
        if _is(value, Proxy):
            factory = get_factory(value)
            # a proxy travels as its factory: never resolved by Dask's scheduler
            return factory if isinstance(factory, StoreFactory) else value
        if _is(value, Future):
            owners.append(value)  # keep the upstream future (and its result) alive
            return value
        if threshold is None or _is(value, DaskFuture):
            return value
        data = self._ps_store.serialize(value)
        if memoryview(data).nbytes < threshold:
            return value
        key = self._ps_store.connector.put(data)
        owners.append(_Owner(self._ps_store, key))
        return self._ps_store.factory(key)

    def _ps_task(self, func: Callable[..., Any], proxy_result: bool) -> _ProxyTask:
        assert self._ps_store is not None
        threshold = self._ps_threshold if proxy_result else None
        return _ProxyTask(func, self._ps_store.config(), threshold)

    def submit(
        self,
        func: Callable[..., Any],
        *args: Any,
        key: Any = None,
        proxy_args: bool = True,
        proxy_result: bool = True,
        **kwargs: Any,
    ) -> Any:
        """``Client.submit`` with large arguments and results passed by proxy."""
        if self._ps_store is None:
            return super().submit(func, *args, key=key, **kwargs)
        dask_kwargs = {k: kwargs.pop(k) for k in _SUBMIT_OPTIONS if k in kwargs}
        threshold = self._ps_threshold if proxy_args else None
        owners: list[Any] = []
        args = tuple(self._ps_arg(a, owners, threshold) for a in args)
        kwargs = {k: self._ps_arg(v, owners, threshold) for k, v in kwargs.items()}
        result_key = self._ps_reserve() if proxy_result else None
        result_owner = None if result_key is None else _Owner(self._ps_store, result_key)
        if key is None:
            key = f"{funcname(func)}-proxy-{uuid.uuid4().hex}"
        base = super().submit(
            self._ps_task(func, proxy_result), result_key, *args, key=key, **dask_kwargs,
            **kwargs,
        )
        return _adopt(base, self._ps_store, owners, result_owner)

    def map(
        self,
        func: Callable[..., Any],
        *iterables: Any,
        key: Any = None,
        proxy_args: bool = True,
        proxy_result: bool = True,
        **kwargs: Any,
    ) -> Any:
        """``Client.map`` with large arguments and results passed by proxy.

        ``batch_size`` is ignored with a store: each task's arguments are
        proxied here, once.
        """
        if self._ps_store is None:
            return super().map(func, *iterables, key=key, **kwargs)
        dask_kwargs = {k: kwargs.pop(k) for k in _MAP_OPTIONS if k in kwargs}
        # Dask's batching would call this map() again on each batch: every task is
        # proxied here, once, so batching is not used with a store.
        dask_kwargs.pop("batch_size", None)
        columns = [list(it) for it in iterables]
        n = min((len(c) for c in columns), default=0)
        threshold = self._ps_threshold if proxy_args else None
        owners = [[] for _ in range(n)]  # type: list[list[Any]]
        columns = [[self._ps_arg(c[i], owners[i], threshold) for i in range(n)] for c in columns]
        shared: list[Any] = []
        kwargs = {k: self._ps_arg(v, shared, threshold) for k, v in kwargs.items()}
        result_keys = [self._ps_reserve() if proxy_result else None for _ in range(n)]
        if key is None:
            key = [f"{funcname(func)}-proxy-{uuid.uuid4().hex}" for _ in range(n)]
        elif isinstance(key, str):
            key = [f"{key}-{uuid.uuid4().hex}" for _ in range(n)]
        bases = super().map(
            self._ps_task(func, proxy_result), result_keys, *columns, key=key, **dask_kwargs,
            **kwargs,
        )
        store = self._ps_store
        return [
            _adopt(
                b, store, [*owners[i], *shared], None if rk is None else _Owner(store, rk)
            )
            for i, (b, rk) in enumerate(zip(bases, result_keys, strict=True))
        ]

    def gather(self, futures: Any, *args: Any, **kwargs: Any) -> Any:
        """``Client.gather``; stored results of this client's futures come back as proxies."""
        results = super().gather(futures, *args, **kwargs)  # type: ignore[no-untyped-call]
        if isinstance(futures, Future):
            return futures._ps_wrap(results)
        if isinstance(futures, (list, tuple)) and isinstance(results, (list, tuple)):
            out = [
                f._ps_wrap(r) if isinstance(f, Future) else r
                for f, r in zip(futures, results, strict=False)
            ]
            return type(results)(out)
        if isinstance(futures, Mapping) and isinstance(results, dict):
            return {
                k: futures[k]._ps_wrap(r) if isinstance(futures.get(k), Future) else r
                for k, r in results.items()
            }
        return results


_SUBMIT_OPTIONS = (
    "workers",
    "resources",
    "retries",
    "priority",
    "fifo_timeout",
    "allow_other_workers",
    "actor",
    "actors",
    "pure",
)
_MAP_OPTIONS = (*_SUBMIT_OPTIONS, "batch_size")
