"""Same-node data through a node server: shared memory vs the socket vs memcpy, one run.

    python benchmarks/same_node.py [--size 100MiB] [--repeat 9] [--small-seconds 3]
                                   [--clients 1,4,8] [--small-rounds 1] [--no-small]

Large objects (a ``--size`` numpy array through a ``Store`` and a ZeroMQ node
server on this machine): a get as a read-only view and as a private copy
(shared memory), a get over the socket (``shared_memory=False``, what every
same-node get was before), and a put through shared memory and over the
socket, next to the ceiling: ``memcpy`` of the same bytes into a fresh buffer
(a get or a put must make new memory) and into a warm one. Medians.

The memcpy rows copy from memory this process already maps; a get of an
object this process has not read yet must first map its pages, and a put
with no evicted segment to reuse must fill new tmpfs pages (the kernel
allocates each 4 KiB page as it is written). Those cases have their own
rows, each next to its own ceiling (mapping a tmpfs file and copying out of
it; ``write(2)`` of a new tmpfs file), so no row is compared with a floor it
cannot reach. A ``copy=True`` reader keeps its last few segments mapped, and
a put reuses segments that were evicted while no one mapped them.

Broadcast (``--broadcast``): one producer puts a 64 MiB array; 4 simulated
nodes (distinct host names, each with its own node server) x 4 ranks read it
at once. Printed: how many transfers the owner served and how many the nodes
relayed to each other, and the whole read's time against one remote get; by
default the owner sends to 4 nodes at once before later ones wait for a node
holding a copy, so here the owner sends all 4; rows with relaying off and
with a fan-out of 1 (the owner sends 2, the holders 1 each) are next to it.

Small operations: 1 KiB put+get pairs per second with 1, 4 and 8 client
processes, warpstore's node server next to raw redis-py against a local
redis-server (``redis-server`` on PATH; skipped with a message otherwise):
same-node small objects as files of the server's area (server/direct.py, no
round trip) and, for comparison, the server socket (``WARPSTORE_DIRECT=0``).
The three take turns for each client count (``--small-rounds N``: N turns,
medians), so a change in the machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_time

from warpstore.connectors.zmq import ZMQConnector
from warpstore.store import Store
from warpstore.units import parse_size

_SCRATCH = f"/dev/shm/warpstore-bench-{os.getpid()}"  # the ceilings' tmpfs file
_POPULATE = getattr(__import__("mmap"), "MAP_POPULATE", 0)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f}"


def _map_and_copy(size: int) -> None:
    """Map an existing tmpfs file and copy it into a fresh buffer, as a first get must."""
    import mmap

    with open(_SCRATCH, "rb") as f:
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED | _POPULATE)
    dst = np.empty(size, dtype=np.uint8)
    np.copyto(dst, np.frombuffer(m, dtype=np.uint8))
    del dst
    m.close()


def _write_new_file(src: Any) -> None:
    """Write a new tmpfs file, as a put into new pages must."""
    fd = os.open(_SCRATCH + ".w", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, memoryview(src))
    finally:
        os.close(fd)
        os.unlink(_SCRATCH + ".w")


def large(size: int, repeat: int) -> list[tuple[str, float, str]]:
    src = np.frombuffer(os.urandom(size), dtype=np.uint8)
    with open(_SCRATCH, "wb") as f:
        f.write(memoryview(src))
    warm = np.empty_like(src)
    rows: list[tuple[str, float, str]] = []

    def memcpy_fresh() -> None:
        dst = np.empty_like(src)
        np.copyto(dst, src)

    memcpy = median_time(memcpy_fresh, repeat)
    rows.append(("memcpy into a fresh buffer (ceiling)", memcpy, "1.00x"))
    warm_s = median_time(lambda: np.copyto(warm, src), repeat)
    rows.append(("memcpy into a warm buffer", warm_s, f"{warm_s / memcpy:.2f}x"))

    view_c = ZMQConnector(address="127.0.0.1", timeout=60)
    copy_c = ZMQConnector(address="127.0.0.1", timeout=60, copy=True)
    sock_c = ZMQConnector(address="127.0.0.1", timeout=60, shared_memory=False)
    try:
        with (
            Store("bench-view", view_c, cache_size=0) as view_s,
            Store("bench-copy", copy_c, cache_size=0) as copy_s,
            Store("bench-sock", sock_c, cache_size=0) as sock_s,
        ):
            key = view_s.put(src)
            for name, store in (
                ("get, shared memory, read-only view", view_s),
                ("get, shared memory, private copy (again)", copy_s),
                ("get over the socket (before)", sock_s),
            ):

                def get(store: Any = store) -> None:
                    out = store.get(key)
                    assert out.nbytes == size

                t = median_time(get, repeat)
                rows.append((name, t, f"{t / memcpy:.2f}x"))
            view_s.evict(key)
            # A first get maps the object's 100 MiB of 4 KiB pages (and a copy=True
            # reader keeps the mapping for the next get): its own ceiling is
            # mapping a segment plus the memcpy. Each sample gets a new object.
            fresh = [view_s.put(src) for _ in range(repeat)]
            times = []
            for k in fresh:
                start = time.perf_counter()
                copy_s.get(k)
                times.append(time.perf_counter() - start)
                view_s.evict(k)
            t = sorted(times)[len(times) // 2]
            rows.append(("get, private copy, first get of an object", t, f"{t / memcpy:.2f}x"))
            mapped = median_time(lambda: _map_and_copy(size), repeat)
            rows.append(
                ("  ceiling: map a tmpfs file + memcpy out", mapped, f"{mapped / memcpy:.2f}x")
            )
            for name, store in (
                ("put, shared memory (evicted segments reused)", view_s),
                ("put over the socket (before)", sock_s),
            ):
                times = []
                for i in range(repeat + 2):
                    start = time.perf_counter()
                    k = store.put(src)
                    if i >= 2:
                        times.append(time.perf_counter() - start)
                    store.evict(k)  # steady state: memory is returned between puts
                times.sort()
                t = times[len(times) // 2]
                rows.append((name, t, f"{t / memcpy:.2f}x"))
            # Nothing evicted in between: each put fills new tmpfs pages unless the
            # server had time to make a spare (server/spare.py) since the last one.
            times, keys = [], []
            for _ in range(repeat):
                start = time.perf_counter()
                keys.append(view_s.put(src))
                times.append(time.perf_counter() - start)
            for k in keys:
                view_s.evict(k)
            t = sorted(times)[len(times) // 2]
            rows.append(("put, objects kept, back to back", t, f"{t / memcpy:.2f}x"))
            # Objects kept, as above, but the workflow computes between puts (0.2 s
            # here): the server uses that time to make the next put's segment
            # (server/spare.py), so the put writes into pages that exist.
            times, keys = [], []
            for i in range(repeat + 1):
                time.sleep(0.2)
                start = time.perf_counter()
                keys.append(view_s.put(src))
                if i:  # the first put of this size has no spare yet
                    times.append(time.perf_counter() - start)
            for k in keys:
                view_s.evict(k)
            t = sorted(times)[len(times) // 2]
            rows.append(
                ("put, objects kept, 0.2 s between puts (spare made)", t, f"{t / memcpy:.2f}x")
            )
            written = median_time(lambda: _write_new_file(src), repeat)
            rows.append(
                ("  ceiling: write(2) a new tmpfs file", written, f"{written / memcpy:.2f}x")
            )
    finally:
        view_c.stop_server()
        for c in (view_c, copy_c, sock_c):
            c.close()
        os.unlink(_SCRATCH)
    return rows


def _warpstore_pairs(seconds: float, ready: Any, go: Any, out: Any) -> None:
    c = ZMQConnector(address="127.0.0.1", timeout=60)
    data = b"x" * 1024
    c.get(c.put(data))
    ready.release()
    go.wait()
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        key = c.put(data)
        c.get(key)
        c.evict(key)
        n += 1
    out.put(n)
    c.close()


def _redis_pairs(port: int, seconds: float, ready: Any, go: Any, out: Any) -> None:
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    data = b"x" * 1024
    ready.release()
    go.wait()
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        key = secrets.token_hex(16)
        r.set(key, data)
        r.get(key)
        r.delete(key)
        n += 1
    out.put(n)


def _pairs_per_s(
    target: Callable[..., None], args: tuple[Any, ...], clients: int, seconds: float
) -> float:
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, seconds, ready, go, out)) for _ in range(clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    go.set()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join(30)
    return total / seconds


def small(clients: list[int], seconds: float, rounds: int = 1) -> list[tuple[str, float, str]]:
    """Pairs/s of each contender, median of ``rounds``; the contenders take turns
    (direct, socket, Redis for each client count, round after round) so that a
    change in the machine's load hits them alike."""
    from _timing import redis_server

    rows: list[tuple[str, float, str]] = []
    root = os.environ["WARPSTORE_RUNTIME_DIR"]
    servers = {}
    # Two servers, each under its own runtime directory: one makes a small-object area,
    # the other (WARPSTORE_DIRECT=0) does not, so small objects take its socket (the path
    # before same-node direct files). Client processes find theirs by the environment
    # they are started with.
    for mode, flag in (("direct", "1"), ("socket", "0")):
        os.environ["WARPSTORE_RUNTIME_DIR"] = os.path.join(root, mode)
        os.environ["WARPSTORE_DIRECT"] = flag
        servers[mode] = ZMQConnector(address="127.0.0.1", timeout=60)
        servers[mode].local_server()
    os.environ.pop("WARPSTORE_DIRECT", None)
    results: dict[tuple[str, int], list[float]] = {}
    try:
        with contextlib.ExitStack() as stack:
            port = None
            try:
                import redis  # noqa: F401

                _, port = stack.enter_context(redis_server())
            except (ImportError, SystemExit) as e:
                print(f"redis rows skipped: {e}", file=sys.stderr)
            for _ in range(rounds):
                for n in clients:
                    for mode in servers:
                        os.environ["WARPSTORE_RUNTIME_DIR"] = os.path.join(root, mode)
                        rate = _pairs_per_s(_warpstore_pairs, (), n, seconds)
                        results.setdefault((mode, n), []).append(rate)
                    if port is not None:
                        rate = _pairs_per_s(_redis_pairs, (port,), n, seconds)
                        results.setdefault(("redis", n), []).append(rate)
    finally:
        for mode, c in servers.items():
            os.environ["WARPSTORE_RUNTIME_DIR"] = os.path.join(root, mode)
            c.stop_server()
            c.close()
        os.environ["WARPSTORE_RUNTIME_DIR"] = root
    median = {k: statistics.median(v) for k, v in results.items()}
    for n in clients:
        theirs = median.get(("redis", n))
        for mode, label in (("direct", "same-node direct"), ("socket", "via the server socket")):
            ratio = f"{median[mode, n] / theirs:.2f}x redis" if theirs else ""
            rows.append((f"warpstore, {label}, {n} client(s)", median[mode, n], ratio))
        if theirs:
            rows.append((f"raw redis-py + redis-server, {n} client(s)", theirs, ""))
    return rows


