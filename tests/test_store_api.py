"""The rest of the original's Store API: per-call options, non-proxiable types,
lifetimes on every proxy-making call, the registry, get_key/get_store without
resolving, factories, and connectors as context managers."""

from __future__ import annotations

import gc
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from warpstore.connectors.file import FileConnector
from warpstore.connectors.local import LocalConnector
from warpstore.connectors.protocols import ConnectorMixin
from warpstore.exceptions import StoreExistsError
from warpstore.factory import Factory, LambdaFactory, SimpleFactory
from warpstore.proxy import Proxy, ProxyLocker, get_factory, is_resolved
from warpstore.store import (
    ContextLifetime,
    StaticLifetime,
    Store,
    get_or_create_store,
    get_store,
    register_store,
    store_registration,
    unregister_store,
)
from warpstore.store.exceptions import (
    NonProxiableTypeError,
    ProxyResolveMissingKeyError,
    ProxyStoreFactoryError,
    StoreError,
)
from warpstore.store.types import ConnectorKeyT, DeserializerT, SerializerT
from warpstore.store.utils import get_key, resolve_async


class CountingConnector(LocalConnector):
    """A LocalConnector that counts gets, to prove what does not fetch."""

    gets = 0

    def get(self, key: Any) -> Any:
        type(self).gets += 1
        return super().get(key)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[Store[Any]]:
    CountingConnector.gets = 0
    s: Store[Any] = Store(f"api-{request.node.name}", CountingConnector(), cache_size=0)
    yield s
    s.close()
    unregister_store(s)


def test_per_call_serializer_deserializer_populate_target(store: Store[Any]) -> None:
    key = store.put([1, 2], serializer=lambda o: repr(o).encode())
    assert store.get(key, deserializer=lambda b: bytes(b).decode()) == "[1, 2]"
    p = store.proxy(
        "abc",
        serializer=lambda s: s.encode(),
        deserializer=lambda b: bytes(b).decode().upper(),
        populate_target=False,
    )
    assert not is_resolved(p) and p == "ABC"
    q = store.proxy("abc", populate_target=True)
    assert is_resolved(q)
    keys = store.put_batch(["a", "b"], serializer=lambda s: s.encode())
    assert [store.get(k, deserializer=bytes) for k in keys] == [b"a", b"b"]
    batch = store.proxy_batch(["x"], serializer=lambda s: s.encode(), deserializer=bytes,
                              populate_target=False)
    assert batch[0] == b"x"
    locked = store.locked_proxy("l", populate_target=False)
    assert isinstance(locked, ProxyLocker) and not is_resolved(locked.unlock())


def test_unknown_keyword_names_the_store_call(tmp_path: Path) -> None:
    with Store("api-kw", FileConnector(tmp_path / "d")) as store:
        with pytest.raises(TypeError, match=r"Store\.proxy\(\) got an unexpected keyword "
                                            r"argument 'serialiser'"):
            store.proxy("x", serialiser=str)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"Store\.put\(\)"):
            store.put("x", colour="red")
        with pytest.raises(TypeError, match=r"Store\.proxy_batch\(\)"):
            store.proxy_batch(["x"], colour="red")
        with pytest.raises(TypeError, match=r"Store\.owned_proxy\(\)"):
            store.owned_proxy("x", colour="red")
        assert list((tmp_path / "d").iterdir()) == []  # nothing was stored


def test_non_proxiable_types(store: Store[Any]) -> None:
    for obj in (None, True, False):
        with pytest.raises(NonProxiableTypeError):
            store.proxy(obj)
        assert store.proxy(obj, skip_nonproxiable=True) is obj
        assert store.locked_proxy(obj, skip_nonproxiable=True) is obj
    assert issubclass(NonProxiableTypeError, StoreError)
    with pytest.raises(NonProxiableTypeError):
        store.proxy_batch([1, None])
    # numbers and strings are proxied, as in the original
    assert store.proxy(3) + 1 == 4 and store.proxy(2.5) * 2 == 5.0 and store.proxy("s") == "s"
    assert store.get(store.put(None)) is None  # put/get take any object


def test_evict_with_lifetime_is_refused(store: Store[Any]) -> None:
    with ContextLifetime(store) as lt:
        for call in (
            lambda: store.proxy("x", evict=True, lifetime=lt),
            lambda: store.proxy_batch(["x"], evict=True, lifetime=lt),
            lambda: store.locked_proxy("x", evict=True, lifetime=lt),
            lambda: store.proxy_from_key(store.put("k"), evict=True, lifetime=lt),
        ):
            with pytest.raises(ValueError, match="exclusive"):
                call()


def test_lifetime_on_every_proxy_making_call(store: Store[Any]) -> None:
    with ContextLifetime(store) as lt:
        keys = [
            get_key(store.proxy("a", lifetime=lt)),
            *(get_key(p) for p in store.proxy_batch(["b", "c"], lifetime=lt)),
            get_key(store.locked_proxy("d", lifetime=lt).unlock()),
            get_key(store.proxy_from_key(store.put("e"), lifetime=lt)),
        ]
        assert all(store.exists(k) for k in keys)
    assert not any(store.exists(k) for k in keys)


