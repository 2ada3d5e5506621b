"""The Dask plugin against a real LocalCluster (worker processes, loopback only).

The scheduler runs in this process (LocalCluster keeps it here), so counting
the store's gets in this process shows what the client and the scheduler
fetch; what the workers do is reported by the task functions themselves.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from tests.plugin_stores import counting_store, stored  # noqa: E402
from warpstore.exceptions import ProxyResolveError  # noqa: E402
from warpstore.plugins.distributed import Client  # noqa: E402
from warpstore.proxy import Proxy, get_factory, is_resolved  # noqa: E402
from warpstore.store import Store  # noqa: E402

THRESHOLD = 10_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store[Any]]:
    s = counting_store("dask-plugin", tmp_path_factory.mktemp("dask-objs"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(store: Store[Any]) -> Iterator[Client]:
    cluster = distributed.LocalCluster(
        processes=True,
        host="127.0.0.1",
        n_workers=1,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
        worker_dashboard_address="127.0.0.1:0",
    )
    c = Client(cluster, ps_store=store, ps_threshold=THRESHOLD)
    yield c
    c.close()
    cluster.close()


def wait_empty(store: Store[Any], timeout: float = 10.0) -> list[str]:
    gc.collect()
    deadline = time.monotonic() + timeout
    while stored(store) and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    return stored(store)


def inspect_args(x: Any, y: Any, p: Any) -> tuple[Any, ...]:
    """Runs on the worker: what arrived, and was anything fetched before the task ran?"""
    before = (is_resolved(x), is_resolved(p))
    sums = (float(x.sum()), float(p.sum()))
    return (*before, type(x) is Proxy, type(y).__name__, *sums, os.getpid())


def grow(x: Any) -> Any:
    return np.full(50_000, float(x.sum()))


def total(x: Any) -> float:
    return float(np.asarray(x).sum())


def test_args_reach_the_task_unresolved_and_big_results_come_back_as_proxies(
    client: Client, store: Store[Any]
) -> None:
    big = np.arange(100_000, dtype=np.float64)
    user = store.proxy(np.ones(5), populate_target=False)  # a proxy made by the user
    store.gets["n"] = 0  # type: ignore[attr-defined]
    fut = client.submit(inspect_args, big, 3, p=user)
    x_fetched, p_fetched, is_proxy, y_type, x_sum, p_sum, pid = fut.result(timeout=60)
    assert (x_fetched, p_fetched, is_proxy, y_type) == (False, False, True, "int")
    assert (x_sum, p_sum) == (big.sum(), 5.0)
    assert pid != os.getpid()
    assert not is_resolved(user)
    # neither the client nor the scheduler (both in this process) fetched anything
    assert store.gets["n"] == 0  # type: ignore[attr-defined]

    res = client.submit(grow, big).result(timeout=60)
    assert isinstance(res, Proxy) and not is_resolved(res)
    assert store.gets["n"] == 0  # type: ignore[attr-defined]
    assert res.shape == (50_000,) and float(res[0]) == big.sum()
    assert store.gets["n"] == 1  # type: ignore[attr-defined]
    small = client.submit(total, big).result(timeout=60)
    assert small == big.sum() and not isinstance(small, Proxy)
    store.evict(get_factory(user).key)  # type: ignore[attr-defined]  # the user's own object
    del fut, res, user
    assert wait_empty(store) == []  # everything the client stored went with its futures


def test_nothing_is_left_after_futures_are_released(client: Client, store: Store[Any]) -> None:
    big = np.arange(100_000, dtype=np.float64)
    unread = client.submit(grow, big)  # a big result nobody asks for
    read = client.submit(grow, big)
    proxy = read.result(timeout=60)
    distributed.wait([unread])
    assert len(stored(store)) == 4  # two arguments, two results
    del unread
    gc.collect()
    assert len(stored(store)) == 2  # its argument and result went with it
    del read
    gc.collect()
    assert len(stored(store)) == 1  # the result handed out lives while its proxy does
    assert float(proxy[1]) == big.sum()
    del proxy
    assert wait_empty(store) == []


def test_futures_as_arguments_and_map(client: Client, store: Store[Any]) -> None:
    big = np.arange(100_000, dtype=np.float64)
    # the inner future is dropped at once: its result must live until the outer task ran
    chained = client.submit(total, client.submit(grow, big))
    assert chained.result(timeout=60) == big.sum() * 50_000
    arrays = [np.full(20_000, float(i)) for i in range(3)]
    futures = client.map(grow, arrays, batch_size=2)
    results = client.gather(futures)
    assert all(isinstance(r, Proxy) for r in results)
    assert [float(r[0]) for r in results] == [0.0, 20_000.0, 40_000.0]
    assert [total(f.result()) for f in futures] == [0.0, 1e9, 2e9]
    del chained, futures, results
    assert wait_empty(store) == []


def test_an_evicted_proxy_is_a_clear_error_not_a_hang(client: Client, store: Store[Any]) -> None:
    gone = store.proxy(np.ones(10), populate_target=False)
    store.evict(get_factory(gone).key)  # type: ignore[attr-defined]
    fut = client.submit(total, gone)
    with pytest.raises(ProxyResolveError, match=r"Store\(name='dask-plugin'\).*evicted"):
        fut.result(timeout=60)
    res = client.submit(grow, np.arange(100_000, dtype=np.float64)).result(timeout=60)
    store.evict(get_factory(res).key)  # type: ignore[attr-defined]
    with pytest.raises(ProxyResolveError, match="evicted"):
        res.sum()
    del fut, res
    assert wait_empty(store) == []


def test_small_arguments_and_opt_outs_are_not_stored(client: Client, store: Store[Any]) -> None:
    big = np.arange(100_000, dtype=np.float64)
    assert client.submit(total, np.ones(10)).result(timeout=60) == 10.0
    r = client.submit(grow, big, proxy_args=False, proxy_result=False).result(timeout=60)
    assert type(r) is np.ndarray
    assert stored(store) == []
