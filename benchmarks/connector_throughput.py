"""Put/get throughput through one server on loopback, all peers in one run.

    python benchmarks/connector_throughput.py [--no-original] [--sizes 1KiB,1MiB,100MiB]
    python benchmarks/connector_throughput.py --security-only [--rounds 3]
    python benchmarks/connector_throughput.py --tag-pairs 16

Rows: warpstore's ZMQConnector and UCXConnector (node servers; UCX over its
TCP and shared-memory transports here, no RDMA), RedisConnector against a real
redis-server, the original design's ZeroMQ connector (PyPI ``proxystore`` +
``proxystore-ex``, installed by this script into a separate virtual
environment under ~/.cache, never a dependency of ours), and a raw TCP socket
transfer between two processes as the ceiling. Medians of repeated runs.

``--security`` (or ``--security-only``) adds what security costs on the node
server's socket path (``shared_memory=False``, 100 MiB put + get): the data
tags on (as shipped) and off (benchmark-only: the client's data sealer is
swapped for one that tags nothing, in this process only; the server never
checks data tags), the time the tagged runs spend tagging and checking data
(timed inside them: less noisy than the on/off difference; on ZeroMQ the put's
tag overlaps the send of the data, so only the get's check adds to the time),
``encrypt=True``,
one single-threaded GMAC pass and one ``DataSealer.tag`` (chunked, on its
threads) over the same bytes, and ZeroMQ's NULL, PLAIN (with our admission
handler's ZAP round trip) and CURVE mechanisms on bare pyzmq sockets. On and
off alternate, ``--rounds`` times.

``--tag-pairs N`` measures only what the data tags add, for a busy machine
where medians of separate runs drift: N put+get pairs with tags on and off,
back to back, alternating which goes first; the medians of the differences.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import SIZES, free_port, measure_connector, print_table, redis_server

from warpstore.connectors.redis import RedisConnector
from warpstore.connectors.zmq import ZMQConnector
from warpstore.units import parse_size

VENV = Path.home() / ".cache" / "warpstore" / "bench-proxystore-venv"

ORIGINAL_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
from _timing import measure_connector
from proxystore_ex.connectors.dim.zmq import ZeroMQConnector
sizes = json.loads(sys.argv[2])
c = ZeroMQConnector(port=int(sys.argv[1]), address="127.0.0.1", timeout=30)
try:
    print(json.dumps(measure_connector(c, sizes)))
finally:
    c.close(kill_server=True)
"""


def ensure_original_venv() -> Path | None:
    python = VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run([str(python), "-c", "import proxystore_ex"], capture_output=True)
        if check.returncode == 0:
            return python
    print(f"installing proxystore + proxystore-ex into {VENV} (once)...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "proxystore", "proxystore-ex", "pyzmq"],
            check=True,
        )
    except subprocess.CalledProcessError as e:
        print(f"could not install the original design's packages: {e}", file=sys.stderr)
        return None
    return python


