"""The :class:`Proxy` type: a pure-Python lazy object proxy.

Why pure Python and why ``__getattribute__``: on CPython 3.11 a class that
answers unknown attributes from ``__getattr__`` pays for building (and then
discarding) an ``AttributeError`` on every access, which made both the
original ProxyStore proxy and the ``lazy_object_proxy`` C type cost 1-2 us
per attribute. Answering every attribute from one ``__getattribute__`` that
reads the target straight out of a slot avoids the exception and is several
times faster (``benchmarks/proxy_overhead.py`` measures it against both).

Names the proxy answers itself (its own methods, the ``__proxy_*__``
attributes, anything a subclass defines) are looked up on the proxy; every
other name goes to the target, resolving it first if needed. ``__class__``
and ``__hash__`` of an unresolved proxy come from values cached at creation
(``cache_defaults=True, target=obj``, which :meth:`Store.proxy` passes), so
``isinstance``, ``functools.singledispatch``, ``hash`` and pickling never
fetch the target.
"""

from __future__ import annotations

import math
import operator
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from warpstore.exceptions import ProxyResolveError

__all__ = [
    "DefaultClassType",
    "DefaultHashType",
    "FactoryType",
    "Proxy",
    "ProxyOr",
]

T = TypeVar("T")
FactoryType: TypeAlias = Callable[[], T]
DefaultClassType: TypeAlias = type | None
DefaultHashType: TypeAlias = Exception | int | None

_oga = object.__getattribute__
_osa = object.__setattr__
_oda = object.__delattr__


class _Unset:
    """Held in the target slot of an unresolved proxy."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unresolved>"


_UNSET: Any = _Unset()

# Names a class body defines for the class itself (or that typing adds); on a
# proxy instance they must describe the target, as they do for the original.
_FORWARDED = frozenset(
    {
        "__annotations__",
        "__dict__",
        "__doc__",
        "__firstlineno__",
        "__module__",
        "__name__",
        "__orig_bases__",
        "__parameters__",
        "__qualname__",
        "__slots__",
        "__static_attributes__",
        "__type_params__",
        "__weakref__",
    }
)


class _Pending:
    """A background fetch started by :func:`warpstore.proxy.resolve_async`."""

    __slots__ = ("error", "thread", "value")

    def __init__(self, proxy: Proxy[Any], factory: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(proxy, factory), name="warpstore-resolve", daemon=True
        )

    def _run(self, proxy: Proxy[Any], factory: Callable[[], Any]) -> None:
        try:
            self.value = _call_factory(factory)
        except BaseException as e:  # handed to whoever uses the proxy next
            self.error = e
            return
        _target_set(proxy, self.value)

    def wait(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value


def _call_factory(factory: Callable[[], Any]) -> Any:
    """Run ``factory`` once; any failure becomes one :class:`ProxyResolveError`."""
    try:
        return factory()
    except ProxyResolveError:
        raise  # a store factory's own error already names the store and key
    except Exception as e:
        try:
            store = getattr(factory, "store_name", None)
            key = getattr(factory, "key", None)
        except Exception:  # a factory's odd property must not hide the real error
            store = key = None
        raise ProxyResolveError(
            f"factory {factory!r} failed to resolve its target: {type(e).__name__}: {e}",
            e,
            store=store,
            key=key,
        ) from e


def _resolve_slow(proxy: Proxy[Any]) -> Any:
    """Resolve through the class's ``__proxy_wrapped__`` (subclasses may refine it)."""
    return _oga(proxy, "__proxy_wrapped__")


def _stored(proxy: Proxy[Any]) -> Any:
    """The target if resolved, else ``_UNSET``.

    An unresolved proxy holds ``_UNSET`` in its target slot rather than
    leaving the slot empty, so telling the two apart raises no exception:
    that keeps ``isinstance`` and ``hash`` of an unresolved proxy cheap. (An
    empty slot, left by ``object.__delattr__`` as the original's subclasses
    do, also reads as unresolved.)
    """
    try:
        return _target_get(proxy)
    except AttributeError:
        return _UNSET


def _own(proxy: Proxy[Any], name: str) -> Any:
    """An attribute the proxy answers itself; ``__class__`` may come from the cache."""
    if name == "__class__":
        target = _stored(proxy)
        if target is _UNSET:
            try:
                default = _default_class_get(proxy)
            except AttributeError:
                default = None
            if default is not None:
                return default
            target = _resolve_slow(proxy)
        return target.__class__
    value = _oga(proxy, name)
    if value is _UNSET:  # "__proxy_target__" of an unresolved proxy
        raise AttributeError(name)
    return value


