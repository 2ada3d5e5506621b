"""Ownership and borrowing of stored objects (the original's ``proxystore.store.ref``).

Rust-like rules, enforced at run time, so that a stored object lives exactly
as long as someone can still use it:

1. Each stored object has one :class:`OwnedProxy`; when it is garbage
   collected (or the process exits) the object is evicted from the store.
2. The owner can lend either any number of immutable :class:`RefProxy`
   (:func:`borrow`) or a single :class:`RefMutProxy` (:func:`mut_borrow`),
   never both; an owner cannot be deleted while it is borrowed.
3. Pickling a reference *moves* it: the pickled copy becomes the valid one
   (an unpickled :class:`OwnedProxy` owns the object, and evicts it when it is
   collected), the local one is invalidated and raises
   :class:`ReferenceInvalidError` when used.

The three types behave like the target, as a plain
:class:`~warpstore.proxy.Proxy` does. Their bookkeeping lives in the
factory they resolve with, so inspecting it never resolves the proxy.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any, NoReturn, TypeVar, cast

from warpstore.exceptions import ProxyResolveError, WarpstoreError
from warpstore.proxy import Proxy, get_factory, is_resolved
from warpstore.store.exceptions import ProxyResolveMissingKeyError, ProxyStoreFactoryError
from warpstore.store.factory import StoreFactory
from warpstore.store.types import SerializerT

__all__ = [
    "BaseRefProxy",
    "BaseRefProxyError",
    "MutableBorrowError",
    "OwnedProxy",
    "RefMutProxy",
    "RefProxy",
    "ReferenceInvalidError",
    "ReferenceNotOwnedError",
    "borrow",
    "clone",
    "into_owned",
    "mut_borrow",
    "update",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BaseRefProxyError(WarpstoreError):
    """Base class of the ownership and borrowing errors."""


class MutableBorrowError(BaseRefProxyError):
    """The borrowing rules were broken (a second mutable borrow, or mixing kinds)."""


class ReferenceNotOwnedError(BaseRefProxyError):
    """The operation needs an owned (or mutable) reference."""


class ReferenceInvalidError(BaseRefProxyError, ProxyResolveError):
    """The reference was moved away (pickled to another process) or went out of scope."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class _RefFactory(StoreFactory[T]):
    """The factory of one reference proxy: the store factory plus the reference's state.

    It pickles as the plain store factory it wraps, so that nothing of this
    process's bookkeeping travels.
    """

    __slots__ = ("atexit_hook", "inner", "owner", "ref_count", "ref_mut_count", "valid")

    def __init__(self, inner: StoreFactory[T]) -> None:
        super().__init__(
            inner.key, inner.store_config, evict=inner.evict, deserializer=inner.deserializer
        )
        self.inner = inner
        self.valid = True
        self.ref_count = 0
        self.ref_mut_count = 0
        self.owner: OwnedProxy[Any] | None = None
        self.atexit_hook: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_same, (self.inner,))

    def resolve(self) -> T:
        if not self.valid:
            raise ReferenceInvalidError(
                f"the reference to key {self.key!r} of store {self.store_name!r} is no longer "
                "valid: it was pickled (moved to another process) or went out of scope"
            )
        return self.inner.resolve()

    def resolve_async(self) -> None:
        if self.valid:
            self.inner.resolve_async()


def _same(factory: StoreFactory[T]) -> StoreFactory[T]:
    return factory


def _state(proxy: Proxy[Any]) -> _RefFactory[Any]:
    return cast(_RefFactory[Any], get_factory(proxy))


def _store_factory(factory: Any) -> StoreFactory[Any]:
    if isinstance(factory, _RefFactory):
        return factory.inner
    if not isinstance(factory, StoreFactory):
        raise ProxyStoreFactoryError(
            f"reference proxies need a StoreFactory, not a {type(factory).__name__}"
        )
    return factory


def _invalidate(proxy: Proxy[Any]) -> None:
    _state(proxy).valid = False
    # Drop the local target so that any later use goes through the factory
    # (which refuses), even if this reference was already resolved.
    if not is_resolved(proxy):
        return  # nothing local to drop (and deleting would resolve it)
    for name in ("__proxy_wrapped__", "__wrapped__"):
        try:
            delattr(proxy, name)
        except Exception:  # this Proxy does not let that name be deleted: try the next
            continue
        if not is_resolved(proxy):
            break


def _is(proxy: Any, cls: type) -> bool:
    # type(), not isinstance(): isinstance falls back to the target's
    # __class__ and would resolve a plain proxy.
    return issubclass(type(proxy), cls)


