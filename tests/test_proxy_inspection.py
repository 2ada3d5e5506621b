"""Looking at a proxy never fetches its target.

Frameworks inspect every argument they ship: Parsl and Dask check types
(``isinstance``, ``type()``), dispatch on them (``functools.singledispatch``),
hash them into dicts and pickle them (cloudpickle, also inside a
``ProxyLocker``). A proxy made by ``Store.proxy`` carries its target's class
and hash, so none of that reaches the connector; a counting connector proves
it.
"""

from __future__ import annotations

import copy
import functools
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import cloudpickle
import numpy as np
import pytest

from warpstore.connectors.local import LocalConnector, LocalKey
from warpstore.exceptions import ConnectorConnectionError, ProxyResolveError
from warpstore.proxy import Proxy, ProxyLocker, extract, get_factory, is_resolved, resolve
from warpstore.store import Store


class CountingConnector(LocalConnector):
    """A LocalConnector that counts the reads reaching it."""

    gets = 0
    down = False

    def get(self, key: LocalKey) -> Any:
        type(self).gets += 1
        if type(self).down:
            raise ConnectorConnectionError("server at 127.0.0.1:1 timed out")
        return super().get(key)

    def get_batch(self, keys: Sequence[LocalKey]) -> list[Any]:
        type(self).gets += len(keys)
        return super().get_batch(keys)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[Store[Any]]:
    CountingConnector.gets = 0
    CountingConnector.down = False
    # no cache: every resolve must reach the connector, where it is counted
    with Store(f"inspect-{request.node.name}", CountingConnector(), cache_size=0) as s:
        yield s


def travelled(store: Store[Any], obj: Any) -> Proxy[Any]:
    """A proxy as a consumer receives it: made by the store, pickled, unresolved."""
    q: Proxy[Any] = pickle.loads(pickle.dumps(store.proxy(obj)))
    assert not is_resolved(q)
    CountingConnector.gets = 0
    return q


def assert_not_fetched(q: Proxy[Any]) -> None:
    assert not is_resolved(q)
    assert CountingConnector.gets == 0


def test_isinstance_and_type_checks_do_not_fetch(store: Store[Any]) -> None:
    q = travelled(store, np.arange(1000.0))
    assert isinstance(q, np.ndarray)
    assert not isinstance(q, (list, dict))
    assert isinstance(q, Proxy)
    assert type(q) is Proxy
    assert q.__class__ is np.ndarray
    assert_not_fetched(q)
    # used for real: one fetch, and from then on the target answers
    assert float(q.sum()) == float(np.arange(1000.0).sum())
    assert CountingConnector.gets == 1 and is_resolved(q)


def test_singledispatch_does_not_fetch(store: Store[Any]) -> None:
    @functools.singledispatch
    def kind(obj: Any) -> str:
        return "other"

    @kind.register
    def _(obj: np.ndarray) -> str:
        return "array"

    @kind.register
    def _(obj: dict) -> str:  # type: ignore[type-arg]
        return "dict"

    q = travelled(store, np.zeros(3))
    d = travelled(store, {"a": 1})
    assert kind(q) == "array" and kind(d) == "dict"
    assert_not_fetched(q)
    assert_not_fetched(d)


def test_hash_does_not_fetch(store: Store[Any]) -> None:
    q = travelled(store, ("task", 7))
    assert hash(q) == hash(("task", 7))
    seen = {q: "value"}  # dict insertion hashes only; no comparison yet
    assert len(seen) == 1
    assert_not_fetched(q)
    # an unhashable target stays unhashable, still without fetching
    u = travelled(store, [1, 2])
    with pytest.raises(TypeError, match="unhashable"):
        hash(u)
    with pytest.raises(TypeError):
        hash(u)  # raised again, not a stale re-raise of one instance
    assert_not_fetched(u)


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_pickling_does_not_fetch(store: Store[Any], dumps: Any) -> None:
    q = travelled(store, np.ones(1024))
    blob = dumps(q)
    assert len(blob) < 1000
    locked = dumps(ProxyLocker(q))
    assert_not_fetched(q)
    r = pickle.loads(blob)
    s = pickle.loads(locked).unlock()
    # the cached class travels on: the next hop does not fetch either
    assert isinstance(r, np.ndarray) and isinstance(s, np.ndarray)
    assert_not_fetched(r)
    assert_not_fetched(s)
    assert float(np.sum(r)) == 1024.0
    assert CountingConnector.gets == 1


def test_copy_and_repr_do_not_fetch(store: Store[Any]) -> None:
    q = travelled(store, "text")
    c = copy.copy(q)
    assert type(c) is Proxy and get_factory(c) is get_factory(q)
    assert "StoreFactory" in repr(q)
    assert_not_fetched(q)
    assert_not_fetched(c)


