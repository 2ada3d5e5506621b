"""Proxies behave like their targets and travel by reference."""

from __future__ import annotations

import operator
import pickle
import threading
from typing import Any

import numpy as np
import pytest

from warpstore.proxy import (
    Proxy,
    ProxyLocker,
    ProxyResolveError,
    extract,
    get_factory,
    is_resolved,
    resolve,
    resolve_async,
)


class CountingFactory:
    """A picklable factory that counts how often it ran (in this process)."""

    calls = 0

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> Any:
        type(self).calls += 1
        return self.value


class Box:
    def __init__(self) -> None:
        self.x = 1
        self.entered = False

    def __enter__(self) -> Box:
        self.entered = True
        return self

    def __exit__(self, *args: Any) -> None:
        self.entered = False


def test_isinstance_and_type() -> None:
    p = Proxy(lambda: [1, 2, 3])
    assert isinstance(p, list)
    assert isinstance(p, Proxy)
    assert type(p) is Proxy


@pytest.mark.parametrize(
    "op",
    [
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.floordiv,
        operator.mod,
        operator.pow,
        operator.lt,
        operator.le,
        operator.eq,
        operator.ne,
        operator.gt,
        operator.ge,
        operator.and_,
        operator.or_,
        operator.xor,
        operator.lshift,
        operator.rshift,
    ],
)
def test_binary_operators_both_sides(op: Any) -> None:
    assert op(Proxy(lambda: 12), 5) == op(12, 5)
    assert op(12, Proxy(lambda: 5)) == op(12, 5)


def test_unary_and_inplace() -> None:
    p = Proxy(lambda: 3)
    assert -p == -3 and +p == 3 and abs(Proxy(lambda: -3)) == 3 and ~p == ~3
    q = Proxy(lambda: [1])
    q += [2]
    assert q == [1, 2]


def test_container_protocols() -> None:
    d = {"a": 1, "b": 2}
    p = Proxy(lambda: d)
    assert len(p) == 2
    assert list(iter(p)) == ["a", "b"]
    assert "a" in p
    assert p["b"] == 2
    p["c"] = 3
    assert d["c"] == 3
    del p["a"]
    assert "a" not in d
    assert hash(Proxy(lambda: "key")) == hash("key")
    assert {Proxy(lambda: "key"): 1}["key"] == 1


def test_attributes_and_context_manager() -> None:
    box = Box()
    p = Proxy(lambda: box)
    p.y = 5
    assert box.y == 5  # type: ignore[attr-defined]
    del p.y
    assert not hasattr(box, "y")
    with p as inner:
        assert inner.entered
    assert not box.entered


def test_numpy_interop() -> None:
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    p = Proxy(lambda: a)
    assert np.sum(p) == 15
    assert np.array_equal(np.add(p, 1), a + 1)
    assert np.array_equal(p @ np.ones(3), a @ np.ones(3))
    assert np.shares_memory(np.asarray(p), a)
    assert np.array_equal(np.sqrt(p), np.sqrt(a))
    assert p.shape == (2, 3)


def test_repr_does_not_resolve() -> None:
    p = Proxy(CountingFactory(1))
    text = repr(p)
    assert "CountingFactory" in text
    assert not is_resolved(p)
    resolve(p)
    assert "wrapping int" in repr(p)


_BIG: dict[str, Any] = {}