# Types whose attribute lookup is CPython's generic one (their slot wrapper
# shows which type defined it; a class defining its own __getattribute__ has
# a function there, or a wrapper of another type).
_GENERIC_GETATTR = frozenset(
    {object, int, float, complex, bool, str, bytes, bytearray, tuple, list, dict, set, frozenset}
)


def _refuse_absent(proxy: Proxy[Any], name: str) -> None:
    """Raise AttributeError, without fetching, for a name the target cannot have.

    Frameworks probe what they are handed (``hasattr(x, "__dask_graph__")``,
    ``__dask_tokenize__``, ``__cuda_array_interface__``...). When the cached
    class gives its instances no ``__dict__``, no ``__getattr__`` and the
    standard attribute lookup (numpy arrays, tuples, str, slotted classes),
    an instance has exactly the attributes its class has, so a name the class
    lacks is answered "absent" here instead of by a transfer.
    """
    try:
        cls = _default_class_get(proxy)
    except AttributeError:
        return
    if (
        cls is not None
        and cls.__dictoffset__ == 0
        and getattr(cls.__getattribute__, "__objclass__", None) in _GENERIC_GETATTR
        and not hasattr(cls, "__getattr__")
        and not hasattr(cls, name)
    ):
        raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")


def _importable(cls: type) -> bool:
    """Can ``pickle`` (not only cloudpickle) find ``cls`` by name?"""
    obj: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def _binary(op: Callable[[Any, Any], Any]) -> Callable[[Proxy[Any], Any], Any]:
    def method(self: Proxy[Any], other: Any) -> Any:
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            target = _resolve_slow(self)
        return op(target, other)

    method.__name__ = f"__{op.__name__.strip('_')}__"
    return method


def _reflected(op: Callable[[Any, Any], Any]) -> Callable[[Proxy[Any], Any], Any]:
    def method(self: Proxy[Any], other: Any) -> Any:
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            target = _resolve_slow(self)
        return op(other, target)

    return method


def _inplace(op: Callable[[Any, Any], Any]) -> Callable[[Proxy[T], Any], Proxy[T]]:
    # As in the original: the result becomes the proxy's new target and the
    # proxy itself is returned, so ``p += 1`` keeps ``p`` a proxy.
    def method(self: Proxy[T], other: Any) -> Proxy[T]:
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            target = _resolve_slow(self)
        _target_set(self, op(target, other))
        return self

    return method


def _unary(op: Callable[[Any], Any]) -> Callable[[Proxy[Any]], Any]:
    def method(self: Proxy[Any]) -> Any:
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            target = _resolve_slow(self)
        return op(target)

    return method


