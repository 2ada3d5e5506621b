"""The Store over every foundation connector: objects, proxies, cache, registry."""

from __future__ import annotations

import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from warpstore.connectors.local import LocalConnector
from warpstore.exceptions import ProxyResolveError, SerializationError, StoreExistsError
from warpstore.proxy import Proxy, ProxyLocker, get_factory, is_resolved
from warpstore.store import (
    ContextLifetime,
    LeaseLifetime,
    Store,
    StoreFactory,
    get_store,
    register_store,
    registry,
    unregister_store,
)


@pytest.fixture
def store(connector: Any, request: pytest.FixtureRequest) -> Any:
    s = Store(f"store-{request.node.name}", connector, metrics=True)
    yield s
    s.close()
    unregister_store(s.name)


def test_put_get_exists_evict(store: Store[Any]) -> None:
    obj = {"a": np.arange(10), "b": "text"}
    key = store.put(obj)
    assert store.exists(key)
    out = store.get(key)
    np.testing.assert_array_equal(out["a"], obj["a"])
    store.evict(key)
    assert not store.exists(key)
    assert store.get(key) is None
    assert store.get(key, default="dflt") == "dflt"


def test_none_is_a_storable_object(store: Store[Any]) -> None:
    key = store.put(None)
    assert store.exists(key)
    assert store.proxy_from_key(key) == None  # noqa: E711 - resolves a stored None


def test_put_batch_and_proxy_batch(store: Store[Any]) -> None:
    keys = store.put_batch([1, "two", b"three"])
    assert [store.get(k) for k in keys] == [1, "two", b"three"]
    proxies = store.proxy_batch([[1], [2]])
    assert [p[0] for p in proxies] == [1, 2]


def test_proxy_is_populated_and_resolves_elsewhere_in_process(store: Store[Any]) -> None:
    p = store.proxy([1, 2, 3])
    assert is_resolved(p)  # populate_target: the producer does not re-fetch
    q = pickle.loads(pickle.dumps(p))
    assert not is_resolved(q)
    assert q == [1, 2, 3]


def test_missing_key_proxy_raises_naming_store_and_key(store: Store[Any]) -> None:
    key = store.put("gone")
    store.evict(key)
    p = store.proxy_from_key(key)
    with pytest.raises(ProxyResolveError) as info:
        str(p)
    assert store.name in str(info.value) and repr(key) in str(info.value)
    assert info.value.key == key and info.value.store == store.name
    assert not is_resolved(p)
    # the proxy can be retried once the object is there
    store.connector.set(key, store.serialize("back"))
    assert p == "back"


def test_evict_proxy_evicts_on_first_resolve(store: Store[Any]) -> None:
    p = store.proxy("once", evict=True)
    q = pickle.loads(pickle.dumps(p))
    key = get_factory(q).key  # type: ignore[attr-defined]
    assert store.exists(key)
    assert q == "once"
    assert not store.exists(key)


def test_unpicklable_object(store: Store[Any]) -> None:
    with pytest.raises(SerializationError, match="lock"):
        store.proxy(threading.Lock())


def test_locked_proxy(store: Store[Any]) -> None:
    locked = store.locked_proxy([1])
    assert isinstance(locked, ProxyLocker)
    assert locked.unlock() == [1]


def test_cache_serves_repeat_reads(store: Store[Any]) -> None:
    key = store.put([1, 2])
    first = store.get(key)
    assert store.get(key) is first
    assert store.metrics is not None
    assert store.metrics.get("cache_hit")["count"] == 1
    assert store.metrics.get("get")["count"] == 1


def test_metrics_count_bytes_and_time(store: Store[Any]) -> None:
    store.put(b"x" * 1000)
    m = store.metrics.get("put")  # type: ignore[union-attr]
    assert m["count"] == 1 and m["bytes"] == 1001 and m["time_s"] > 0
    assert "serialize" in store.metrics.summary()  # type: ignore[union-attr]


def test_config_round_trip(store: Store[Any]) -> None:
    key = store.put("cfg")
    config = store.config()
    pickle.dumps(config)  # plain data
    other = Store.from_config({**config, "name": store.name + "-copy"})
    try:
        assert other.get(key) == "cfg"
        assert other.cache.maxsize == store.cache.maxsize
    finally:
        other.close()


def upper_serializer(obj: str) -> bytes:
    return obj.upper().encode()


def upper_deserializer(data: Any) -> str:
    return bytes(data).decode() + "!"


def test_custom_serializer_hooks_travel_with_proxies() -> None:
    with Store(
        "hooks",
        LocalConnector(),
        serializer=upper_serializer,
        deserializer=upper_deserializer,
        cache_size=0,
    ) as store:
        key = store.put("abc")
        assert bytes(store.connector.get(key)) == b"ABC"
        assert store.get(key) == "ABC!"
        p = store.proxy("xyz")
        config = get_factory(p).store_config  # type: ignore[attr-defined]
        rebuilt = Store.from_config({**config, "name": "hooks-rebuilt"})
        assert rebuilt.get(get_factory(p).key) == "XYZ!"  # type: ignore[attr-defined]


def test_registry() -> None:
    s = Store("reg-test", LocalConnector(), register=True)
    try:
        assert get_store("reg-test") is s
        with pytest.raises(StoreExistsError):
            Store("reg-test", LocalConnector(), register=True)
        with pytest.raises(StoreExistsError):
            register_store(s)  # the same store twice raises too, as in the original
        register_store(s, exist_ok=True)
    finally:
        s.close()
    assert get_store("reg-test") is None


def test_store_rebuilt_exactly_once_per_process_under_threads() -> None:
    built = []
    original = Store.from_config.__func__  # type: ignore[attr-defined]

    def counting(cls: type, config: dict[str, Any]) -> Any:
        built.append(config["name"])
        time.sleep(0.05)  # widen the race window
        return original(cls, config)

    source = Store("once-source", LocalConnector(), register=False)
    key = source.put("v")
    factories = [StoreFactory(key, {**source.config(), "name": "once-target"}) for _ in range(16)]
    Store.from_config = classmethod(counting)  # type: ignore[method-assign,assignment]
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda f: Proxy(f) + "", factories))
    finally:
        Store.from_config = classmethod(original)  # type: ignore[method-assign,assignment]
        target = get_store("once-target")
        if target is not None:
            target.close()
        registry.unregister_store("once-target")
    assert results == ["v"] * 16
    assert built == ["once-target"]


def test_context_lifetime_evicts_on_exit(store: Store[Any]) -> None:
    with ContextLifetime(store) as lifetime:
        p = store.proxy("a", lifetime=lifetime)
        key = get_factory(p).key  # type: ignore[attr-defined]
        assert store.exists(key)
    assert not store.exists(key)
    assert lifetime.done()
    with pytest.raises(RuntimeError):
        store.proxy("b", lifetime=lifetime)


def test_lease_lifetime_expires_and_extends(store: Store[Any]) -> None:
    key = store.put("leased")  # first: a node server may take a while to start
    lease = LeaseLifetime(store, expiry=0.3)
    lease.add_key(key)
    lease.extend(0.3)
    time.sleep(0.35)
    assert store.exists(key)  # extended
    deadline = time.monotonic() + 5
    while store.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.exists(key)
    assert lease.done()


def test_close_unregisters_and_is_idempotent() -> None:
    s = Store("close-test", LocalConnector(), register=True)
    s.close()
    s.close()
    assert get_store("close-test") is None