class NamedFactory:
    """Carries only a name; the target lives in a module-level table."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> Any:
        return _BIG[self.name]


def test_pickle_is_by_reference_and_stays_unresolved() -> None:
    _BIG["a"] = np.zeros(100 * 1024 * 1024 // 8)
    p = Proxy(NamedFactory("a"))
    assert np.sum(p) == 0  # resolved here: the 100 MB target is in the proxy
    assert is_resolved(p)
    blob = pickle.dumps(p)
    assert len(blob) < 500  # the factory only, never the target
    q = pickle.loads(blob)
    assert isinstance(get_factory(q), NamedFactory)
    assert not is_resolved(q)
    assert q.shape == (100 * 1024 * 1024 // 8,)
    assert is_resolved(q)
    # an unresolved proxy stays unresolved through a round trip too
    r = pickle.loads(pickle.dumps(Proxy(NamedFactory("a"))))
    assert not is_resolved(r)


def test_pickled_size_of_unresolved_store_proxy(tmp_path: Any) -> None:
    from warpstore.connectors.file import FileConnector
    from warpstore.store import Store

    with Store("pickle-size", FileConnector(tmp_path)) as store:
        p = store.proxy(np.ones(100 * 1024 * 1024 // 8))
        blob = pickle.dumps(p)
        assert len(blob) < 1000
        q = pickle.loads(blob)
        assert not is_resolved(q)
        assert float(np.sum(q)) == 100 * 1024 * 1024 // 8


def test_helpers() -> None:
    factory = CountingFactory([1, 2])
    p = Proxy(factory)
    assert get_factory(p) is factory
    assert not is_resolved(p)
    assert extract(p) == [1, 2] and type(extract(p)) is list
    assert is_resolved(p)


def test_resolve_async_overlaps_and_resolves_once() -> None:
    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow() -> str:
        calls.append(threading.current_thread().name)
        started.set()
        release.wait(10)
        return "done"

    p = Proxy(slow)
    resolve_async(p)
    assert started.wait(10)  # the fetch began in the background before first use
    assert not is_resolved(p)
    release.set()
    assert p == "done"
    assert calls == ["warpstore-resolve"]
    resolve_async(p)  # already resolved: nothing more happens
    assert len(calls) == 1


def test_resolve_async_failure_surfaces_on_use() -> None:
    def boom() -> None:
        raise KeyError("nope")

    p = Proxy(boom)
    resolve_async(p)
    with pytest.raises(ProxyResolveError, match="KeyError"):
        resolve(p)


def test_failed_factory_raises_and_can_be_retried() -> None:
    attempts = []

    def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("server down")
        return 42

    p = Proxy(flaky)
    with pytest.raises(ProxyResolveError, match="server down"):
        p + 1
    assert not is_resolved(p)
    assert p + 1 == 43


def test_non_callable_factory_is_rejected() -> None:
    with pytest.raises(TypeError, match="callable"):
        Proxy(42)  # type: ignore[arg-type]


def test_proxy_locker() -> None:
    factory = CountingFactory("x")
    locked = ProxyLocker(Proxy(factory))
    with pytest.raises(AttributeError, match="unlock"):
        locked.upper()  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        locked.foo = 1  # type: ignore[attr-defined]
    restored = pickle.loads(pickle.dumps(locked))
    assert isinstance(restored, ProxyLocker)
    p = restored.unlock()
    assert not is_resolved(p)
    assert p.upper() == "X"


# -- the original's behaviour, kept after the rename ---------------------------


def test_next_on_an_iterator_proxy() -> None:
    p = Proxy(lambda: iter([1, 2]))
    assert next(p) == 1
    assert next(p) == 2
    with pytest.raises(StopIteration):
        next(p)


def annotated(x: int, y: str = "a") -> float:
    """Docstring of the target."""
    return 1.0


def test_function_metadata_is_the_targets() -> None:
    import json

    p = Proxy(lambda: annotated)
    assert p.__module__ == __name__
    assert p.__name__ == "annotated" and p.__qualname__ == "annotated"
    assert p.__doc__ == "Docstring of the target."
    assert p.__annotations__ == annotated.__annotations__ != {}
    assert p(1) == 1.0
    assert Proxy(lambda: json.dumps).__module__ == "json"
    # the class itself still says where it lives
    assert Proxy.__module__ == "warpstore.proxy"
    import inspect

    assert list(inspect.signature(p).parameters) == ["x", "y"]


def test_instance_dict_is_the_targets() -> None:
    box = Box()
    p = Proxy(lambda: box)
    assert vars(p) is box.__dict__
    assert "x" in dir(p)


class TaggedProxy(Proxy[Any]):
    """A subclass with attributes of its own, as the original permits."""

    __slots__ = ("tag",)
    kind = "tagged"

    def __init__(self, factory: Any, tag: str) -> None:
        super().__init__(factory)
        self.tag = tag  # declared on the class: set on the proxy, no resolve

    def describe(self) -> str:
        return f"{self.kind}:{self.tag}"


class DictProxy(Proxy[Any]):
    """A subclass with an instance dict (no __slots__)."""

    kind = "dict"

    def __init__(self, factory: Any) -> None:
        super().__init__(factory)
        object.__setattr__(self, "note", "mine")


def test_subclass_attributes_are_its_own() -> None:
    box = Box()
    p = TaggedProxy(lambda: box, "t1")
    assert p.tag == "t1" and p.describe() == "tagged:t1"
    p.tag = "t2"
    assert p.tag == "t2" and not is_resolved(p)
    p.y = 2  # not declared: the target's
    assert is_resolved(p) and box.y == 2  # type: ignore[attr-defined]
    assert p.x == 1 and isinstance(p, Box)
    d = DictProxy(lambda: box)
    assert d.note == "mine" and not is_resolved(d)
    d.kind = "changed"  # declared on the class: the proxy's, as in the original
    assert d.kind == "changed" and DictProxy.kind == "dict" and not is_resolved(d)
    assert d.x == 1


class GuardedProxy(Proxy[Any]):
    """Refines __proxy_wrapped__ like the original's reference proxies."""

    __slots__ = ("valid",)

    def __init__(self, factory: Any) -> None:
        super().__init__(factory)
        object.__setattr__(self, "valid", True)

    @property
    def __proxy_wrapped__(self) -> Any:
        if not object.__getattribute__(self, "valid"):
            raise RuntimeError("reference was invalidated")
        return super().__proxy_wrapped__


def test_subclass_refining_proxy_wrapped_is_always_asked() -> None:
    p = GuardedProxy(lambda: [1, 2])
    assert p * 2 == [1, 2, 1, 2] and len(p) == 2 and p.count(1) == 1
    object.__setattr__(p, "valid", False)
    # the target is still cached, but every use goes through the refinement
    for use in (lambda: p * 2, lambda: len(p), lambda: p.count(1), lambda: p[0]):
        with pytest.raises(RuntimeError, match="invalidated"):
            use()
    assert "GuardedProxy" in repr(p)  # inspection is still fine


