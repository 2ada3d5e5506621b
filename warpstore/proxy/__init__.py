"""Transparent, lazily resolved proxies that travel by reference.

A :class:`Proxy` wraps a *factory*: a small picklable callable that knows where
the real object (the *target*) lives. The proxy behaves like its target
(``isinstance``, operators, numpy) and resolves itself on first use. Pickling
a proxy pickles only its factory (and the target's class and hash when they
were cached), so a 100 MB array crosses a workflow engine as a few hundred
bytes, is fetched only by whoever really uses it, and is not fetched by a
framework that merely inspects it.

The names and semantics are those of ProxyStore's ``proxystore.proxy``
(``Proxy(factory, *, cache_defaults, target)``, ``__proxy_factory__``,
``__proxy_wrapped__``, ``__proxy_resolved__``, ``extract``, ``is_resolved``,
``resolve``, ``get_factory``, ``ProxyLocker``, ``ProxyResolveError``,
``ProxyOr``); :func:`resolve_async` is ours.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

from warpstore.exceptions import ProxyResolveError
from warpstore.proxy._proxy import (
    DefaultClassType,
    DefaultHashType,
    FactoryType,
    Proxy,
    ProxyOr,
    _factory_get,
    _Pending,
    _pending_get,
    _pending_set,
    _rebuild_proxy,
)

__all__ = [
    "DefaultClassType",
    "DefaultHashType",
    "FactoryType",
    "Proxy",
    "ProxyLocker",
    "ProxyOr",
    "ProxyResolveError",
    "extract",
    "get_factory",
    "is_resolved",
    "resolve",
    "resolve_async",
]

# Pickles made by warpstore 0.1 name this function here.
_rebuild_proxy = _rebuild_proxy

T = TypeVar("T")

# The helpers read the proxy's own attributes directly, skipping the
# proxy's __getattribute__ (which forwards everything else to the target).
_oga = object.__getattribute__


def extract(proxy: Proxy[T]) -> T:
    """Return the target itself (resolving if needed), for code that needs the real type.

    A failing factory runs once and raises :class:`ProxyResolveError`.
    """
    return cast(T, _oga(proxy, "__proxy_wrapped__"))


def is_resolved(proxy: Proxy[Any]) -> bool:
    """Tell whether the target is already local, without resolving it."""
    return cast(bool, _oga(proxy, "__proxy_resolved__"))


def resolve(proxy: Proxy[Any]) -> None:
    """Resolve now, so that a later first use costs nothing.

    A failing factory runs once and raises :class:`ProxyResolveError`.
    """
    _oga(proxy, "__proxy_wrapped__")  # the property (a subclass's, if refined) resolves


def resolve_async(proxy: Proxy[Any]) -> None:
    """Start fetching the target on a background thread.

    The first use of the proxy then waits only for what is left of the
    transfer, so a task can overlap its own set-up with data movement. A
    failure surfaces, as :class:`ProxyResolveError`, at that first use.
    """
    if is_resolved(proxy):
        return
    try:
        pending = _pending_get(proxy)
    except AttributeError:
        pending = None
    if pending is None:
        pending = _Pending(proxy, _factory_get(proxy))
        _pending_set(proxy, pending)
        pending.thread.start()


def get_factory(proxy: Proxy[T]) -> FactoryType[T]:
    """Return the factory (without resolving), e.g. to inspect its key."""
    return cast(FactoryType[T], _oga(proxy, "__proxy_factory__"))


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