def measure_original(sizes: dict[str, int]) -> dict[str, dict[str, float]] | None:
    python = ensure_original_venv()
    if python is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(ORIGINAL_SCRIPT)
    try:
        out = subprocess.run(
            [
                str(python),
                f.name,
                str(free_port()),
                json.dumps(sizes),
                str(Path(__file__).resolve().parent),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        print(f"original design's benchmark failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, dict[str, float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- raw socket ceiling ----------------------------------------------------------


def _raw_peer(port: int, ready: Any) -> None:
    """Receives a length-prefixed message into a preallocated buffer, acks; or sends one."""
    srv = socket.create_server(("127.0.0.1", port))
    ready.set()
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    store: dict[int, bytearray] = {}
    while True:
        head = conn.recv(9, socket.MSG_WAITALL)
        if len(head) < 9:
            break
        op, n = head[:1], struct.unpack("<Q", head[1:])[0]
        if op == b"P":
            buf = bytearray(n)
            view = memoryview(buf)
            got = 0
            while got < n:
                got += conn.recv_into(view[got:])
            store[n] = buf
            conn.sendall(b"k")
        else:
            conn.sendall(struct.pack("<Q", n))
            conn.sendall(store[n])
    conn.close()
    srv.close()


def measure_raw(sizes: dict[str, int]) -> dict[str, dict[str, float]]:
    from _timing import REPEATS, median_time

    port = free_port()
    ready = mp.Event()
    peer = mp.Process(target=_raw_peer, args=(port, ready))
    peer.start()
    ready.wait(10)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    results: dict[str, dict[str, float]] = {}
    try:
        for label, size in sizes.items():
            data = os.urandom(size)

            def put() -> None:
                sock.sendall(b"P" + struct.pack("<Q", size))  # noqa: B023
                sock.sendall(data)  # noqa: B023
                sock.recv(1)

            def get() -> None:
                sock.sendall(b"G" + struct.pack("<Q", size))  # noqa: B023
                n = struct.unpack("<Q", sock.recv(8, socket.MSG_WAITALL))[0]
                buf = bytearray(n)
                view = memoryview(buf)
                got = 0
                while got < n:
                    got += sock.recv_into(view[got:])

            repeat = REPEATS.get(size, 10)
            results[label] = {"put": median_time(put, repeat), "get": median_time(get, repeat)}
    finally:
        sock.close()
        peer.join(10)
        if peer.is_alive():
            peer.kill()
    return results


# -- security costs ------------------------------------------------------------------


class _NoDataAuth:
    """Benchmark-only stand-in for the client's DataSealer: tags nothing, accepts all."""

    def __init__(self, token: bytes) -> None:
        pass

    def tag(self, key: Any, data: Any, sent: Any = None) -> tuple[bytes, bytes]:
        from warpstore.server.protocol import NO_DATA_TAG

        return NO_DATA_TAG if data is None or not memoryview(data).nbytes else (
            bytes(12), bytes(16)
        )

    def verify(self, key: Any, data: Any, nonce: bytes, tag: bytes) -> bool:
        return True


class _TimedDataAuth:
    """Wraps a session's DataSealer: the time put and get spend tagging and checking data.

    The on/off difference of two put+get medians is noisy on a busy machine;
    this measures the data tags' own share inside the tagged runs directly.
    """

    def __init__(self, sealer: Any) -> None:
        self.sealer = sealer
        self.tagging = 0.0  # ZeroMQ: overlapped with the send of the data (a SEAL follows)
        self.checking = 0.0

    def tag(self, key: Any, data: Any, sent: Any = None) -> tuple[bytes, bytes]:
        start = time.perf_counter()
        try:
            return self.sealer.tag(key, data, sent)  # type: ignore[no-any-return]
        finally:
            self.tagging += time.perf_counter() - start

    def verify(self, key: Any, data: Any, nonce: bytes, tag: bytes) -> bool:
        start = time.perf_counter()
        try:
            return self.sealer.verify(key, data, nonce, tag)  # type: ignore[no-any-return]
        finally:
            self.checking += time.perf_counter() - start


def _put_get(connector: Any, data: bytes, repeat: int) -> tuple[list[float], list[float]]:
    puts, gets = [], []
    for i in range(repeat + 1):  # the first round warms up
        start = time.perf_counter()
        key = connector.put(data)
        put = time.perf_counter() - start
        start = time.perf_counter()
        out = connector.get(key)
        get = time.perf_counter() - start
        assert out is not None and len(out) == len(data)
        del out
        connector.evict(key)
        if i:
            puts.append(put)
            gets.append(get)
    return puts, gets


def _mechanism_peer(mechanism: str, keys: tuple[bytes, bytes], port_q: Any) -> None:
    import threading

    import zmq

    ctx = zmq.Context()
    if mechanism != "NULL":  # a ZAP handler that admits everyone: the round trip, no checks
        zap = ctx.socket(zmq.REP)
        zap.bind("inproc://zeromq.zap.01")

        def admit() -> None:
            with contextlib.suppress(zmq.ZMQError):
                while True:
                    req = zap.recv_multipart()
                    zap.send_multipart([b"1.0", req[1], b"200", b"OK", b"user", b""])

        threading.Thread(target=admit, daemon=True).start()
    sock = ctx.socket(zmq.ROUTER)
    if mechanism == "PLAIN":
        sock.plain_server = True
    elif mechanism == "CURVE":
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = keys
    port_q.put(sock.bind_to_random_port("tcp://127.0.0.1"))
    stored: Any = None
    while True:
        frames = sock.recv_multipart(copy=False)
        if len(frames) == 3:
            stored = frames[2]
            sock.send_multipart([frames[0], b"ok"])
        elif frames[1].bytes == b"get":
            sock.send_multipart([frames[0], b"d", stored], copy=False)
        else:
            break
    os._exit(0)


def measure_mechanism(mechanism: str, data: bytes, repeat: int) -> tuple[list[float], list[float]]:
    """100 MiB put (+ack) and get over bare pyzmq ROUTER/DEALER with one ZMTP mechanism."""
    import zmq

    server_keys = zmq.curve_keypair()
    port_q: Any = mp.Queue()
    peer = mp.Process(target=_mechanism_peer, args=(mechanism, server_keys, port_q))
    peer.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if mechanism == "PLAIN":
        sock.plain_username, sock.plain_password = b"user", b"password"
    elif mechanism == "CURVE":
        sock.curve_serverkey = server_keys[0]
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.connect(f"tcp://127.0.0.1:{port_q.get(timeout=30)}")
    puts, gets = [], []
    try:
        for i in range(repeat + 1):
            start = time.perf_counter()
            sock.send_multipart([b"put", data], copy=False)
            sock.recv()
            put = time.perf_counter() - start
            start = time.perf_counter()
            sock.send(b"get")
            reply = sock.recv_multipart(copy=False)
            get = time.perf_counter() - start
            assert len(reply[1]) == len(data)
            if i:
                puts.append(put)
                gets.append(get)
        sock.send(b"stop")
    finally:
        peer.join(30)
        if peer.is_alive():
            peer.kill()
        sock.close(linger=0)
        ctx.term()
    return puts, gets


def measure_tag_pairs(pairs: int, size: int = 100 * 2**20) -> None:
    import statistics
    from unittest import mock

    data = os.urandom(size)
    runtime = tempfile.mkdtemp(prefix="warpstore-bench-")
    common = {"address": "127.0.0.1", "runtime_dir": runtime, "shared_memory": False}
    on = ZMQConnector(**common)  # type: ignore[arg-type]
    on.put(b"open the session")
    with mock.patch("warpstore.server.auth.DataSealer", _NoDataAuth):
        off = ZMQConnector(**common)  # type: ignore[arg-type]
        off.put(b"open the session")
    load_before = os.getloadavg()[0]
    put_diff, get_diff, base = [], [], []
    try:
        _put_get(on, data, 0)
        _put_get(off, data, 0)
        for i in range(pairs):
            first, second = (on, off) if i % 2 == 0 else (off, on)
            a, b = _put_get(first, data, 1), _put_get(second, data, 1)
            (p_on, g_on), (p_off, g_off) = (a, b) if first is on else (b, a)
            put_diff.append(p_on[0] - p_off[0])
            get_diff.append(g_on[0] - g_off[0])
            base.append(p_off[0] + g_off[0])
    finally:
        on.stop_server()
        on.close()
        off.close()
    med = statistics.median
    both = med(put_diff) + med(get_diff)
    print(f"data tags, {pairs} on/off pairs of {size // 2**20} MiB put+get, socket path "
          f"(load {load_before:.1f} -> {os.getloadavg()[0]:.1f}): put+get without tags "
          f"{fmt_ms(med(base))}; tags add {fmt_ms(med(put_diff))} to the put, "
          f"{fmt_ms(med(get_diff))} to the get: {100 * both / med(base):+.1f} %")


def measure_security(rounds: int, size: int = 100 * 2**20, repeat: int = 5) -> None:
    import statistics
    from unittest import mock

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from warpstore.server import protocol
    from warpstore.server.protocol import DataSealer

    load_before = os.getloadavg()[0]
    data = os.urandom(size)
    runtime = tempfile.mkdtemp(prefix="warpstore-bench-")
    common = {"address": "127.0.0.1", "runtime_dir": runtime, "shared_memory": False}
    on = ZMQConnector(**common)  # type: ignore[arg-type]
    on.put(b"open the session")
    timers = []
    for conn in on._client._all:
        conn.session.data = timer = _TimedDataAuth(conn.session.data)
        timers.append(timer)
    with mock.patch("warpstore.server.auth.DataSealer", _NoDataAuth):
        off = ZMQConnector(**common)  # type: ignore[arg-type]
        off.put(b"open the session")  # its session's data sealer is the stand-in
    assert all(isinstance(c.session.data, _NoDataAuth) for c in off._client._all)
    enc = ZMQConnector(**common, encrypt=True)  # type: ignore[arg-type]
    rows: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("data auth on", "data auth off", "encrypt=True")
    }
    mechanisms: dict[str, tuple[list[float], list[float]]] = {
        m: ([], []) for m in ("NULL", "PLAIN", "CURVE")
    }
    sealer = DataSealer(os.urandom(32))
    single = AESGCM(os.urandom(32))
    gmac: list[float] = []
    single_pass: list[float] = []
    in_tag: list[float] = []  # per object, inside the tagged runs
    in_verify: list[float] = []
    try:
        for r in range(rounds):  # everything once per round: each sees the same load
            order = [("data auth on", on), ("data auth off", off), ("encrypt=True", enc)]
            for name, conn in order if r % 2 == 0 else order[::-1]:
                tagged = sum(t.tagging for t in timers)
                checked = sum(t.checking for t in timers)
                puts, gets = _put_get(conn, data, repeat)
                if conn is on:  # repeat + 1 objects: the first round warms up
                    in_tag.append((sum(t.tagging for t in timers) - tagged) / (repeat + 1))
                    in_verify.append((sum(t.checking for t in timers) - checked) / (repeat + 1))
                rows[name][0].extend(puts)
                rows[name][1].extend(gets)
            for _ in range(repeat):
                start = time.perf_counter()
                sealer.tag(b"key", data)
                gmac.append(time.perf_counter() - start)
                start = time.perf_counter()
                single.encrypt(bytes(12), b"key", data)
                single_pass.append(time.perf_counter() - start)
            for m, (puts, gets) in mechanisms.items():
                p, g = measure_mechanism(m, data, repeat)
                puts.extend(p)
                gets.extend(g)
    finally:
        on.stop_server()
        for c in (on, off, enc):
            c.close()

    med = statistics.median
    mib = size // 2**20
    print(f"security costs, node server socket path (shared_memory=False), {mib} MiB, "
          f"{rounds} rounds x {repeat}; medians ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores, load {load_before:.1f} -> {os.getloadavg()[0]:.1f})")
    print(f"{'':<34} {'put':>10} {'get':>10} {'put+get':>10}")
    total: dict[str, float] = {}
    for name, (puts, gets) in rows.items():
        total[name] = med(puts) + med(gets)
        print(f"{'ZMQConnector ' + name:<34} {fmt_ms(med(puts)):>10} {fmt_ms(med(gets)):>10} "
              f"{fmt_ms(total[name]):>10}")
    for name, (puts, gets) in mechanisms.items():
        print(f"{'bare pyzmq, ZMTP ' + name:<34} {fmt_ms(med(puts)):>10} {fmt_ms(med(gets)):>10} "
              f"{fmt_ms(med(puts) + med(gets)):>10}")
    one = med(gmac)
    workers = protocol._tag_workers() if size >= protocol.CHUNKED_MIN else 1
    print(f"{'one GMAC pass, single thread':<34} {fmt_ms(med(single_pass)):>10} "
          f"({size / med(single_pass) / 1e9:.1f} GB/s)")
    print(f"{f'DataSealer.tag ({workers} threads)':<34} {fmt_ms(one):>10} "
          f"({size / one / 1e9:.1f} GB/s)")
    print(f"{'tag inside put (overlaps the send)':<34} {fmt_ms(med(in_tag)):>10} "
          "(per object, timed inside the tagged runs)")
    print(f"{'verify inside get':<34} {fmt_ms(med(in_verify)):>10}")
    base = total["data auth off"]
    print(f"data authentication: {100 * (total['data auth on'] / base - 1):+.1f} % of put+get "
          f"measured (on vs off); verify alone (not overlapped) = "
          f"{100 * med(in_verify) / base:.1f} % of put+get without tags; "
          f"encrypt=True: {total['encrypt=True'] / base:.2f}x")
    null = mechanisms["NULL"]
    for m in ("PLAIN", "CURVE"):
        ratio = (med(mechanisms[m][0]) + med(mechanisms[m][1])) / (med(null[0]) + med(null[1]))
        print(f"ZMTP {m} vs NULL, put+get: {ratio:.2f}x")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-original", action="store_true", help="skip the original design (no venv install)"
    )
    parser.add_argument("--no-ucx", action="store_true", help="skip the UCX transport")
    parser.add_argument(
        "--encrypt", action="store_true", help="also ZMQConnector(encrypt=True): AES-GCM data"
    )
    parser.add_argument("--sizes", default=",".join(s.replace(" ", "") for s in SIZES))
    parser.add_argument(
        "--security", action="store_true", help="also the security costs (see above)"
    )
    parser.add_argument("--security-only", action="store_true", help="only the security costs")
    parser.add_argument("--rounds", type=int, default=3, help="security: on/off alternations")
    parser.add_argument(
        "--tag-pairs", type=int, default=0, metavar="N", help="only the data tags' cost, N pairs"
    )
    args = parser.parse_args()
    if args.tag_pairs:
        measure_tag_pairs(args.tag_pairs)
        return
    sizes = {s: parse_size(s) for s in args.sizes.split(",")}
    if args.security_only:
        measure_security(args.rounds)
        return

    results: dict[str, dict[str, dict[str, float]]] = {}
    runtime = tempfile.mkdtemp(prefix="warpstore-bench-")
    zmq = ZMQConnector(address="127.0.0.1", runtime_dir=runtime)
    try:
        results["warpstore ZMQConnector"] = measure_connector(zmq, sizes)
    finally:
        zmq.stop_server()
        zmq.close()
    if args.encrypt:
        enc = ZMQConnector(address="127.0.0.1", runtime_dir=runtime, encrypt=True)
        try:
            results["warpstore ZMQConnector encrypt"] = measure_connector(enc, sizes)
        finally:
            enc.stop_server()
            enc.close()
    if not args.no_ucx:
        try:
            from warpstore.connectors.ucx import UCXConnector
            from warpstore.hpc.siteconfig import load_site

            # the local site's UCX settings, as `warpstore launch --site local` uses them
            ucx_env = load_site("local")["connector"].get("ucx", {})
            ucx = UCXConnector(address="127.0.0.1", runtime_dir=runtime, ucx_env=ucx_env)
        except Exception as e:  # ucxx not installed: say so, measure the rest
            print(f"(UCX skipped: {e})")
        else:
            try:
                results["warpstore UCXConnector"] = measure_connector(ucx, sizes)
            finally:
                ucx.stop_server()
                ucx.close()
    with redis_server() as (host, port):
        redis = RedisConnector(host, port)
        results["RedisConnector (redis-server)"] = measure_connector(redis, sizes)
        redis.close()
    if not args.no_original:
        original = measure_original(sizes)
        if original is not None:
            results["original ZeroMQConnector"] = original
    results["raw TCP socket (ceiling)"] = measure_raw(sizes)

    print_table(
        f"put/get through one server on loopback ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores); last column: how many times faster warpstore is than that row",
        results,
        sizes,
        reference="warpstore ZMQConnector",
    )
    if args.security:
        print()
        measure_security(args.rounds)


if __name__ == "__main__":
    main()
