"""The README's first command: a proxy crossing a process boundary, no server needed.

A producer process puts a numpy array into a FileConnector store and prints
the pickled proxy's size; a consumer process started with ``spawn`` (nothing
inherited) receives only that proxy and resolves it.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import tempfile
import time
from collections.abc import Callable
from typing import Any

from warpstore.connectors.file import FileConnector
from warpstore.proxy import Proxy, is_resolved
from warpstore.store import Store


def _consume(blob: bytes, queue: Any) -> None:
    import numpy as np

    proxy = pickle.loads(blob)
    before = is_resolved(proxy)
    start = time.perf_counter()
    total = float(np.sum(proxy))  # first use: fetched here, just in time
    elapsed = time.perf_counter() - start
    queue.put((before, isinstance(proxy, np.ndarray), total, elapsed))


def run_demo(
    *, size_mib: int = 8, store_dir: str | None = None, echo: Callable[[str], Any] = print
) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="warpstore-demo-") as tmp:
        directory = store_dir or tmp
        array = np.arange(size_mib * (1 << 20) // 8, dtype=np.float64)
        with Store(
            "warpstore-demo", FileConnector(directory, clear=store_dir is None)
        ) as store:
            proxy: Proxy[Any] = store.proxy(array, evict=True)
            blob = pickle.dumps(proxy)
            echo(f"put a {array.nbytes / 2**20:.0f} MiB array into {store.connector!r}")
            echo(f"the proxy pickles to {len(blob)} bytes: that is all the consumer receives")
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=_consume, args=(blob, queue))
            child.start()
            before, is_array, total, elapsed = queue.get(timeout=120)
            child.join(timeout=60)
            if child.exitcode != 0:
                raise SystemExit(f"consumer process failed with exit code {child.exitcode}")
            expected = float(array.sum())
            echo(
                f"consumer (pid {child.pid}): resolved before use: {before}, "
                f"isinstance ndarray: {is_array}, sum = {total:.6g} "
                f"(expected {expected:.6g}), fetched in {elapsed * 1e3:.1f} ms"
            )
            if total != expected or before or not is_array:
                raise SystemExit("demo FAILED: the consumer did not see the producer's data")
            # evict=True: the consumer's resolve removed the object from the store
            key = proxy.__factory__.key  # type: ignore[attr-defined]
            echo(f"object evicted after its one consumer read it: {not store.exists(key)}")
            echo("demo OK")
