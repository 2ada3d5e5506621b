"""The contract every connector keeps, whatever it talks to.

Runs against every entry of ``tests.conftest.CONNECTORS``: Local, File, Redis
(a real redis-server), ZMQ and UCX (real node servers in their own processes),
Margo (the node server on the adapter double) and DAOS (the pydaos double). A
new connector joins by adding one entry there.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from typing import Any

import numpy as np
import pytest

from warpstore.connectors.protocols import (
    Connector,
    DeferrableConnector,
    connector_from_path,
    connector_path,
)

pytestmark = pytest.mark.timeout(300)

SIZES = [0, 1, 1000, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 1 << 20, 16 << 20, 256 << 20]
_BLOCK = np.frombuffer(os.urandom(1 << 20), dtype=np.uint8)


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from block to block, cheaply (no 256 MiB of urandom)."""
    if size <= len(_BLOCK):
        return os.urandom(size)
    reps = -(-size // len(_BLOCK))
    data = np.tile(_BLOCK, reps)[:size]
    data[:: len(_BLOCK)] = np.arange(reps, dtype=np.uint64).astype(np.uint8) + seed
    return data.tobytes()


def digest(data: Any) -> str:
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def test_implements_protocols(connector: Any) -> None:
    assert isinstance(connector, Connector)
    assert isinstance(connector, DeferrableConnector)


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
def test_round_trip(connector: Any, size: int) -> None:
    data = payload(size)
    key = connector.put(data)
    assert connector.exists(key)
    got = connector.get(key)
    assert memoryview(got).nbytes == size and digest(got) == digest(data)
    connector.evict(key)
    assert not connector.exists(key)
    assert connector.get(key) is None


def test_missing_keys(connector: Any) -> None:
    never = connector.new_key()
    assert not connector.exists(never)
    assert connector.get(never) is None
    connector.evict(never)  # evicting what is not there is fine
    real = connector.put(b"here")
    got = connector.get_batch([never, real, never])
    assert got[0] is None and got[2] is None and bytes(got[1]) == b"here"


def test_evict_twice_and_overwrite_via_set(connector: Any) -> None:
    key = connector.put(b"once")
    connector.evict(key)
    connector.evict(key)
    later = connector.new_key()
    connector.set(later, b"first")
    connector.set(later, b"second")
    assert bytes(connector.get(later)) == b"second"


def test_keys_are_small_picklable_namedtuples(connector: Any) -> None:
    key = connector.put(b"x")
    assert isinstance(key, tuple) and hasattr(key, "_fields")
    assert pickle.loads(pickle.dumps(key)) == key
    assert len(pickle.dumps(key)) < 250


def test_batches(connector: Any) -> None:
    objs = [payload(n, seed=i) for i, n in enumerate((0, 10, 1000, 100_000, 3 << 20))]
    keys = connector.put_batch(objs)
    assert len(set(keys)) == len(objs)
    assert [digest(b) for b in connector.get_batch(keys)] == [digest(o) for o in objs]
    connector.evict(keys[1])
    got = connector.get_batch(keys)
    assert got[1] is None and digest(got[3]) == digest(objs[3])
    assert connector.put_batch([]) == [] and connector.get_batch([]) == []


def test_config_round_trip(connector: Any) -> None:
    key = connector.put(b"shared")
    other = connector_from_path(connector_path(connector), connector.config())
    try:
        assert bytes(other.get(key)) == b"shared"
        key2 = other.put(b"back")
        assert bytes(connector.get(key2)) == b"back"
    finally:
        other.close()


def test_concurrent_clients(connector: Any) -> None:
    """Threads share one connector; others use their own instance built from its config."""
    errors: list[BaseException] = []
    config, path = connector.config(), connector_path(connector)

    def worker(seed: int) -> None:
        own = connector_from_path(path, config) if seed % 2 else connector
        try:
            for i in range(20):
                data = f"{seed}:{i}:".encode() * (1 + (i * 977) % 5000)
                key = own.put(data)
                assert bytes(own.get(key)) == data
                assert own.exists(key)
                own.evict(key)
        except BaseException as e:
            errors.append(e)
        finally:
            if own is not connector:
                own.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_close_is_idempotent(connector: Any) -> None:
    connector.close()
    connector.close()