class BaseRefProxy(Proxy[T]):
    """What the reference types share: a validity flag, and no ``copy``.

    ``copy.copy``/``copy.deepcopy`` would duplicate a reference behind the
    borrow checker's back: use :func:`borrow` or :func:`clone`.
    """

    __slots__ = ()

    def __init__(self, factory: StoreFactory[T], **proxy_kwargs: Any) -> None:
        super().__init__(_RefFactory(_store_factory(factory)), **proxy_kwargs)

    def __copy__(self) -> NoReturn:
        raise NotImplementedError(
            f"copy() of a {type(self).__name__} is refused: use borrow() or clone()"
        )

    def __deepcopy__(self, memo: dict[Any, Any]) -> NoReturn:
        raise NotImplementedError(
            f"deepcopy() of a {type(self).__name__} is refused: use borrow() or clone()"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        state = _state(self)
        _invalidate(self)
        return (type(self)._rebuild, (state.inner,))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()

    @classmethod
    def _rebuild(cls, factory: StoreFactory[T]) -> BaseRefProxy[T]:
        return cls(factory)


def _evict(state: _RefFactory[Any]) -> None:
    """Evict an owned object, unless its store was closed in this process.

    Closing a store ends its objects' lives (a FileConnector removes its
    directory); rebuilding the store only to evict would bring back what
    close() removed. Elsewhere (a worker) the store is found or rebuilt.
    """
    from warpstore.store.registry import store_closed_here

    if store_closed_here(state.store_name):
        return
    state.get_store().evict(state.key)


class _AtExit:
    """Evicts an owned object still alive when the process exits."""

    __slots__ = ("state",)

    def __init__(self, state: _RefFactory[Any]) -> None:
        self.state = state

    def __call__(self) -> None:
        state = self.state
        if state.valid:
            state.valid = False
            try:
                _evict(state)
            except Exception as e:  # at exit: report, never raise
                logger.warning("could not evict owned key %r at exit: %s", state.key, e)


class OwnedProxy(BaseRefProxy[T]):
    """The owner of a stored object: the object is evicted when this proxy is collected.

    Make one with :meth:`Store.owned_proxy() <warpstore.store.base.Store.owned_proxy>`
    or :func:`into_owned`.
    """

    __slots__ = ()

    def __init__(self, factory: StoreFactory[T], **proxy_kwargs: Any) -> None:
        super().__init__(factory, **proxy_kwargs)
        state = _state(self)
        state.atexit_hook = _AtExit(state)
        atexit.register(state.atexit_hook)

    def __del__(self) -> None:
        state = _state(self)
        if state.atexit_hook is not None:
            atexit.unregister(state.atexit_hook)
            state.atexit_hook = None
        if not state.valid:
            return
        if state.ref_count > 0 or state.ref_mut_count > 0:
            raise RuntimeError(
                f"cannot safely delete an OwnedProxy of key {state.key!r}: "
                f"{state.ref_count} RefProxy and {state.ref_mut_count} RefMutProxy still exist"
            )
        state.valid = False
        _evict(state)


class RefProxy(BaseRefProxy[T]):
    """An immutable borrow of an :class:`OwnedProxy` (made by :func:`borrow`).

    Args:
        factory: the store factory of the object.
        owner: the owner, kept alive while this borrow lives; ``None`` where
            the borrow was unpickled in another process.
    """

    __slots__ = ()

    def __init__(
        self, factory: StoreFactory[T], *, owner: OwnedProxy[T] | None = None, **kw: Any
    ) -> None:
        super().__init__(factory, **kw)
        _state(self).owner = owner

    def __del__(self) -> None:
        state = _state(self)
        owner, state.owner = state.owner, None
        if owner is not None:
            owner_state = _state(owner)
            owner_state.ref_count = max(0, owner_state.ref_count - 1)


class RefMutProxy(BaseRefProxy[T]):
    """The one mutable borrow of an :class:`OwnedProxy` (made by :func:`mut_borrow`).

    Args:
        factory: the store factory of the object.
        owner: the owner, kept alive while this borrow lives.
    """

    __slots__ = ()

    def __init__(
        self, factory: StoreFactory[T], *, owner: OwnedProxy[T] | None = None, **kw: Any
    ) -> None:
        super().__init__(factory, **kw)
        _state(self).owner = owner

    def __del__(self) -> None:
        state = _state(self)
        owner, state.owner = state.owner, None
        if owner is not None:
            _state(owner).ref_mut_count = 0


def _check_owned(proxy: Any, what: str) -> _RefFactory[Any]:
    if not _is(proxy, OwnedProxy):
        raise ReferenceNotOwnedError(f"only an OwnedProxy can be {what}")
    state = _state(proxy)
    if not state.valid:
        raise ReferenceInvalidError(
            f"this OwnedProxy of key {state.key!r} was moved away (pickled) or released"
        )
    return state


def _populate(new: Proxy[T], old: Proxy[T], populate_target: bool) -> None:
    if populate_target and is_resolved(old):
        new.__wrapped__ = old.__wrapped__


def borrow(proxy: OwnedProxy[T], *, populate_target: bool = True) -> RefProxy[T]:
    """Lend ``proxy`` immutably; any number of immutable borrows may coexist.

    Args:
        populate_target: if ``proxy`` is resolved, the borrow starts resolved too.

    Raises:
        ReferenceNotOwnedError: ``proxy`` is not an :class:`OwnedProxy`.
        MutableBorrowError: ``proxy`` is mutably borrowed.
    """
    state = _check_owned(proxy, "borrowed")
    if state.ref_mut_count > 0:
        raise MutableBorrowError(f"key {state.key!r} is already mutably borrowed")
    ref: RefProxy[T] = RefProxy(state.inner, owner=proxy)
    state.ref_count += 1
    _populate(ref, proxy, populate_target)
    return ref


def mut_borrow(proxy: OwnedProxy[T], *, populate_target: bool = True) -> RefMutProxy[T]:
    """Lend ``proxy`` mutably: the only borrow while it lives.

    Raises:
        ReferenceNotOwnedError: ``proxy`` is not an :class:`OwnedProxy`.
        MutableBorrowError: ``proxy`` is already borrowed (either way).
    """
    state = _check_owned(proxy, "borrowed")
    if state.ref_mut_count > 0:
        raise MutableBorrowError(f"key {state.key!r} is already mutably borrowed")
    if state.ref_count > 0:
        raise MutableBorrowError(
            f"key {state.key!r} is immutably borrowed {state.ref_count} time(s)"
        )
    ref: RefMutProxy[T] = RefMutProxy(state.inner, owner=proxy)
    state.ref_mut_count = 1
    _populate(ref, proxy, populate_target)
    return ref


def clone(proxy: OwnedProxy[T]) -> OwnedProxy[T]:
    """Copy the stored object to a new key, owned by the returned proxy.

    Raises:
        ReferenceNotOwnedError: ``proxy`` is not an :class:`OwnedProxy`.
    """
    state = _check_owned(proxy, "cloned")
    store = state.get_store()
    data = store.connector.get(state.key)
    if data is None:
        raise ProxyResolveMissingKeyError(state.key, type(store), state.store_name)
    new_key = store.connector.put(data)
    factory: StoreFactory[T] = StoreFactory(
        new_key, store.config(), evict=state.evict, deserializer=state.deserializer
    )
    return OwnedProxy(factory)


def into_owned(proxy: Proxy[T], *, populate_target: bool = True) -> OwnedProxy[T]:
    """Turn a plain store proxy into the owner of its object (clearing its ``evict`` flag).

    The caller must make sure no copy of ``proxy`` is still meant to resolve
    after the owner is gone.

    Raises:
        ValueError: ``proxy`` is already a reference proxy.
        ProxyStoreFactoryError: ``proxy`` was not made by a store.
    """
    if _is(proxy, BaseRefProxy):
        raise ValueError("only a plain Proxy can be converted into an OwnedProxy")
    factory = _store_factory(get_factory(proxy))
    factory.evict = False
    owned: OwnedProxy[T] = OwnedProxy(factory)
    _populate(owned, proxy, populate_target)
    return owned


def update(
    proxy: OwnedProxy[T] | RefMutProxy[T], *, serializer: SerializerT | None = None
) -> None:
    """Write the local (modified) target back to the store under the same key.

    A proxy that was never resolved has nothing new: nothing is written.
    Copies already cached in other processes are not refreshed.

    Raises:
        ReferenceNotOwnedError: ``proxy`` is an immutable borrow or a plain proxy.
        MutableBorrowError: ``proxy`` is an :class:`OwnedProxy` that is borrowed.
        NotImplementedError: the connector cannot write to a chosen key.
    """
    if not (_is(proxy, OwnedProxy) or _is(proxy, RefMutProxy)):
        raise ReferenceNotOwnedError("only an OwnedProxy or a RefMutProxy can update the store")
    state = _state(proxy)
    if _is(proxy, OwnedProxy) and (state.ref_count > 0 or state.ref_mut_count > 0):
        raise MutableBorrowError(f"key {state.key!r} is borrowed: the owner cannot mutate it")
    if not is_resolved(proxy):
        return
    state.get_store()._set(state.key, proxy.__wrapped__, serializer=serializer)
