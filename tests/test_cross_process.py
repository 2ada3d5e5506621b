"""A proxy made here, pickled to a child started with ``spawn``, resolves there."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from warpstore.connectors.file import FileConnector
from warpstore.connectors.redis import RedisConnector
from warpstore.proxy import is_resolved
from warpstore.store import Store, unregister_store


def _child(blob: bytes, queue: Any) -> None:
    try:
        proxy = pickle.loads(blob)
        was_resolved = is_resolved(proxy)
        arr = proxy["array"]
        queue.put(("ok", was_resolved, bytes(np.ascontiguousarray(arr).data), proxy["label"]))
    except BaseException as e:  # report, do not hang the parent
        queue.put(("error", repr(e), b"", ""))


def _run_in_child(blob: bytes) -> tuple[Any, ...]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(blob, queue))
    proc.start()
    try:
        result: tuple[Any, ...] = queue.get(timeout=120)
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert proc.exitcode == 0
    return result


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_spawned_child_resolves_parent_proxy(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "file":
        connector: Any = FileConnector(tmp_path)
    else:
        host, port = request.getfixturevalue("redis_server")
        connector = RedisConnector(host, port)
    obj = {"array": np.random.default_rng(0).random((64, 33)), "label": kind}
    store = Store(f"xproc-{kind}", connector, populate_target=False)
    try:
        proxy = store.proxy(obj)
        assert not is_resolved(proxy)
        status, was_resolved, data, label = _run_in_child(pickle.dumps(proxy))
        assert status == "ok", was_resolved
        assert was_resolved is False
        assert data == obj["array"].tobytes() and label == kind
        assert not is_resolved(proxy)  # the parent's proxy was never touched
    finally:
        store.close()
        unregister_store(store.name)
