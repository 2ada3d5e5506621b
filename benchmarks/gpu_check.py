"""GPU check for device arrays without pickle: the tests on real CuPy/PyTorch, then timings.

    python3 benchmarks/gpu_check.py [--size 256MiB] [--repeat 5] [--no-tests] [--no-server]

Run from the repository root on a machine with a CUDA GPU, CuPy and PyTorch.
It needs numpy, cupy, torch, and warpstore's runtime dependencies (cloudpickle,
click, jinja2, pyyaml, typing-extensions, cryptography); the node-server rows
also need pyzmq and are skipped with a message without it. On a machine with
no package index, bring wheels and install them first, e.g.::

    python3 -m pip install --no-deps .whl/pyzmq-*.whl

(a) runs ``tests/test_gpu_serialize.py`` with pytest (its CuPy and CUDA
    PyTorch cases are skipped elsewhere);
(b) times put and get of one ``--size`` CuPy array and one CUDA tensor: the
    serialization alone (the message is what every connector moves), and through a
    Store: over a LocalConnector with warpstore's serializer and with plain
    pickle (what the original ProxyStore does with them), and through a
    same-node ZeroMQ node server, through shared memory (the array is copied
    from the device straight into the segment, and from the mapping straight
    to the device) and over its socket (LocalConnector copies every put into
    a ``bytes``, which shows in its put column); next to the ceiling, a device-to-host plus
    host-to-device copy of the same bytes (into fresh buffers, as a get must
    make new arrays, and into preallocated ones). Medians of ``--repeat``.

Whole run: well under three minutes on an H100.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_tests() -> int:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "--noconftest",  # the shared fixtures need redis-py, which GPU images lack
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        str(ROOT / "tests" / "test_gpu_serialize.py"),
    ]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=ROOT, timeout=300).returncode


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "b": 1}
    low = text.strip().lower()
    for unit, factor in units.items():
        if low.endswith(unit):
            return int(float(low[: -len(unit)]) * factor)
    return int(low)


def median(fn: Callable[[], Any], repeat: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up: CUDA context, allocator pools, first-touch page faults
    sync()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Row:
    def __init__(self, name: str, put: float | None, get: float | None, note: str = "") -> None:
        self.name, self.put, self.get, self.note = name, put, get, note


def time_store(store: Any, obj: Any, repeat: int, sync: Callable[[], None]) -> tuple[float, float]:
    keys: list[Any] = []

    def put() -> None:
        keys.append(store.put(obj))

    put_s = median(put, repeat, sync)
    key = keys[-1]
    for k in keys[:-1]:
        store.evict(k)

    def get() -> None:
        store.get(key)

    get_s = median(get, repeat, sync)
    store.evict(key)
    return put_s, get_s


def time_store_steady(
    store: Any, obj: Any, repeat: int, sync: Callable[[], None]
) -> tuple[float, float]:
    """put+get+evict per step, as an iterative workflow does (the evict timed with the
    put): a same-node node server then recycles the evicted segment for the next put."""
    keys: list[Any] = [store.put(obj)]

    def put() -> None:
        store.evict(keys.pop())
        keys.append(store.put(obj))

    put_s = median(put, repeat, sync)
    get_s = median(lambda: store.get(keys[-1]), repeat, sync)
    store.evict(keys.pop())
    return put_s, get_s


def bench_library(
    label: str,
    obj: Any,
    d2h_fresh: Callable[[], Any],
    h2d_fresh: Callable[[Any], Any],
    d2h_into: Callable[[], None],
    h2d_into: Callable[[], None],
    check: Callable[[Any], bool],
    sync: Callable[[], None],
    repeat: int,
    server: bool,
) -> list[Row]:
    from warpstore.connectors.local import LocalConnector
    from warpstore.store import Store

    rows: list[Row] = []
    host = d2h_fresh()
    d2h = median(d2h_fresh, repeat, sync)
    h2d = median(lambda: h2d_fresh(host), repeat, sync)
    rows.append(Row(f"{label}: ceiling, D2H + H2D into fresh buffers", d2h, h2d))
    d2h_pre = median(d2h_into, repeat, sync)
    h2d_pre = median(h2d_into, repeat, sync)
    rows.append(Row(f"{label}: ceiling, D2H + H2D into preallocated", d2h_pre, h2d_pre))

    from warpstore.serialize import deserialize, serialize

    message = serialize(obj)
    ser = median(lambda: serialize(obj), repeat, sync)
    de = median(lambda: deserialize(message), repeat, sync)
    rows.append(Row(f"{label}: warpstore serialize + deserialize only", ser, de))
    with Store(f"gpu-check-{label}", LocalConnector(), cache_size=0) as store:
        out = store.get(store.put(obj))
        ok = check(out)
        del out
        put_s, get_s = time_store(store, obj, repeat, sync)
        rows.append(Row(f"{label}: warpstore Store + LocalConnector", put_s, get_s, _ok(ok)))
    with Store(
        f"gpu-check-{label}-pickle",
        LocalConnector(),
        cache_size=0,
        serializer=pickle.dumps,
        deserializer=pickle.loads,
    ) as store:
        put_s, get_s = time_store(store, obj, repeat, sync)
        rows.append(Row(f"{label}: pickle (original's path) + LocalConnector", put_s, get_s))
    if server:
        rows.extend(bench_server(label, obj, check, sync, repeat))
    return rows


def _ok(ok: bool) -> str:
    return "round trip OK" if ok else "ROUND TRIP WRONG"


def bench_server(
    label: str, obj: Any, check: Callable[[Any], bool], sync: Callable[[], None], repeat: int
) -> list[Row]:
    try:
        import zmq  # noqa: F401

        from warpstore.connectors.zmq import ZMQConnector
        from warpstore.store import Store
    except ImportError as e:
        return [Row(f"{label}: ZeroMQ node server", None, None, f"skipped: {e}")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("XDG_RUNTIME_DIR", tmp)
        connector = ZMQConnector(address="127.0.0.1", runtime_dir=tmp)
        try:
            for name, shared in (("shared memory", True), ("socket", False)):
                c = (
                    connector
                    if shared
                    else ZMQConnector(address="127.0.0.1", runtime_dir=tmp, shared_memory=False)
                )
                what = f"{label}: Store + same-node ZeroMQ node server, {name}"
                try:
                    with Store(f"gpu-check-{label}-zmq-{name}", c, cache_size=0) as store:
                        ok = check(store.get(store.put(obj)))
                        put_s, get_s = time_store(store, obj, repeat, sync)
                    rows.append(Row(what, put_s, get_s, _ok(ok)))
                    if shared:
                        with Store(f"gpu-check-{label}-zmq-steady", c, cache_size=0) as store:
                            put_s, get_s = time_store_steady(store, obj, repeat, sync)
                        rows.append(Row(f"{what}, put after evict", put_s, get_s))
                except Exception as e:
                    rows.append(Row(what, None, None, f"failed: {type(e).__name__}: {e}"))
        finally:
            try:
                connector.stop_server()
            except Exception as e:
                print(f"could not stop the node server: {e}", file=sys.stderr)
    return rows


def cupy_rows(nbytes: int, repeat: int, server: bool) -> list[Row]:
    import cupy as cp
    import numpy as np

    arr = cp.random.random(nbytes // 4, dtype=cp.float32)
    host_pre = np.empty(arr.shape, arr.dtype)
    dev_pre = cp.empty_like(arr)

    def sync() -> None:
        cp.cuda.Device().synchronize()

    return bench_library(
        "CuPy",
        arr,
        arr.get,
        cp.asarray,
        lambda: arr.get(out=host_pre),
        lambda: dev_pre.set(host_pre),
        lambda out: type(out) is cp.ndarray and bool(cp.array_equal(out, arr)),
        sync,
        repeat,
        server,
    )


def torch_rows(nbytes: int, repeat: int, server: bool) -> list[Row]:
    import torch

    t = torch.rand(nbytes // 4, device="cuda")
    host_pre = torch.empty(t.shape, dtype=t.dtype)
    dev_pre = torch.empty_like(t)

    return bench_library(
        "torch",
        t,
        t.cpu,
        lambda h: h.to("cuda"),
        lambda: host_pre.copy_(t),
        lambda: dev_pre.copy_(host_pre),
        lambda out: out.is_cuda and bool(torch.equal(out, t)),
        torch.cuda.synchronize,
        repeat,
        server,
    )


def print_table(rows: list[Row], device: str, nbytes: int) -> None:
    print(f"\n{nbytes / 2**20:.0f} MiB on {device} (median ms)\n")
    width = max(len(r.name) for r in rows) + 2
    print(f"{'':{width}} {'put':>8} {'get':>8} {'put+get':>8} {'x ceiling':>9}")
    ceilings: dict[str, float] = {}
    for r in rows:
        if r.put is None or r.get is None:
            print(f"{r.name:{width}} {'':>8} {'':>8} {'':>8} {'':>9}  {r.note}")
            continue
        total = r.put + r.get
        library = r.name.split(":")[0]
        if "fresh buffers" in r.name:
            ceilings[library] = total
        ratio = total / ceilings[library] if library in ceilings else float("nan")
        print(
            f"{r.name:{width}} {r.put * 1e3:8.1f} {r.get * 1e3:8.1f} {total * 1e3:8.1f} "
            f"{ratio:9.2f}  {r.note}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-tests", action="store_true")
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()
    status = 0
    if not args.no_tests:
        status = run_tests()
        print(f"tests: {'passed' if status == 0 else 'FAILED'}", flush=True)
    nbytes = parse_size(args.size)
    rows: list[Row] = []
    device = "unknown device"
    for name, fn in (("CuPy", cupy_rows), ("torch", torch_rows)):
        try:
            rows.extend(fn(nbytes, args.repeat, not args.no_server))
        except ImportError as e:
            rows.append(Row(f"{name}: (all rows)", None, None, f"skipped: {e}"))
        except Exception as e:
            status = status or 1
            rows.append(Row(f"{name}: (all rows)", None, None, f"FAILED: {type(e).__name__}: {e}"))
    try:
        import torch

        device = torch.cuda.get_device_name(0)
    except Exception:
        pass
    print_table(rows, device, nbytes)
    return status


if __name__ == "__main__":
    sys.exit(main())
