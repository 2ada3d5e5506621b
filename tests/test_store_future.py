"""Futures (warpstore.store.future): a proxy handed out before its data exists
resolves once a result is set, from another process, by polling the connector."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from warpstore.connectors.file import FileConnector
from warpstore.connectors.local import LocalConnector
from warpstore.exceptions import ProxyResolveError
from warpstore.proxy import Proxy, is_resolved
from warpstore.store import PollingStoreFactory, Store, unregister_store
from warpstore.store.exceptions import ProxyResolveMissingKeyError
from warpstore.store.future import Future, ProxyFuture


@pytest.fixture
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store[Any]]:
    s: Store[Any] = Store(f"fut-{request.node.name}", FileConnector(tmp_path / "objs"))
    yield s
    s.close()
    unregister_store(s)


def test_future_in_process(store: Store[Any]) -> None:
    future: Future[Any] = store.future(polling_interval=0.01)
    assert ProxyFuture is Future
    proxy = future.proxy()
    assert not future.done() and not is_resolved(proxy)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    future.set_result({"answer": 42})
    assert future.done()
    assert future.result() == {"answer": 42}
    assert proxy["answer"] == 42


def _producer(future_blob: bytes, delay: float) -> None:
    future = pickle.loads(future_blob)
    time.sleep(delay)
    future.set_result([1, 2, 3])


def _consumer(proxy_blob: bytes, queue: Any) -> None:
    try:
        proxy = pickle.loads(proxy_blob)
        queue.put(("ok", is_resolved(proxy), sum(proxy)))
    except BaseException as e:
        queue.put(("error", repr(e), 0))


def test_proxy_resolves_when_another_process_sets_the_result(store: Store[Any]) -> None:
    future = store.future(polling_interval=0.02, polling_backoff_factor=1.5,
                          polling_interval_limit=0.2)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    consumer = ctx.Process(target=_consumer, args=(pickle.dumps(future.proxy()), queue))
    producer = ctx.Process(target=_producer, args=(pickle.dumps(future), 0.5))
    consumer.start()
    producer.start()
    try:
        status, was_resolved, total = queue.get(timeout=120)
    finally:
        for p in (consumer, producer):
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
    assert (status, was_resolved, total) == ("ok", False, 6)
    assert producer.exitcode == 0 and consumer.exitcode == 0
    assert future.result(timeout=5) == [1, 2, 3]


def test_exception_set_on_future(store: Store[Any]) -> None:
    future = store.future(polling_interval=0.01)
    proxy = future.proxy()
    future.set_exception(KeyError("boom"))
    with pytest.raises(KeyError, match="boom"):
        future.result()
    with pytest.raises(ProxyResolveError) as info:
        len(proxy)
    assert isinstance(info.value.__cause__, KeyError)


def test_custom_serializer_and_deserializer(store: Store[Any]) -> None:
    future = store.future(
        serializer=lambda s: s.encode(), deserializer=lambda b: bytes(b).decode() + "!",
        polling_interval=0.01,
    )
    future.set_result("hi")
    assert future.result() == "hi!"
    assert future.proxy() == "hi!"


def test_polling_timeout_names_the_key(store: Store[Any]) -> None:
    future = store.future(polling_interval=0.01, polling_timeout=0.1)
    with pytest.raises(ProxyResolveMissingKeyError, match="polling_timeout"):
        str(future.proxy())
    with pytest.raises(TimeoutError):
        future.result()


def test_polling_factory_pickles_with_its_policy(store: Store[Any]) -> None:
    factory: PollingStoreFactory[Any] = PollingStoreFactory(
        store.connector.new_key(), store.config(), polling_interval=0.5,
        polling_backoff_factor=2, polling_interval_limit=3, polling_timeout=9,
    )
    copy = pickle.loads(pickle.dumps(factory))
    assert (copy.polling_interval, copy.polling_backoff_factor) == (0.5, 2)
    assert (copy.polling_interval_limit, copy.polling_timeout) == (3, 9)
    with pytest.raises(ValueError):
        PollingStoreFactory(copy.key, store.config(), polling_interval=0)


class _NoDeferral:
    """A connector without new_key/set."""

    def __init__(self) -> None:
        self.inner = LocalConnector()

    def close(self) -> None: ...

    def config(self) -> dict[str, Any]:
        return {}

    def put(self, obj: Any) -> Any:
        return self.inner.put(obj)


def test_future_needs_a_deferrable_connector() -> None:
    s: Store[Any] = Store("fut-nodefer", _NoDeferral())  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="DeferrableConnector"):
        s.future()
    assert isinstance(Proxy(lambda: 1), Proxy)