def test_static_lifetime_is_one_instance_across_stores(store: Store[Any]) -> None:
    lt = StaticLifetime()
    assert StaticLifetime() is lt
    with Store("api-static-2", LocalConnector()) as other:
        p = store.proxy("s", lifetime=lt)
        q = other.proxy("t", lifetime=lt)
        lt.add_proxy(other.proxy("u"))
        assert p == "s" and q == "t" and not lt.done()
    with pytest.raises(ValueError, match="store="):
        lt.add_key(("k",))


def test_is_cached_and_get_key_never_fetch(request: pytest.FixtureRequest) -> None:
    with Store("api-cache", CountingConnector(), cache_size=4) as store:
        key = store.put("v")
        assert not store.is_cached(key)
        store.get(key)
        assert store.is_cached(key)
        store.evict(key)
        assert not store.is_cached(key)
        p = pickle.loads(pickle.dumps(store.proxy("w")))
        CountingConnector.gets = 0
        assert get_key(p) == get_factory(p).key  # type: ignore[attr-defined]
        assert get_store(p) is store
        assert not is_resolved(p) and CountingConnector.gets == 0
        with pytest.raises(ProxyStoreFactoryError):
            get_key(Proxy(lambda: 1))
        with pytest.raises(ProxyStoreFactoryError):
            get_store(Proxy(lambda: 1))


def test_resolve_async_then_use(store: Store[Any]) -> None:
    p = pickle.loads(pickle.dumps(store.proxy([1, 2])))
    resolve_async(p)
    assert p == [1, 2]
    with pytest.raises(ProxyStoreFactoryError):
        resolve_async(Proxy(lambda: 0))


def test_registry_semantics() -> None:
    s: Store[Any] = Store("api-reg", LocalConnector())
    register_store(s)
    with pytest.raises(StoreExistsError):
        register_store(s)
    with pytest.raises(StoreExistsError):
        register_store(Store("api-reg", LocalConnector()))
    register_store(s, exist_ok=True)
    unregister_store(s)  # a Store object, not only a name
    assert get_store("api-reg") is None
    s.proxy("implicit")  # making a proxy registers the store implicitly...
    assert get_store("api-reg") is s
    register_store(s)  # ...and an explicit registration of it is still accepted once
    with pytest.raises(StoreExistsError):
        register_store(s)
    s.close()
    assert get_store("api-reg") is None


def test_store_registration_context_manager() -> None:
    a: Store[Any] = Store("api-ctx-a", LocalConnector())
    b: Store[Any] = Store("api-ctx-b", LocalConnector())
    with store_registration(a, b):
        assert get_store("api-ctx-a") is a and get_store("api-ctx-b") is b
        with pytest.raises(StoreExistsError), store_registration(a):
            pass
        assert get_store("api-ctx-a") is a
    assert get_store("api-ctx-a") is None and get_store("api-ctx-b") is None


def test_get_or_create_store_builds_once(store: Store[Any]) -> None:
    config = store.config().model_dump() | {"name": "api-goc"}
    first = get_or_create_store(config)
    try:
        assert get_or_create_store(config) is first
        assert get_store("api-goc") is first
        assert get_or_create_store(config, register=False) is first
    finally:
        first.close()
    assert get_store("api-goc") is None
    unregistered = get_or_create_store(config, register=False)
    assert get_store("api-goc") is None
    unregistered.close()


def test_missing_key_error_type(store: Store[Any]) -> None:
    key = store.put("gone")
    store.evict(key)
    with pytest.raises(ProxyResolveMissingKeyError) as info:
        str(store.proxy_from_key(key))
    assert info.value.key == key and info.value.store_name == store.name
    assert info.value.store_type is Store


def test_factories() -> None:
    simple = Proxy(SimpleFactory([1, 2]))
    assert simple == [1, 2] and isinstance(SimpleFactory(1), Factory)
    calls: list[int] = []

    def make(a: int, *, b: int) -> int:
        calls.append(1)
        time.sleep(0.05)
        return a + b

    lf = LambdaFactory(make, 1, b=2)
    lf.resolve_async()
    assert Proxy(lf) == 3 and calls == [1]  # waited for the background call, no second one
    assert pickle.loads(pickle.dumps(LambdaFactory(sum, [1, 2])))() == 3


def test_types_module_names() -> None:
    assert ConnectorKeyT is not None and SerializerT is not None and DeserializerT is not None


def test_every_connector_is_a_context_manager(tmp_path: Path) -> None:
    import importlib

    for module, name in [
        ("local", "LocalConnector"), ("file", "FileConnector"), ("redis", "RedisConnector"),
        ("zmq", "ZMQConnector"), ("ucx", "UCXConnector"), ("margo", "MargoConnector"),
        ("daos", "DAOSConnector"), ("globus", "GlobusConnector"),
        ("endpoint", "EndpointConnector"), ("multi", "MultiConnector"),
    ]:
        cls = getattr(importlib.import_module(f"warpstore.connectors.{module}"), name)
        assert issubclass(cls, ConnectorMixin), name
    with LocalConnector() as c:
        assert c.get(c.put(b"x")) == b"x"
    with FileConnector(tmp_path / "cm") as f:
        f.put(b"y")
    assert not (tmp_path / "cm").exists()  # closed, and clear=True is the default