def _broadcast_reader(
    node: str, key: Any, ready: Any, go: Any, out: Any, cache: bool = True
) -> None:
    os.environ["WARPSTORE_HOSTNAME"] = node
    c = ZMQConnector(address="127.0.0.1", timeout=120, cache_remote=cache)
    c.local_server()  # this node's server is already running: found, not started
    with Store(f"reader-{os.getpid()}", c, cache_size=0) as store:
        ready.release()
        go.wait()
        value = store.get(key)
        out.put((time.perf_counter(), value.nbytes))
    c.close()


def broadcast(size: int, nodes: int = 4, ranks: int = 4) -> list[tuple[str, float, str]]:
    ctx = mp.get_context("spawn")
    arr = np.frombuffer(os.urandom(size), dtype=np.uint8)
    owner = ZMQConnector(address="127.0.0.1", timeout=120)
    servers = []
    rows: list[tuple[str, float, str]] = []
    try:
        with Store("bcast-owner", owner, cache_size=0) as store:
            key = store.put(arr)
            # one remote get: a reader on another node with no cache
            os.environ["WARPSTORE_HOSTNAME"] = "bcast-single"
            # (through a Store, as the readers below: the same deserialization)
            single = ZMQConnector(address="127.0.0.1", timeout=120, cache_remote=False)
            with Store("bcast-single", single, cache_size=0) as single_store:
                single_s = median_time(lambda: single_store.get(key), 5)
            single.close()
            for n in range(nodes):
                os.environ["WARPSTORE_HOSTNAME"] = f"bcast-node{n}"
                c = ZMQConnector(address="127.0.0.1", timeout=120)
                c.local_server()
                servers.append(c)
            os.environ.pop("WARPSTORE_HOSTNAME")

            def read_at_once(ranks: int, cache: bool, key: Any = key) -> float:
                ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
                procs = [
                    ctx.Process(
                        target=_broadcast_reader,
                        args=(f"bcast-node{n}", key, ready, go, out, cache),
                    )
                    for n in range(nodes)
                    for _ in range(ranks)
                ]
                for p in procs:
                    p.start()
                for _ in procs:
                    ready.acquire()
                start = time.perf_counter()
                go.set()
                ends = [out.get(timeout=300)[0] for _ in procs]
                for p in procs:
                    p.join(30)
                return max(ends) - start

            # The owner sends one copy to each node: on one host the simulated nodes
            # share its CPUs, so N transfers at once cost about N transfers' CPU time.
            # This row is that floor here (one rank per node, no cache).
            floor = read_at_once(1, cache=False)
            # The same from owners (simulated nodes of their own) with relaying off (each
            # node gets its copy from the owner, as before relaying) and with a fan-out of
            # 1 (the owner sends to 2 nodes at once, the other 2 get a holder's copy).
            others: dict[str, tuple[float, int]] = {}
            for fanout in ("0", "1"):
                os.environ.update(
                    WARPSTORE_HOSTNAME=f"bcast-owner-fanout{fanout}",
                    WARPSTORE_RELAY_FANOUT=fanout,
                )
                other = ZMQConnector(address="127.0.0.1", timeout=120)
                other.local_server()
                servers.append(other)
                os.environ.pop("WARPSTORE_HOSTNAME")
                os.environ.pop("WARPSTORE_RELAY_FANOUT")
                with Store(f"bcast-fanout{fanout}", other, cache_size=0) as other_store:
                    other_key = other_store.put(arr)
                    t = read_at_once(ranks, cache=True, key=other_key)
                    others[fanout] = t, other.server_status()["requests"].get("GET", 0)

            def caches() -> Any:
                return np.array(
                    [
                        [c.server_status()["cache"][k] for k in ("fetched_bytes", "served_bytes")]
                        + [c.server_status()["cache"]["relayed"]]
                        for c in servers
                    ]
                ).sum(axis=0)

            gets_before, caches_before = owner.server_status()["requests"].get("GET", 0), caches()
            whole = read_at_once(ranks, cache=True)
            transfers = owner.server_status()["requests"].get("GET", 0) - gets_before
            fetched, served, relayed = (int(x) for x in caches() - caches_before)
            rows.append(("one remote get (no cache)", single_s, "1.00x"))
            rows.append(
                (
                    f"{nodes} nodes x 1 rank at once, no cache",
                    floor,
                    f"{floor / single_s:.2f}x one get: the owner's {nodes} transfers on "
                    "this host's shared CPUs",
                )
            )
            for fanout, label in (("0", "no relay"), ("1", "relay fan-out 1")):
                t, gets = others[fanout]
                rows.append(
                    (
                        f"{nodes} nodes x {ranks} ranks, node cache, {label}",
                        t,
                        f"{t / single_s:.2f}x one get; owner sent {gets} transfers",
                    )
                )
            rows.append(
                (
                    f"{nodes} nodes x {ranks} ranks at once (default: fan-out 2)",
                    whole,
                    f"{whole / single_s:.2f}x one get; owner sent {transfers} transfers, "
                    f"nodes relayed {relayed} to each other; nodes fetched "
                    f"{fetched / 2**20:.0f} MiB, served {served / 2**20:.0f} MiB "
                    "from their copies",
                )
            )
    finally:
        for c in servers:
            c.stop_server()
            c.close()
        owner.stop_server()
        owner.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100MiB")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--small-seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--small-rounds", type=int, default=1, help="median of N turns each")
    parser.add_argument("--no-small", action="store_true")
    parser.add_argument("--no-large", action="store_true")
    parser.add_argument("--broadcast", action="store_true")
    parser.add_argument("--broadcast-size", default="64MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WARPSTORE_RUNTIME_DIR"] = tmp
        os.environ["WARPSTORE_JOB_ID"] = f"bench-{secrets.token_hex(4)}"
        size = parse_size(args.size)
        if not args.no_large:
            print(f"same node, {args.size} numpy array, {os.cpu_count()} CPUs (median ms)")
            for name, t, ratio in large(size, args.repeat):
                print(f"  {name:<44} {fmt_ms(t)} ms  {ratio}")
        if args.broadcast:
            print(f"\nbroadcast of a {args.broadcast_size} array (ms)")
            for name, t, note in broadcast(parse_size(args.broadcast_size)):
                print(f"  {name:<50} {fmt_ms(t)} ms  {note}")
        if not args.no_small:
            print(f"\n1 KiB put+get(+evict) pairs per second (median of {args.small_rounds})")
            clients = [int(n) for n in args.clients.split(",")]
            for name, rate, ratio in small(clients, args.small_seconds, args.small_rounds):
                print(f"  {name:<52} {rate:10.0f}/s  {ratio}")


if __name__ == "__main__":
    main()
