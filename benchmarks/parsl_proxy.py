"""Parsl apps with large array arguments: by value (Parsl's dill) vs by proxy, one run.

    python benchmarks/parsl_proxy.py [--sizes 1MiB,10MiB,100MiB] [--tasks 5]

A real HighThroughputExecutor on 127.0.0.1 with one worker; each task sums
its array argument and returns a float. By value, the array is pickled into
the task message and travels submitter -> interchange -> worker. By proxy
(``warpstore.plugins.parsl.ProxyStoreSerializer`` registered first), the
array goes once into a node server (ZeroMQ, on this machine) and the worker
fetches it from there; the task message carries a ~600-byte proxy. Prints the
median submit-to-result time per task and the speed-up; with ``--dask`` the
same with a Dask LocalCluster (one worker process): plain ``Client`` against
``warpstore.plugins.distributed.Client``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import fmt_s

from warpstore.connectors.zmq import ZMQConnector
from warpstore.store import Store
from warpstore.units import parse_size


def total(x: Any) -> float:
    import numpy  # the app travels by value from __main__: import inside it

    return float(numpy.asarray(x).sum())


def run_parsl(store: Store[Any], arrays: dict[str, np.ndarray], tasks: int) -> dict[str, Any]:
    import parsl
    from parsl.app.app import python_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    from parsl.serialize import facade

    from warpstore.plugins.parsl import ProxyStoreSerializer, register

    run_dir = tempfile.mkdtemp(prefix="warpstore-parsl-bench-")
    config = Config(
        executors=[HighThroughputExecutor(
            label="htex", address="127.0.0.1", loopback_address="127.0.0.1",
            interchange_port_range=(49152, 65536), worker_port_range=(49152, 65536),
            max_workers_per_node=1, provider=LocalProvider(init_blocks=1, max_blocks=1),
        )],
        run_dir=run_dir, strategy="none", usage_tracking=0,
    )
    app = python_app(total)
    saved = dict(facade.methods_for_data)
    results: dict[str, Any] = {}
    dfk = parsl.load(config)
    try:
        app(np.ones(1)).result()  # the worker is up
        for label, arr in arrays.items():
            for mode in ("by value", "by proxy"):
                facade.methods_for_data.clear()
                facade.methods_for_data.update(saved)
                if mode == "by proxy":
                    register(ProxyStoreSerializer(store=store, threshold=100_000))
                times = []
                for _ in range(tasks):
                    start = time.perf_counter()
                    assert np.isclose(app(arr).result(), arr.sum())
                    times.append(time.perf_counter() - start)
                results[(label, mode)] = statistics.median(times)
                print(f"  parsl {label} {mode}: {fmt_s(results[(label, mode)])}", file=sys.stderr)
    finally:
        facade.methods_for_data.clear()
        facade.methods_for_data.update(saved)
        dfk.cleanup()
        parsl.clear()
        shutil.rmtree(run_dir, ignore_errors=True)
    return results


def run_dask(store: Store[Any], arrays: dict[str, np.ndarray], tasks: int) -> dict[str, Any]:
    import distributed

    from warpstore.plugins.distributed import Client

    results: dict[str, Any] = {}
    with distributed.LocalCluster(
        processes=True, host="127.0.0.1", n_workers=1, threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        clients = {
            "by value": distributed.Client(cluster),
            "by proxy": Client(cluster, ps_store=store, ps_threshold=100_000),
        }
        try:
            for label, arr in arrays.items():
                for mode, client in clients.items():
                    times = []
                    for _ in range(tasks):
                        start = time.perf_counter()
                        # pure=False: never served from Dask's cache of an identical task
                        fut = client.submit(total, arr, pure=False)
                        got = fut.result()
                        assert np.isclose(got, arr.sum()), (mode, got, arr.sum())
                        times.append(time.perf_counter() - start)
                        del fut
                    results[(label, mode)] = statistics.median(times)
                    print(f"  dask {label} {mode}: {fmt_s(results[(label, mode)])}",
                          file=sys.stderr)
        finally:
            for c in clients.values():
                c.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1MiB,10MiB,100MiB")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--dask", action="store_true", help="also the Dask plugin")
    args = parser.parse_args()
    arrays = {s: np.random.rand(parse_size(s) // 8) for s in args.sizes.split(",")}
    work = tempfile.mkdtemp(prefix="warpstore-plugin-bench-")
    os.environ.update(
        WARPSTORE_RUNTIME_DIR=work, WARPSTORE_JOB_ID=f"plugin-bench-{os.getpid()}",
        WARPSTORE_ADDRESS="127.0.0.1",
    )
    connector = ZMQConnector()
    connector.local_server()
    store: Store[Any] = Store("plugin-bench", connector, register=True)
    tables = {}
    try:
        tables["Parsl HTEX"] = run_parsl(store, arrays, args.tasks)
        if args.dask:
            tables["Dask LocalCluster"] = run_dask(store, arrays, args.tasks)
    finally:
        store.close()
        connector.stop_server()
        shutil.rmtree(work, ignore_errors=True)
    for title, res in tables.items():
        print(f"{title}: one task summing its array argument, median submit-to-result")
        head = f"{'size':>8} {'by value':>10} {'by proxy':>10} {'speed-up':>9}"
        print(head)
        print("-" * len(head))
        for label in arrays:
            v, p = res[(label, "by value")], res[(label, "by proxy")]
            print(f"{label:>8} {fmt_s(v):>10} {fmt_s(p):>10} {v / p:>8.1f}x")
        print()


if __name__ == "__main__":
    main()
