"""Put/get throughput through one server on loopback, all peers in one run.

    python benchmarks/connector_throughput.py [--no-original] [--sizes 1KiB,1MiB,100MiB]

Rows: warpstore's ZMQConnector and UCXConnector (node servers; UCX over its
TCP and shared-memory transports here, no RDMA), RedisConnector against a real
redis-server, the original design's ZeroMQ connector (PyPI ``proxystore`` +
``proxystore-ex``, installed by this script into a separate virtual
environment under ~/.cache, never a dependency of ours), and a raw TCP socket
transfer between two processes as the ceiling. Medians of repeated runs.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    sizes = {s: parse_size(s) for s in args.sizes.split(",")}

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


if __name__ == "__main__":
    main()