def test_the_producer_never_fetches_what_it_has(store: Store[Any]) -> None:
    obj = {"k": np.arange(4)}
    p = store.proxy(obj)
    assert is_resolved(p) and extract(p) is obj
    assert isinstance(p, dict) and p["k"].shape == (4,)
    assert CountingConnector.gets == 0


def test_class_is_the_targets_once_resolved(store: Store[Any]) -> None:
    # The cached class describes the object at proxy() time; once the real
    # target is here it answers (as in the original).
    q = travelled(store, [1, 2, 3])
    assert isinstance(q, list)
    q.append(4)  # resolves
    assert CountingConnector.gets == 1
    object.__setattr__(q, "__proxy_target__", (1, 2))
    assert isinstance(q, tuple) and not isinstance(q, list)


def test_proxy_from_key_has_nothing_cached_and_resolves_to_answer(store: Store[Any]) -> None:
    # Without the object in hand there is no class to carry: isinstance must
    # ask the target, exactly as in the original.
    key = store.put(np.zeros(2))
    p = store.proxy_from_key(key)
    assert isinstance(p, np.ndarray)
    assert is_resolved(p) and CountingConnector.gets == 1


def test_a_dead_server_costs_one_attempt_per_use(store: Store[Any]) -> None:
    q = travelled(store, np.zeros(4))
    CountingConnector.down = True
    for use in (extract, resolve, lambda p: p.shape):
        with pytest.raises(ProxyResolveError) as info:
            use(q)
        assert isinstance(info.value.cause, ConnectorConnectionError)
    assert CountingConnector.gets == 3
    CountingConnector.down = False
    assert q.shape == (4,)  # retried once the server is back


def test_evict_proxy_survives_inspection_until_first_use(store: Store[Any]) -> None:
    # A workflow engine type-checks and re-pickles an evict=True proxy on the
    # submit side and again on the worker; only the task's use may consume it.
    q = pickle.loads(pickle.dumps(store.proxy(np.arange(3), evict=True)))
    key = get_factory(q).key  # type: ignore[attr-defined]
    assert isinstance(q, np.ndarray) and not isinstance(q, (list, tuple))
    hop = cloudpickle.loads(cloudpickle.dumps(q))
    assert isinstance(hop, np.ndarray)
    assert store.exists(key) and CountingConnector.gets == 0
    assert int(hop.sum()) == 3
    assert not store.exists(key)


class Slotted:
    __slots__ = ("a",)

    def __init__(self) -> None:
        self.a = 1


class WithDict:
    def __init__(self) -> None:
        self.a = 1


def test_probes_for_hooks_the_class_lacks_do_not_fetch(store: Store[Any]) -> None:
    # Dask asks every argument for __dask_graph__/__dask_tokenize__; an array,
    # a tuple or a slotted object cannot have them, and the cached class says so.
    for obj in (np.arange(3), ("a", 1), Slotted()):
        q = travelled(store, obj)
        assert not hasattr(q, "__dask_graph__")
        assert getattr(q, "__dask_tokenize__", None) is None
        with pytest.raises(AttributeError, match="__cuda_array_interface__"):
            q.__cuda_array_interface__  # noqa: B018
        assert_not_fetched(q)
    # a name the class has needs the value: that is a real use
    q = travelled(store, Slotted())
    assert q.a == 1 and CountingConnector.gets == 1
    # instances with a __dict__ may carry anything: only the target can answer
    w = travelled(store, WithDict())
    assert not hasattr(w, "__dask_graph__")
    assert is_resolved(w) and CountingConnector.gets == 1


def _inspect_in_worker(p: Any) -> tuple[bool, bool, bool, float]:
    """What a framework's worker does before the task runs: type checks and probes."""
    looks_right = isinstance(p, np.ndarray) and not isinstance(p, dict)
    probed = hasattr(p, "__dask_graph__")
    still_unresolved = not is_resolved(p)
    return looks_right, probed, still_unresolved, float(np.sum(p))


def test_a_process_pool_worker_inspects_without_fetching(tmp_path: Any) -> None:
    import concurrent.futures
    import multiprocessing as mp

    from warpstore.connectors.file import FileConnector

    with Store("inspect-pool", FileConnector(str(tmp_path / "objs"))) as s:
        p = s.proxy(np.ones(1000))
        ctx = mp.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            result = pool.submit(_inspect_in_worker, p).result(timeout=120)
    looks_right, probed, unresolved, total = result
    assert looks_right and not probed and unresolved  # nothing fetched before the task
    assert total == 1000.0  # and the task itself gets the data
