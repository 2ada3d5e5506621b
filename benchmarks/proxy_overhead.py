"""Proxy and serialization overheads, printed as a table.

    python benchmarks/proxy_overhead.py [--size-mib 100] [--repeat 7]

Compares, in one run: a resolved warpstore proxy's attribute access against
the bare object and against lazy-object-proxy's own C proxy; and warpstore's
numpy serialize+deserialize against pickle protocol 5 with in-band buffers.
Timings are medians.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any

import lazy_object_proxy
import numpy as np

from warpstore.connectors.local import LocalConnector
from warpstore.proxy import Proxy, resolve
from warpstore.serialize import deserialize, serialize
from warpstore.store import Store


class Obj:
    def __init__(self) -> None:
        self.value = 1


def per_call_ns(stmt: Callable[[], Any], number: int, repeat: int) -> float:
    runs = timeit.repeat(stmt, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e9


def median_s(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []

    obj = Obj()
    ours = Proxy(lambda: obj)
    resolve(ours)
    theirs = lazy_object_proxy.Proxy(lambda: obj)
    theirs.__wrapped__  # noqa: B018
    bare_ns = per_call_ns(lambda: obj.value, 200_000, args.repeat)
    ours_ns = per_call_ns(lambda: ours.value, 200_000, args.repeat)
    theirs_ns = per_call_ns(lambda: theirs.value, 200_000, args.repeat)
    rows += [
        ("attribute access, bare object", f"{bare_ns:.0f} ns", ""),
        ("attribute access, lazy-object-proxy", f"{theirs_ns:.0f} ns", ""),
        (
            "attribute access, warpstore Proxy",
            f"{ours_ns:.0f} ns",
            f"{ours_ns / theirs_ns:.2f}x lazy-object-proxy (goal <= 1.5x)",
        ),
    ]

    factory = lambda: obj  # noqa: E731
    rows.append(
        ("proxy creation", f"{per_call_ns(lambda: Proxy(factory), 50_000, args.repeat):.0f} ns", "")
    )

    with Store("bench", LocalConnector(), cache_size=0) as store:
        key = store.put(np.arange(1024.0))

        def first_resolve() -> None:
            resolve(store.proxy_from_key(key))

        rows.append(
            (
                "first resolve, LocalConnector, 8 KiB array",
                f"{per_call_ns(first_resolve, 2000, args.repeat) / 1e3:.1f} us",
                "",
            )
        )

    size = args.size_mib * 1024 * 1024
    array = np.random.default_rng(0).random(size // 8)
    with tempfile.TemporaryDirectory() as tmp:
        from warpstore.connectors.file import FileConnector

        with Store("bench-file", FileConnector(tmp)) as fstore:
            p = fstore.proxy(array)
            rows.append(
                (f"pickled proxy of a {args.size_mib} MiB array", f"{len(pickle.dumps(p))} B", "")
            )

    ws = median_s(lambda: deserialize(serialize(array)), args.repeat)
    pk = median_s(lambda: pickle.loads(pickle.dumps(array, protocol=5)), args.repeat)
    mib = size / 2**20
    rows += [
        (
            f"serialize+deserialize {args.size_mib} MiB, pickle 5 in-band",
            f"{pk * 1e3:.1f} ms",
            f"{mib / pk:.0f} MiB/s",
        ),
        (
            f"serialize+deserialize {args.size_mib} MiB, warpstore",
            f"{ws * 1e3:.1f} ms",
            f"{mib / ws:.0f} MiB/s, {pk / ws:.1f}x pickle (goal >= 2x)",
        ),
    ]

    width = max(len(r[0]) for r in rows)
    print(
        f"warpstore proxy overhead (python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"medians of {args.repeat})"
    )
    print(f"{'measure':<{width}}  {'value':>12}  note")
    print("-" * (width + 50))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")


if __name__ == "__main__":
    main()
