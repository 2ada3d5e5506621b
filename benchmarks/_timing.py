"""Helpers shared by the benchmark scripts (not a test, not part of the package)."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SIZES = {"1 KiB": 1024, "1 MiB": 1024**2, "100 MiB": 100 * 1024**2}
REPEATS = {1024: 300, 1024**2: 60, 100 * 1024**2: 7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_connector(connector: Any, sizes: dict[str, int]) -> dict[str, dict[str, float]]:
    """Median seconds of put and get (bytes in, bytes out) for each size.

    Each put's object is evicted after it was timed, as in a workflow's steady
    state: otherwise every put of 100 MiB also pays for faulting in 100 MiB of
    fresh server memory (about 0.2 s on these VMs, for Redis as for us), and
    the table would measure the kernel rather than the transport.
    """
    results: dict[str, dict[str, float]] = {}
    for label, size in sizes.items():
        data = os.urandom(size)
        repeat = REPEATS.get(size, 10)
        put_times = []
        for i in range(repeat + 2):
            start = time.perf_counter()
            key = connector.put(data)
            elapsed = time.perf_counter() - start
            if i >= 2:
                put_times.append(elapsed)
            if i < repeat + 1:
                connector.evict(key)

        def get() -> None:
            out = connector.get(key)  # noqa: B023
            assert out is not None and len(out) == size  # noqa: B023

        get_s = median_time(get, repeat)
        connector.evict(key)
        results[label] = {"put": statistics.median(put_times), "get": get_s}
    return results


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--proto-max-bulk-len",
            "1gb",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(
    title: str,
    results: dict[str, dict[str, dict[str, float]]],
    sizes: dict[str, int],
    reference: str | None = None,
) -> None:
    """One row per (connector, size): median put/get time and throughput."""
    print(title)
    head = (
        f"{'connector':<28} {'size':>8} {'put median':>12} {'put MiB/s':>10} "
        f"{'get median':>12} {'get MiB/s':>10}"
    )
    if reference:
        head += f"  {reference} speed-up (put/get)"
    print(head)
    print("-" * len(head))
    for label, size in sizes.items():
        for name, per_size in results.items():
            r = per_size.get(label)
            if r is None:
                continue
            mib = size / 2**20
            line = (
                f"{name:<28} {label:>8} {fmt_s(r['put']):>12} {mib / r['put']:>10.1f} "
                f"{fmt_s(r['get']):>12} {mib / r['get']:>10.1f}"
            )
            ref = results.get(reference or "", {}).get(label)
            if ref and name != reference:
                line += f"  {r['put'] / ref['put']:.2f}x / {r['get'] / ref['get']:.2f}x"
            print(line)
        print()


def fmt_s(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"