class Proxy(Generic[T]):
    """A lazy, transparent reference to the object (target) ``factory`` returns.

    The factory runs on first use, at most once while it succeeds; if it fails
    the proxy raises :class:`ProxyResolveError` (with ``.cause``) and stays
    unresolved, so it can be retried. Pickling a proxy pickles its factory and
    cached defaults, never its target.

    Args:
        factory: a callable with no arguments returning the target; picklable
            if the proxy is to travel.
        cache_defaults: remember ``target``'s class and hash, so that an
            unresolved copy of this proxy (e.g. one unpickled elsewhere)
            answers ``isinstance``/``hash`` without resolving. Ignored without
            ``target``.
        target: the target, when it is already in hand (the proxy starts
            resolved).

    Raises:
        TypeError: if ``factory`` is not callable.
    """

    __slots__ = (
        "__proxy_default_class__",
        "__proxy_default_hash__",
        "__proxy_factory__",
        "__proxy_pending__",
        "__proxy_target__",
        "__weakref__",
    )

    __module__ = "warpstore.proxy"

    def __init__(
        self,
        factory: FactoryType[T],
        *,
        cache_defaults: bool = False,
        target: T | None = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"Proxy factory must be callable, got {type(factory).__name__}")
        _factory_set(self, factory)
        # Every slot is filled: reading an empty one raises AttributeError,
        # which costs microseconds on CPython 3.11 (more than a resolve).
        _pending_set(self, None)
        default_class: DefaultClassType = None
        default_hash: DefaultHashType = None
        if target is None:
            _target_set(self, _UNSET)
        else:
            _target_set(self, target)
            if cache_defaults:
                default_class = target.__class__
                try:
                    default_hash = hash(target)
                except TypeError as e:
                    # A fresh exception without the traceback: it travels with
                    # every pickled proxy, and pickling helpers such as tblib
                    # (installed by Parsl) would otherwise carry the frames too.
                    default_hash = TypeError(*e.args)
        _default_class_set(self, default_class)
        _default_hash_set(self, default_hash)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _prepare_subclass(cls)

    if TYPE_CHECKING:  # for type checkers: any attribute comes from the target

        def __getattr__(self, name: str) -> Any: ...

    def __getattribute__(self, name: str) -> Any:
        if name in _OWN:
            if name == "__class__":  # isinstance asks for it: keep it short
                try:
                    target = _target_get(self)
                except AttributeError:
                    target = _UNSET
                if target is _UNSET:
                    try:
                        default = _default_class_get(self)
                    except AttributeError:  # made without __init__
                        default = None
                    if default is not None:
                        return default
                    target = _resolve_slow(self)
                return target.__class__
            return _own(self, name)
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            _refuse_absent(self, name)
            target = _resolve_slow(self)
        return getattr(target, name)

    # -- the original's proxy attributes ----------------------------------

    @property
    def __proxy_resolved__(self) -> bool:
        return _stored(self) is not _UNSET

    @property
    def __proxy_wrapped__(self) -> T:
        target = _stored(self)
        if target is not _UNSET:
            return target  # type: ignore[no-any-return]
        try:
            pending: _Pending | None = _pending_get(self)
        except AttributeError:
            pending = None
        if pending is not None:
            _pending_set(self, None)
            target = pending.wait()
        else:
            try:
                factory = _factory_get(self)
            except AttributeError as e:
                raise ProxyResolveError(
                    "Proxy is not initialized: __proxy_factory__ is missing.", e
                ) from e
            target = _call_factory(factory)
        _target_set(self, target)
        return target  # type: ignore[no-any-return]

    @__proxy_wrapped__.setter
    def __proxy_wrapped__(self, target: T) -> None:
        _target_set(self, target)

    @__proxy_wrapped__.deleter
    def __proxy_wrapped__(self) -> None:
        _pending_set(self, None)
        _target_set(self, _UNSET)

    # lazy-object-proxy's names, kept for code written against warpstore 0.1
    @property
    def __wrapped__(self) -> T:
        return _resolve_slow(self)  # type: ignore[no-any-return]

    @__wrapped__.setter
    def __wrapped__(self, target: T) -> None:
        _target_set(self, target)

    @property
    def __factory__(self) -> FactoryType[T]:
        return _factory_get(self)  # type: ignore[no-any-return]

    @property
    def __resolved__(self) -> bool:
        return _oga(self, "__proxy_resolved__")  # type: ignore[no-any-return]

    # -- answered without resolving ---------------------------------------

    def __hash__(self) -> int:
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            try:
                default = _default_hash_get(self)
            except AttributeError:
                default = None
            if default is None:
                target = _resolve_slow(self)
            elif isinstance(default, BaseException):
                raise type(default)(*default.args) from None
            else:
                return default  # type: ignore[no-any-return]
        return hash(target)

    def __repr__(self) -> str:
        # Never resolves: a debugger, a log line or a scheduler printing the
        # proxy must not trigger a transfer.
        factory = _factory_get(self)
        target = _stored(self)
        if target is _UNSET:
            return f"<{type(self).__name__} at {id(self):#x} with factory {factory!r}>"
        return (
            f"<{type(self).__name__} at {id(self):#x} wrapping {type(target).__name__} "
            f"at {id(target):#x} with factory {factory!r}>"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        factory = _factory_get(self)
        try:
            default_class = _default_class_get(self)
            default_hash = _default_hash_get(self)
        except AttributeError:
            default_class = default_hash = None
        if default_class is not None and not _importable(default_class):
            default_class = None  # plain pickle could not carry it; resolve instead
        return _rebuild_proxy, (factory, default_class, default_hash)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return _oga(self, "__reduce__")()  # type: ignore[no-any-return]

    # -- attributes -------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__orig_class__":
            return  # typing's Proxy[int](f) must not resolve to annotate the target
        if name in _FORWARDED or name == "__class__" or not hasattr(type(self), name):
            setattr(_resolve_slow(self), name, value)
        else:
            _osa(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _FORWARDED or name == "__class__" or not hasattr(type(self), name):
            delattr(_resolve_slow(self), name)
        else:
            _oda(self, name)

    __dir__ = _unary(dir)

    # -- everything else goes to the target -------------------------------

    __str__ = _unary(str)
    __bytes__ = _unary(bytes)
    __format__ = _binary(format)
    __bool__ = _unary(bool)
    __int__ = _unary(int)
    __float__ = _unary(float)
    __complex__ = _unary(complex)
    __index__ = _unary(operator.index)
    __trunc__ = _unary(math.trunc)
    __floor__ = _unary(math.floor)
    __ceil__ = _unary(math.ceil)
    __neg__ = _unary(operator.neg)
    __pos__ = _unary(operator.pos)
    __abs__ = _unary(abs)
    __invert__ = _unary(operator.invert)
    __len__ = _unary(len)
    __iter__ = _unary(iter)
    __next__ = _unary(next)
    __reversed__ = _unary(reversed)

    __lt__ = _binary(operator.lt)
    __le__ = _binary(operator.le)
    __eq__ = _binary(operator.eq)
    __ne__ = _binary(operator.ne)
    __gt__ = _binary(operator.gt)
    __ge__ = _binary(operator.ge)
    __contains__ = _binary(operator.contains)
    __getitem__ = _binary(operator.getitem)
    __delitem__ = _binary(operator.delitem)

    __add__ = _binary(operator.add)
    __sub__ = _binary(operator.sub)
    __mul__ = _binary(operator.mul)
    __matmul__ = _binary(operator.matmul)
    __truediv__ = _binary(operator.truediv)
    __floordiv__ = _binary(operator.floordiv)
    __mod__ = _binary(operator.mod)
    __divmod__ = _binary(divmod)
    __lshift__ = _binary(operator.lshift)
    __rshift__ = _binary(operator.rshift)
    __and__ = _binary(operator.and_)
    __xor__ = _binary(operator.xor)
    __or__ = _binary(operator.or_)

    __radd__ = _reflected(operator.add)
    __rsub__ = _reflected(operator.sub)
    __rmul__ = _reflected(operator.mul)
    __rmatmul__ = _reflected(operator.matmul)
    __rtruediv__ = _reflected(operator.truediv)
    __rfloordiv__ = _reflected(operator.floordiv)
    __rmod__ = _reflected(operator.mod)
    __rdivmod__ = _reflected(divmod)
    __rpow__ = _reflected(pow)
    __rlshift__ = _reflected(operator.lshift)
    __rrshift__ = _reflected(operator.rshift)
    __rand__ = _reflected(operator.and_)
    __rxor__ = _reflected(operator.xor)
    __ror__ = _reflected(operator.or_)

    __iadd__ = _inplace(operator.iadd)
    __isub__ = _inplace(operator.isub)
    __imul__ = _inplace(operator.imul)
    __imatmul__ = _inplace(operator.imatmul)
    __itruediv__ = _inplace(operator.itruediv)
    __ifloordiv__ = _inplace(operator.ifloordiv)
    __imod__ = _inplace(operator.imod)
    __ipow__ = _inplace(operator.ipow)
    __ilshift__ = _inplace(operator.ilshift)
    __irshift__ = _inplace(operator.irshift)
    __iand__ = _inplace(operator.iand)
    __ixor__ = _inplace(operator.ixor)
    __ior__ = _inplace(operator.ior)

    def __pow__(self, other: Any, *modulo: Any) -> Any:
        return pow(_resolve_slow(self), other, *modulo)

    def __round__(self, *ndigits: Any) -> Any:
        return round(_resolve_slow(self), *ndigits)

    def __setitem__(self, key: Any, value: Any) -> None:
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            target = _resolve_slow(self)
        target[key] = value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            target = _target_get(self)
        except AttributeError:
            target = _UNSET
        if target is _UNSET:
            target = _resolve_slow(self)
        return target(*args, **kwargs)

    def __fspath__(self) -> Any:
        target = _resolve_slow(self)
        if isinstance(target, (bytes, str)):
            return target
        fspath = getattr(target, "__fspath__", None)
        return target if fspath is None else fspath()

    def __enter__(self) -> Any:
        return _resolve_slow(self).__enter__()

    def __exit__(self, *args: Any) -> Any:
        return _resolve_slow(self).__exit__(*args)

    def __aiter__(self) -> Any:
        return _resolve_slow(self).__aiter__()

    def __anext__(self) -> Any:
        return _resolve_slow(self).__anext__()

    def __await__(self) -> Iterator[Any]:
        return _resolve_slow(self).__await__()  # type: ignore[no-any-return]

    def __aenter__(self) -> Any:
        return _resolve_slow(self).__aenter__()

    def __aexit__(self, *args: Any) -> Any:
        return _resolve_slow(self).__aexit__(*args)


ProxyOr: TypeAlias = Proxy[T] | T
"""A ``T`` or a proxy of one, for functions that take either."""

_target_get = Proxy.__dict__["__proxy_target__"].__get__
_target_set = Proxy.__dict__["__proxy_target__"].__set__
_factory_get = Proxy.__dict__["__proxy_factory__"].__get__
_factory_set = Proxy.__dict__["__proxy_factory__"].__set__
_default_class_get = Proxy.__dict__["__proxy_default_class__"].__get__
_default_class_set = Proxy.__dict__["__proxy_default_class__"].__set__
_default_hash_get = Proxy.__dict__["__proxy_default_hash__"].__get__
_default_hash_set = Proxy.__dict__["__proxy_default_hash__"].__set__
_pending_get = Proxy.__dict__["__proxy_pending__"].__get__
_pending_set = Proxy.__dict__["__proxy_pending__"].__set__


def _own_names(cls: type) -> frozenset[str]:
    """Names instances of ``cls`` answer themselves: whatever the proxy classes define."""
    names = {"__class__"}
    for klass in cls.__mro__:
        if klass is not object and klass is not Generic:
            names.update(vars(klass))
    return frozenset(names - _FORWARDED)


_OWN = _own_names(Proxy)

# Methods that only inspect the proxy, or that already go through
# ``__proxy_wrapped__``; everything else defined on Proxy uses the target.
_NOT_FORWARDING = frozenset(
    {
        "__init__",
        "__init_subclass__",
        "__getattribute__",
        "__setattr__",
        "__delattr__",
        "__hash__",
        "__repr__",
        "__reduce__",
        "__reduce_ex__",
        "__class_getitem__",
    }
)


def _prepare_subclass(cls: type) -> None:
    """Give a subclass of Proxy the lookup rules the original's subclasses have.

    Its own attributes (class attributes, slots, and for a class with an
    instance ``__dict__`` whatever was stored there with
    ``object.__setattr__``) are the proxy's. If it refines
    ``__proxy_wrapped__`` (say, to refuse an invalidated reference), every use
    of the target goes through that property first.
    """
    own = _own_names(cls)
    has_dict = cls.__dictoffset__ != 0
    checked = vars(Proxy)["__proxy_wrapped__"] is not _lookup(cls, "__proxy_wrapped__")

    if "__getattribute__" not in vars(cls):

        def __getattribute__(self: Proxy[Any], name: str) -> Any:
            if name in own:
                return _own(self, name)
            if has_dict:
                instance_dict = _oga(self, "__dict__")
                if name in instance_dict:
                    return instance_dict[name]
            if checked:
                target = _resolve_slow(self)
            else:
                try:
                    target = _target_get(self)
                except AttributeError:
                    target = _UNSET
                if target is _UNSET:
                    _refuse_absent(self, name)
                    target = _resolve_slow(self)
            return getattr(target, name)

        cls.__getattribute__ = __getattribute__  # type: ignore[method-assign,assignment]

    if checked:
        for name, method in vars(Proxy).items():
            if callable(method) and name not in _NOT_FORWARDING and _lookup(cls, name) is method:
                setattr(cls, name, _checked(method))


def _lookup(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _checked(method: Callable[..., Any]) -> Callable[..., Any]:
    def checked(self: Proxy[Any], *args: Any, **kwargs: Any) -> Any:
        _resolve_slow(self)  # the subclass's __proxy_wrapped__ may refuse
        return method(self, *args, **kwargs)

    checked.__name__ = getattr(method, "__name__", "method")
    return checked


def _rebuild_proxy(
    factory: FactoryType[T],
    default_class: DefaultClassType = None,
    default_hash: DefaultHashType = None,
) -> Proxy[T]:
    proxy: Proxy[T] = Proxy(factory)
    _default_class_set(proxy, default_class)
    _default_hash_set(proxy, default_hash)
    return proxy
