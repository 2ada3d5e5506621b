"""Futures whose proxies resolve once a result is set (the original's ``proxystore.store.future``).

``store.future()`` reserves a key. The :class:`Future` (or just its
:meth:`Future.proxy`) is sent to other processes before the data exists: the
producer calls :meth:`Future.set_result`, and consumers use the proxy as the
object, blocking (by polling the connector) only when they first touch it.
This lets a workflow start a consumer task at the same time as its producer.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from warpstore.proxy import Proxy
from warpstore.serialize import serialize
from warpstore.store.factory import (
    _EXCEPTION_PREFIX,
    _MISSING,
    PollingStoreFactory,
    _FutureException,
)
from warpstore.store.types import SerializerT

__all__ = ["Future", "ProxyFuture"]

T = TypeVar("T")


def _serialize_exception(exception: BaseException) -> bytes:
    return _EXCEPTION_PREFIX + bytes(serialize(exception))


class Future(Generic[T]):
    """A result that some process will set, readable from any process.

    Args:
        factory: the :class:`~warpstore.store.factory.PollingStoreFactory` of
            the reserved key (made by :meth:`Store.future() <warpstore.store.base.Store.future>`).
        serializer: used for the result instead of the store's serializer.
    """

    def __init__(
        self, factory: PollingStoreFactory[T], *, serializer: SerializerT | None = None
    ) -> None:
        self._factory = factory
        self._serializer = serializer

    def __repr__(self) -> str:
        return f"Future({self._factory!r})"

    @property
    def key(self) -> Any:
        """The reserved key."""
        return self._factory.key

    def done(self) -> bool:
        """Tell whether a result (or exception) has been set, without waiting."""
        store = self._factory.get_store()
        return bool(store.exists(self._factory.key))

    def proxy(self) -> Proxy[T]:
        """A proxy that resolves to the result, waiting for it on first use.

        If an exception is set instead, resolving raises
        :class:`~warpstore.exceptions.ProxyResolveError` caused by it.
        """
        return Proxy(self._factory)

    def result(self, timeout: float | None = None) -> T:
        """Wait for the result and return it.

        Args:
            timeout: seconds to wait; ``None`` uses the future's ``polling_timeout``.

        Raises:
            TimeoutError: nothing was set within ``timeout`` seconds.
            BaseException: the exception given to :meth:`set_exception`.
        """
        if timeout is None:
            timeout = self._factory.polling_timeout
        store = self._factory.get_store()
        obj = self._factory._poll(store, timeout)
        if obj is _MISSING:
            raise TimeoutError(
                f"no result was set on the future of key {self._factory.key!r} "
                f"within {timeout} s"
            )
        if isinstance(obj, _FutureException):
            raise obj.exception
        result: T = obj
        return result

    def set_result(self, obj: T) -> None:
        """Store the result; every waiting proxy and :meth:`result` then returns it."""
        self._factory.get_store()._set(self._factory.key, obj, serializer=self._serializer)

    def set_exception(self, exception: BaseException) -> None:
        """Store an exception: :meth:`result` raises it, the proxy raises because of it."""
        self._factory.get_store()._set(
            self._factory.key, exception, serializer=_serialize_exception
        )


ProxyFuture = Future
"""The name later versions of the original use for :class:`Future`."""
