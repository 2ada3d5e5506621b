"""Proxy and serialization overheads, side by side with the peers, as a table.

    python benchmarks/proxy_overhead.py [--size-mib 100] [--repeat 7]

Peers, measured in the same run: the bare object (the floor), the
``lazy_object_proxy`` C proxy (``pip install -e '.[bench]'``; warpstore itself
does not use it), and the original ProxyStore 1.1 proxy and
store (``pip install proxystore==1.1.0``: a benchmark-only comparison, never
a dependency of ours; its column is skipped with a message when it is not
installed). Per-operation rows run the candidates in rotation, ``--repeat``
rounds, and print medians, so that load on a shared machine hits every column
alike.
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

import numpy as np

from warpstore.connectors.file import FileConnector
from warpstore.connectors.local import LocalConnector
from warpstore.proxy import Proxy, is_resolved, resolve
from warpstore.serialize import deserialize, serialize
from warpstore.store import Store

try:
    import lazy_object_proxy
except ImportError:  # pragma: no cover - the [bench] extra (pip install -e ".[bench]")
    lazy_object_proxy = None

try:
    import proxystore
    import proxystore.serialize as ps_serialize
    from proxystore.connectors.file import FileConnector as PSFileConnector
    from proxystore.connectors.local import LocalConnector as PSLocalConnector
    from proxystore.proxy import Proxy as PSProxy
    from proxystore.proxy import is_resolved as ps_is_resolved
    from proxystore.proxy import resolve as ps_resolve
    from proxystore.store import Store as PSStore
except ImportError:
    proxystore = None

COLUMNS = ["bare", "lazy-object-proxy", "ProxyStore", "warpstore"]


class Obj:
    def __init__(self) -> None:
        self.value = 1

    def method(self) -> int:
        return self.value


def rotate(stmts: dict[str, Callable[[], Any]], number: int, repeat: int) -> dict[str, float]:
    """Median ns per call of each statement, timed in turn ``repeat`` times."""
    runs: dict[str, list[float]] = {name: [] for name in stmts}
    for _ in range(repeat):
        for name, stmt in stmts.items():
            runs[name].append(timeit.timeit(stmt, number=number) / number * 1e9)
    return {name: statistics.median(r) for name, r in runs.items()}


def median_s(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def proxies(make: Callable[[], Any]) -> dict[str, Any]:
    """A resolved proxy of ``make()`` per proxy implementation present."""
    out: dict[str, Any] = {}
    if lazy_object_proxy is not None:
        lop = lazy_object_proxy.Proxy(make)
        lop.__wrapped__  # noqa: B018
        out["lazy-object-proxy"] = lop
    if proxystore is not None:
        ps = PSProxy(make)
        ps_resolve(ps)
        out["ProxyStore"] = ps
    ours = Proxy(make)
    resolve(ours)
    out["warpstore"] = ours
    return out


def op_rows(number: int, repeat: int) -> list[tuple[str, dict[str, float]]]:
    obj = Obj()
    rows: list[tuple[str, dict[str, float]]] = []

    p = proxies(lambda: obj)
    stmts = {"bare": lambda: obj.value} | {k: (lambda v=v: v.value) for k, v in p.items()}
    rows.append(("attribute access (resolved)", rotate(stmts, number, repeat)))

    stmts = {"bare": lambda: obj.method()} | {k: (lambda v=v: v.method()) for k, v in p.items()}
    rows.append(("method call (resolved)", rotate(stmts, number, repeat)))

    n = 12
    q = proxies(lambda: 12)
    stmts = {"bare": lambda: n + 1} | {k: (lambda v=v: v + 1) for k, v in q.items()}
    rows.append(("arithmetic p + 1 (resolved)", rotate(stmts, number, repeat)))

    lst = [1, 2, 3]
    r = proxies(lambda: lst)
    stmts = {"bare": lambda: lst[1]} | {k: (lambda v=v: v[1]) for k, v in r.items()}
    rows.append(("item access p[1] (resolved)", rotate(stmts, number, repeat)))

    # unresolved proxies that carry the target's class and hash (what a
    # consumer receives): isinstance and hash answer without resolving
    unresolved: dict[str, Any] = {"bare": "text"}
    if proxystore is not None:
        unresolved["ProxyStore"] = pickle.loads(
            pickle.dumps(PSProxy(_text, cache_defaults=True, target="text"))
        )
    try:
        unresolved["warpstore"] = pickle.loads(
            pickle.dumps(Proxy(_text, cache_defaults=True, target="text"))
        )
    except TypeError:  # a warpstore from before cache_defaults: it would time a resolve
        print("this warpstore has no cache_defaults: its isinstance/hash rows are empty")
    stmts = {k: (lambda v=v: isinstance(v, str)) for k, v in unresolved.items()}
    rows.append(("isinstance (unresolved, cached class)", rotate(stmts, number, repeat)))
    stmts = {k: (lambda v=v: hash(v)) for k, v in unresolved.items()}
    rows.append(("hash (unresolved, cached hash)", rotate(stmts, number, repeat)))
    for name, v in unresolved.items():
        if name != "bare" and (is_resolved if name == "warpstore" else ps_is_resolved)(v):
            raise SystemExit(f"{name}: isinstance/hash resolved the proxy")

    factory = _text
    stmts = {"warpstore": lambda: Proxy(factory)}
    if lazy_object_proxy is not None:
        stmts["lazy-object-proxy"] = lambda: lazy_object_proxy.Proxy(factory)
    if proxystore is not None:
        stmts["ProxyStore"] = lambda: PSProxy(factory)
    rows.append(("proxy creation", rotate(stmts, number // 4, repeat)))
    return rows


def _text() -> str:
    return "text"


def store_rows(size_mib: int, repeat: int) -> list[tuple[str, dict[str, float], str]]:
    rows: list[tuple[str, dict[str, float], str]] = []
    stores: dict[str, Any] = {"warpstore": Store("bench", LocalConnector(), cache_size=0)}
    if proxystore is not None:
        stores["ProxyStore"] = PSStore("bench-ps", PSLocalConnector(), cache_size=0, register=True)
    small = np.arange(1024.0)
    keys = {name: s.put(small) for name, s in stores.items()}

    def first_resolve(name: str) -> Callable[[], None]:
        s, key = stores[name], keys[name]
        if name == "warpstore":
            return lambda: resolve(s.proxy_from_key(key))
        return lambda: ps_resolve(s.proxy_from_key(key))

    us = rotate({name: first_resolve(name) for name in stores}, 2000, repeat)
    rows.append(
        ("first resolve, LocalConnector, 8 KiB (us)", {k: v / 1e3 for k, v in us.items()}, "")
    )
    for s in stores.values():
        s.close()

    array = np.random.default_rng(0).random(size_mib * 1024 * 1024 // 8)
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with Store("bench-file", FileConnector(tmp + "/ws")) as fstore:
            sizes["warpstore"] = len(pickle.dumps(fstore.proxy(array)))
        if proxystore is not None:
            with PSStore("bench-file-ps", PSFileConnector(tmp + "/ps")) as pstore:
                sizes["ProxyStore"] = len(pickle.dumps(pstore.proxy(array)))
    rows.append((f"pickled proxy of a {size_mib} MiB array (B)", sizes, ""))

    mib = array.nbytes / 2**20
    ms = {"bare": median_s(lambda: pickle.loads(pickle.dumps(array, protocol=5)), repeat)}
    if proxystore is not None:
        ms["ProxyStore"] = median_s(
            lambda: ps_serialize.deserialize(ps_serialize.serialize(array)), repeat
        )
    ms["warpstore"] = median_s(lambda: deserialize(serialize(array)), repeat)
    rows.append(
        (
            f"serialize+deserialize {size_mib} MiB (ms)",
            {k: v * 1e3 for k, v in ms.items()},
            f"bare = pickle 5 in-band; warpstore {mib / ms['warpstore']:.0f} MiB/s",
        )
    )
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=100_000, help="calls per timing")
    args = parser.parse_args()

    versions = f"python {sys.version.split()[0]}, numpy {np.__version__}"
    if proxystore is None:
        print("ProxyStore is not installed (pip install proxystore==1.1.0): its column is empty")
    else:
        versions += f", proxystore {proxystore.__version__}"
    if lazy_object_proxy is not None:
        versions += f", lazy-object-proxy {lazy_object_proxy.__version__}"

    rows = [(name, vals, "") for name, vals in op_rows(args.number, args.repeat)]
    rows += store_rows(args.size_mib, args.repeat)

    width = max(len(r[0]) for r in rows)
    print(f"warpstore proxy overhead ({versions}; medians of {args.repeat}; ns unless noted)")
    head = f"{'measure':<{width}}" + "".join(f"  {c:>17}" for c in COLUMNS)
    print(head + "  warpstore/ProxyStore")
    print("-" * (len(head) + 22))
    for name, vals, note in rows:
        line = f"{name:<{width}}" + "".join(f"  {fmt(vals.get(c)):>17}" for c in COLUMNS)
        if "ProxyStore" in vals and "warpstore" in vals:
            line += f"  {vals['warpstore'] / vals['ProxyStore']:.2f}x"
        if note:
            line += f"  ({note})"
        print(line)


if __name__ == "__main__":
    main()
