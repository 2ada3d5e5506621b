"""StoreExecutor (warpstore.store.executor) wrapping a real process pool, as the
original's guide wires it into Parsl or Globus Compute: arguments and results
travel by proxy by policy, inputs are evicted after the task, results are owned."""

from __future__ import annotations

import gc
import multiprocessing as mp
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from warpstore.connectors.file import FileConnector
from warpstore.proxy import Proxy
from warpstore.store import Store, unregister_store
from warpstore.store.executor import (
    ProxyAlways,
    ProxyNever,
    ProxySize,
    ProxyType,
    StoreExecutor,
)
from warpstore.store.ref import OwnedProxy
from warpstore.store.utils import get_key


def concat(base: str, *, num: int) -> str:
    return f"{base}-{num}"


def describe(x: Any) -> tuple[str, str]:
    """What the worker received: the argument's real type, and its value."""
    return type(x).__name__, repr(x)


def count_files(directory: str) -> int:
    import os

    return len([f for f in os.listdir(directory) if not f.startswith(".")])


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as p:
        yield p


@pytest.fixture
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store[Any]]:
    s: Store[Any] = Store(f"exec-{request.node.name}", FileConnector(tmp_path / "objs"))
    yield s
    s.close()
    unregister_store(s)


def _files(store: Store[Any]) -> int:
    return count_files(store.connector.store_dir)  # type: ignore[attr-defined]


def test_proxy_type_policy_on_a_process_pool(store: Store[Any], pool: Any) -> None:
    executor = StoreExecutor(pool, store, should_proxy=ProxyType(str), close_store=False)
    future = executor.submit(concat, "foobar", num=42)
    result = future.result(timeout=120)
    assert type(result) is OwnedProxy and result == "foobar-42"
    key = get_key(result)
    assert store.exists(key)
    gc.collect()
    assert _files(store) == 1  # the str argument was evicted once the task was done
    del result, future  # the future holds the result too
    gc.collect()
    assert not store.exists(key)  # the owned result is evicted when dropped
    assert _files(store) == 0


def test_worker_receives_proxies_only_for_chosen_arguments(store: Store[Any], pool: Any) -> None:
    executor = StoreExecutor(pool, store, should_proxy=ProxyAlways(), ownership=False,
                             close_store=False)
    name, value = executor.submit(describe, [1, 2]).result(timeout=120)
    assert name == "Proxy" and value.startswith("<Proxy")  # repr never resolves
    assert executor.submit(describe, None).result(timeout=120) == ("NoneType", "None")
    plain = executor.submit(concat, "a", num=1).result(timeout=120)
    assert type(plain) is Proxy and plain == "a-1"
    store.evict(get_key(plain))
    never = StoreExecutor(pool, store, ProxyNever(), close_store=False)
    assert never.submit(describe, [1]).result(timeout=120) == ("list", "[1]")


def test_size_policy_and_map(store: Store[Any], pool: Any) -> None:
    policy = ProxySize(1 << 16)
    big, small = np.ones(1 << 14), np.ones(4)
    assert policy(big) and not policy(small) and policy(b"x" * (1 << 16))
    executor = StoreExecutor(pool, store, policy, close_store=False)
    names = [n for n, _ in executor.map(describe, [big, small])]
    assert names == ["Proxy", "ndarray"]
    gc.collect()
    assert _files(store) == 0  # map's proxied inputs are evicted after the last result


def test_shutdown_closes_store_and_pool(tmp_path: Path) -> None:
    store: Store[Any] = Store("exec-shutdown", FileConnector(tmp_path / "objs"))
    inner = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    with StoreExecutor(inner, store, ProxyType(list)) as executor:
        r = executor.submit(sum, [1, 2, 3]).result(timeout=120)
        assert r == 6 and type(r) is int  # ints are not chosen by ProxyType(list)
    assert not (tmp_path / "objs").exists()  # the owning store cleared its directory
    with pytest.raises(RuntimeError):
        inner.submit(sum, [1])
