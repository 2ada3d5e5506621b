"""Transparent, lazily resolved proxies that travel by reference.

A :class:`Proxy` wraps a *factory*: a small picklable callable that knows where
the real object (the *target*) lives. The proxy behaves like its target once
resolved (``isinstance``, operators, numpy) and resolves itself on first use.
Pickling a proxy pickles only its factory, so a 100 MB array crosses a workflow
engine as a few hundred bytes and is fetched by whoever really needs it.

The proxy type is the C-accelerated ``lazy_object_proxy`` class; we only add
pass-by-reference pickling, error wrapping and background (async) resolution.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import lazy_object_proxy

from warpstore.exceptions import ProxyResolveError

__all__ = [
    "Proxy",
    "ProxyLocker",
    "ProxyResolveError",
    "extract",
    "get_factory",
    "is_resolved",
    "resolve",
    "resolve_async",
]

T = TypeVar("T")

try:  # the C extension is the reason we use lazy-object-proxy at all
    from lazy_object_proxy.cext import Proxy as _BaseProxy
except ImportError:  # pragma: no cover - only on platforms without wheels
    _BaseProxy = lazy_object_proxy.Proxy

_base_factory_descr = _BaseProxy.__factory__


class _FactoryGuard:
    """Sits between the C proxy and the user's factory.

    It turns any failure into :class:`ProxyResolveError` (so callers have one
    error to catch and the proxy stays retryable) and lets
    :func:`resolve_async` start the fetch on a thread that the first real use
    then joins, for any factory, not only store factories.
    """

    __slots__ = ("_lock", "_result", "_thread", "factory")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._result: tuple[bool, Any] | None = None

    def _run(self) -> None:
        try:
            self._result = (True, self._call())
        except BaseException as e:  # handed to the resolving thread
            self._result = (False, e)

    def _call(self) -> Any:
        try:
            return self.factory()
        except ProxyResolveError:
            raise
        except Exception as e:
            raise ProxyResolveError(
                f"factory {self.factory!r} failed to resolve its target: {type(e).__name__}: {e}",
                store=getattr(self.factory, "store_name", None),
                key=getattr(self.factory, "key", None),
            ) from e

    def start_async(self) -> None:
        with self._lock:
            if self._thread is None and self._result is None:
                self._thread = threading.Thread(
                    target=self._run, name="warpstore-resolve", daemon=True
                )
                self._thread.start()

    def __call__(self) -> Any:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
            with self._lock:
                result, self._result, self._thread = self._result, None, None
            if result is not None:
                ok, value = result
                if ok:
                    return value
                raise value
        return self._call()


class Proxy(_BaseProxy, Generic[T]):  # type: ignore[misc]
    """A lazy, transparent reference to an object produced by ``factory``.

    Pickling a proxy pickles its factory, never its target; an unresolved proxy
    stays unresolved after a round trip.
    """

    __slots__ = ()

    def __init__(self, factory: Callable[[], T]) -> None:
        if not callable(factory):
            raise TypeError(f"Proxy factory must be callable, got {type(factory).__name__}")
        super().__init__(_FactoryGuard(factory))

    @property
    def __factory__(self) -> Callable[[], T]:
        guard = _base_factory_descr.__get__(self)
        return cast(Callable[[], T], guard.factory if isinstance(guard, _FactoryGuard) else guard)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_proxy, (self.__factory__,)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()

    def __repr__(self) -> str:
        # Never resolves: a debugger, a log line or a scheduler printing the
        # proxy must not trigger a transfer.
        if self.__resolved__:
            return (
                f"<Proxy at {id(self):#x} wrapping {type(self.__wrapped__).__name__} "
                f"at {id(self.__wrapped__):#x} with factory {self.__factory__!r}>"
            )
        return f"<Proxy at {id(self):#x} with factory {self.__factory__!r}>"

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        # numpy looks __array__ up on the type, so forward it explicitly;
        # otherwise np.asarray(proxy) would fall back to the slow sequence path.
        import numpy as np

        target = self.__wrapped__
        if copy is None:
            return np.asarray(target, dtype=dtype)
        return np.array(target, dtype=dtype, copy=copy)


def _rebuild_proxy(factory: Callable[[], T]) -> Proxy[T]:
    return Proxy(factory)


def _guard(proxy: Proxy[Any]) -> _FactoryGuard | None:
    guard = _base_factory_descr.__get__(proxy)
    return guard if isinstance(guard, _FactoryGuard) else None


def extract(proxy: Proxy[T]) -> T:
    """Return the target itself (resolving if needed), for code that needs the real type."""
    return cast(T, proxy.__wrapped__)


def is_resolved(proxy: Proxy[Any]) -> bool:
    """Tell whether the target is already local, without resolving it."""
    return bool(proxy.__resolved__)


def resolve(proxy: Proxy[Any]) -> None:
    """Resolve now, so that a later first use costs nothing."""
    proxy.__wrapped__  # noqa: B018 - attribute access resolves


def resolve_async(proxy: Proxy[Any]) -> None:
    """Start fetching the target on a background thread.

    The first use of the proxy then waits only for what is left of the
    transfer, so a task can overlap its own set-up with data movement.
    """
    if is_resolved(proxy):
        return
    guard = _guard(proxy)
    if guard is not None:
        guard.start_async()


def get_factory(proxy: Proxy[T]) -> Callable[[], T]:
    """Return the factory (without resolving), e.g. to inspect its key."""
    return proxy.__factory__


class ProxyLocker(Generic[T]):
    """Holds a proxy so that nothing resolves it by accident.

    Schedulers and serializers inspect the objects they ship (``hasattr``,
    ``len``, ``__dask_graph__``...); each probe of a bare proxy would fetch the
    target. A locker refuses attribute access until :meth:`unlock` is called.
    """

    __slots__ = ("_proxy",)

    def __init__(self, proxy: Proxy[T]) -> None:
        object.__setattr__(self, "_proxy", proxy)

    def unlock(self) -> Proxy[T]:
        """Return the proxy, to be used where resolving it is intended."""
        return cast(Proxy[T], object.__getattribute__(self, "_proxy"))

    def __getattribute__(self, name: str) -> Any:
        if name in {"unlock", "__class__", "__reduce__", "__reduce_ex__", "__repr__"}:
            return object.__getattribute__(self, name)
        raise AttributeError(
            f"ProxyLocker refuses access to {name!r}: call .unlock() to use the proxy"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ProxyLocker is read-only: call .unlock() to use the proxy")

    def __reduce__(self) -> tuple[Any, ...]:
        return ProxyLocker, (self.unlock(),)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()

    def __repr__(self) -> str:
        return f"<ProxyLocker holding {self.unlock()!r}>"