def test_resolve_error_has_cause_and_runs_the_factory_once() -> None:
    calls = []

    def dead_server() -> None:
        calls.append(1)
        raise ConnectionError("timed out")

    p = Proxy(dead_server)
    for fn in (extract, resolve, str):
        with pytest.raises(ProxyResolveError) as info:
            fn(p)
        assert isinstance(info.value.cause, ConnectionError)
        assert info.value.__cause__ is info.value.cause
    assert len(calls) == 3  # one attempt per call, never two
    assert not is_resolved(p)


def test_missing_factory_raises_resolve_error() -> None:
    p = Proxy.__new__(Proxy)
    with pytest.raises(ProxyResolveError, match="not initialized") as info:
        extract(p)
    assert isinstance(info.value.cause, AttributeError)


def test_cache_defaults_and_target() -> None:
    factory = CountingFactory("never")
    p = Proxy(factory, cache_defaults=True, target="value")
    assert is_resolved(p) and p == "value"
    q = pickle.loads(pickle.dumps(p))
    assert not is_resolved(q)
    assert isinstance(q, str) and hash(q) == hash("value")
    assert not is_resolved(q)
    # without a target there is nothing to cache: cache_defaults is ignored
    r = Proxy(lambda: [1], cache_defaults=True)
    assert not is_resolved(r) and isinstance(r, list) and is_resolved(r)


def test_local_class_is_not_pickled_by_reference() -> None:
    class Local:
        pass

    obj = Local()
    p = Proxy(NamedFactory("local"), cache_defaults=True, target=obj)
    q = pickle.loads(pickle.dumps(p))  # plain pickle could not carry Local
    _BIG["local"] = obj
    assert isinstance(q, Local)  # asks the target instead
    assert is_resolved(q)


def test_generic_alias_call_does_not_resolve() -> None:
    p = Proxy[int](CountingFactory(3))
    assert not is_resolved(p)
    assert p + 1 == 4


def test_format_round_pow_and_math() -> None:
    import math

    p = Proxy(lambda: 2.71828)
    assert f"{p:.2f}" == "2.72" and round(p, 1) == 2.7 and round(p) == 3
    assert math.floor(p) == 2 and math.ceil(p) == 3 and math.trunc(p) == 2
    assert pow(Proxy(lambda: 3), 2, 5) == 4 and divmod(Proxy(lambda: 7), 2) == (3, 1)
    assert complex(Proxy(lambda: 1.5)) == 1.5 + 0j
    assert [0, 1, 2][Proxy(lambda: 1)] == 1  # __index__


def test_inplace_keeps_the_proxy() -> None:
    p = Proxy(lambda: 1)
    q = p
    p += 1
    assert p is q and p == 2 and isinstance(p, Proxy)


def test_weakref_to_a_proxy() -> None:
    import weakref

    p = Proxy(lambda: 1)
    ref = weakref.ref(p)
    assert ref() is p


def test_async_context_manager_and_awaitable() -> None:
    import asyncio

    class ACM:
        async def __aenter__(self) -> str:
            return "in"

        async def __aexit__(self, *args: Any) -> None:
            return None

    async def value() -> int:
        return 5

    async def main() -> tuple[str, int]:
        async with Proxy(ACM) as entered:
            pass
        return entered, await Proxy(lambda: value())

    assert asyncio.run(main()) == ("in", 5)


def test_proxy_attributes_of_the_original() -> None:
    factory = CountingFactory([1])
    p = Proxy(factory)
    assert p.__proxy_factory__ is factory and p.__proxy_resolved__ is False
    with pytest.raises(AttributeError):
        p.__proxy_target__  # noqa: B018 - unresolved: no target yet
    assert p.__proxy_wrapped__ == [1] and p.__proxy_target__ == [1]
    del p.__proxy_wrapped__  # back to unresolved; the next use calls the factory again
    assert not is_resolved(p)
    before = CountingFactory.calls
    assert p == [1] and CountingFactory.calls == before + 1
    p.__proxy_wrapped__ = [2]
    assert p == [2]
    # a subclass written like the original's deletes the slot itself
    object.__delattr__(p, "__proxy_target__")
    assert not is_resolved(p) and p == [1]


def test_resolve_async_failure_then_retry_runs_the_factory_again() -> None:
    attempts: list[str] = []

    def flaky() -> str:
        attempts.append(threading.current_thread().name)
        if len(attempts) == 1:
            raise ConnectionError("server down")
        return "ok"

    p = Proxy(flaky)
    resolve_async(p)
    with pytest.raises(ProxyResolveError) as info:
        resolve(p)
    assert isinstance(info.value.cause, ConnectionError)
    assert p == "ok"  # the failed background fetch is not replayed: a fresh attempt
    assert attempts == ["warpstore-resolve", "MainThread"]
