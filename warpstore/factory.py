"""Factories: the small picklable callables a :class:`~warpstore.proxy.Proxy` resolves with.

A proxy accepts any zero-argument callable. These classes are the original's
``proxystore.factory`` for code that builds proxies by hand: a
:class:`SimpleFactory` carries the object itself (a proxy of something small
that must still look like a proxy), a :class:`LambdaFactory` calls a function
only when the proxy is first used. Both may start resolving early with
:meth:`Factory.resolve_async`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

__all__ = ["Factory", "LambdaFactory", "SimpleFactory"]

T = TypeVar("T")


class Factory(Generic[T]):
    """Base class: calling a factory returns its object (``__call__`` aliases :meth:`resolve`)."""

    def __call__(self) -> T:
        return self.resolve()

    def resolve(self) -> T:
        """Return the object."""
        raise NotImplementedError

    def resolve_async(self) -> None:
        """Start resolving in the background; the default does nothing."""


class SimpleFactory(Factory[T]):
    """Returns the object it was given (the object travels inside the factory).

    Args:
        obj: what the proxy resolves to.
    """

    def __init__(self, obj: T) -> None:
        self._obj = obj

    def __repr__(self) -> str:
        return f"SimpleFactory({type(self._obj).__name__})"

    def resolve(self) -> T:
        return self._obj


class LambdaFactory(Factory[T]):
    """Calls ``target(*args, **kwargs)`` when the proxy is first used.

    Args:
        target: any callable producing the object (a function, class, lambda;
            it must pickle if the proxy is to travel).
        args: positional arguments for ``target``.
        kwargs: keyword arguments for ``target``.
    """

    def __init__(self, target: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        self._target = target
        self._args = args
        self._kwargs = kwargs
        self._obj_future: Future[T] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LambdaFactory({getattr(self._target, '__qualname__', self._target)!r})"

    def __getstate__(self) -> dict[str, Any]:
        # A pending background call stays with this process: the copy calls again.
        return {"target": self._target, "args": self._args, "kwargs": self._kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], *state["args"], **state["kwargs"])  # type: ignore[misc]

    def resolve(self) -> T:
        with self._lock:
            future, self._obj_future = self._obj_future, None
        if future is not None:
            return future.result()
        return self._target(*self._args, **self._kwargs)

    def resolve_async(self) -> None:
        """Run ``target`` on a daemon thread; the next :meth:`resolve` waits for it."""
        with self._lock:
            if self._obj_future is not None:
                return
            future: Future[T] = Future()
            self._obj_future = future

        def run() -> None:
            try:
                future.set_result(self._target(*self._args, **self._kwargs))
            except BaseException as e:  # handed to resolve()
                future.set_exception(e)

        threading.Thread(target=run, name="warpstore-factory", daemon=True).start()