def test_file_connector_clear_default_and_config_copies(tmp_path: Path) -> None:
    owner = FileConnector(tmp_path / "d")
    key = owner.put(b"data")
    copy = FileConnector.from_config(owner.config())
    copy.close()  # a copy built from config never clears
    assert owner.get(key) == b"data"
    FileConnector(tmp_path / "d", clear=False).close()
    assert (tmp_path / "d").exists()
    owner.close()
    assert not (tmp_path / "d").exists()


def test_owned_proxies_are_released_by_gc_in_bulk(store: Store[Any]) -> None:
    keys = []
    for i in range(20):
        p = store.owned_proxy([i])
        keys.append(get_key(p))
    del p
    gc.collect()
    assert not any(store.exists(k) for k in keys)


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def _point_out(p: Point) -> bytes:
    return f"{p.x},{p.y}".encode()


def _point_in(data: memoryview) -> Point:
    x, y = bytes(data).decode().split(",")
    return Point(int(x), int(y))


def test_user_registered_serializer(store: Store[Any]) -> None:
    from warpstore.exceptions import SerializationError
    from warpstore.serialize import (
        deserialize,
        register_serializer,
        serialize,
        unregister_serializer,
    )

    register_serializer("test.point", Point, _point_out, _point_in)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_serializer("test.point", Point, _point_out, _point_in)
        data = serialize(Point(3, 4))
        assert b"3,4" in bytes(data) and b"test.point" in bytes(data)
        back = store.get(store.put(Point(1, 2)))
        assert (back.x, back.y) == (1, 2)
        p = pickle.loads(pickle.dumps(store.proxy(Point(5, 6))))
        assert p.x == 5
    finally:
        unregister_serializer("test.point")
    with pytest.raises(SerializationError, match=r"'test\.point', which is not registered"):
        deserialize(data)


def test_globus_endpoint_names_of_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import re

    import warpstore.connectors.globus_adapter as adapter
    from tests import globus_double
    from warpstore.connectors.globus import GlobusConnector, GlobusEndpoint, GlobusEndpoints

    a = GlobusEndpoint("coll-a", "/~/a", str(tmp_path / "a"), host_regex=re.compile("^a-"))
    b = GlobusEndpoint(uuid="coll-b", endpoint_path="/~/b", local_path=str(tmp_path / "b"),
                       host_regex=r"^b-host$")
    assert a.host_regex == "^a-" and GlobusEndpoint("u", "/p", None, host_pattern="x").host_regex
    endpoints = GlobusEndpoints([a, b])
    assert len(endpoints) == 2 and endpoints["coll-b"] == b and list(endpoints) == [a, b]
    assert endpoints.get_by_host("a-node1") == a
    with pytest.raises(ValueError, match="matches no"):
        endpoints.get_by_host("c-host")
    with pytest.raises(KeyError):
        endpoints["nope"]
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(endpoints.dict()))
    assert list(GlobusEndpoints.from_json(path)) == [a, b]
    with pytest.raises(ValueError, match="twice"):
        GlobusEndpoints([a, a])

    monkeypatch.setattr(adapter, "ADAPTER_FACTORY", globus_double.GlobusDouble)
    globus_double.reset()
    try:
        for name in ("a", "b"):
            globus_double.register_collection(f"coll-{name}", f"/~/{name}", tmp_path / name)
        monkeypatch.setattr("socket.gethostname", lambda: "a-login")
        for given in (endpoints, endpoints.dict()):
            with GlobusConnector(given, polling_interval=0.02, timeout=10) as c:
                key = c.put(b"x")
                assert c.get(key) == b"x"
            assert not (tmp_path / "a" / key.filename).exists()  # clear=True by default
    finally:
        globus_double.reset()


def test_register_lifetime_atexit(store: Store[Any]) -> None:
    import atexit

    from warpstore.store.lifetimes import register_lifetime_atexit

    lt = ContextLifetime(store)
    key = get_key(store.proxy("x", lifetime=lt))
    callback = register_lifetime_atexit(lt, close_stores=False)
    try:
        callback()  # what the interpreter runs at exit
        assert lt.done() and not store.exists(key)
    finally:
        atexit.unregister(callback)
    assert store.cache.exists(key) is False


def test_proxying_a_proxy_does_not_resolve_it(store: Store[Any]) -> None:
    inner = pickle.loads(pickle.dumps(store.proxy([1, 2, 3])))
    CountingConnector.gets = 0
    outer = store.proxy(inner, populate_target=False)
    assert not is_resolved(inner) and CountingConnector.gets == 0
    assert outer == [1, 2, 3]  # outer -> the inner proxy -> the list
