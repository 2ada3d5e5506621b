"""Endpoint-to-endpoint transfers on loopback against Redis, one run, medians.

    python benchmarks/endpoint_throughput.py [--sizes 1KiB,1MiB,16MiB,64MiB]

Starts a relay and two endpoint daemons (``a`` and ``b``, ICE on 127.0.0.1)
in a temporary endpoint home, puts each object on ``a`` and times the get
from ``b`` (a WebRTC data channel between the two daemons, plus each side's
local socket), against a put and get through a real redis-server. Everything
started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import fmt_s, free_port, median_time, redis_server

from warpstore.connectors.redis import RedisConnector
from warpstore.units import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1KiB,1MiB,16MiB,64MiB")
    args = parser.parse_args()
    sizes = {s: parse_size(s) for s in args.sizes.split(",")}
    work = Path(tempfile.mkdtemp(prefix="warpstore-ep-bench-"))
    os.environ["WARPSTORE_ENDPOINT_HOME"] = str(work / "home")
    token = work / "token"
    token.write_text(secrets.token_hex(32))
    port = free_port()
    relay = subprocess.Popen(
        [sys.executable, "-m", "warpstore", "relay", "--port", str(port), "--token-file",
         str(token)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def cli(*a: str) -> None:
        subprocess.run([sys.executable, "-m", "warpstore", *a], check=True,
                       capture_output=True)

    time.sleep(0.5)
    try:
        for name in ("a", "b"):
            cli("endpoint", "configure", name, "--relay-server", f"ws://127.0.0.1:{port}",
                "--relay-token-file", str(token), "--address", "127.0.0.1")
            cli("endpoint", "start", name)
        from warpstore.connectors.endpoint import EndpointConnector
        from warpstore.endpoint.config import load_config

        a = EndpointConnector([load_config("a").uuid])
        b = EndpointConnector([load_config("b").uuid])
        rows = []
        with redis_server() as (host, rport):
            redis = RedisConnector(host, rport)
            for label, size in sizes.items():
                data = os.urandom(size)
                repeat = 30 if size <= 1 << 20 else 5
                key = a.put(data)
                b.get(key)  # the first get also opens the peer connection
                ep_get = median_time(lambda k=key: b.get(k), repeat, warmup=1)
                ep_put = median_time(lambda d=data: a.evict(a.put(d)), repeat, warmup=1)
                rkey = redis.put(data)
                r_get = median_time(lambda k=rkey: redis.get(k), repeat, warmup=1)
                r_put = median_time(lambda d=data: redis.evict(redis.put(d)), repeat, warmup=1)
                rows.append((label, size, ep_put, ep_get, r_put, r_get))
            redis.close()
        a.close()
        b.close()
    finally:
        for name in ("a", "b"):
            subprocess.run([sys.executable, "-m", "warpstore", "endpoint", "stop", name],
                           capture_output=True)
        relay.terminate()
        relay.wait(10)
    print(f"endpoint a -> endpoint b over a WebRTC data channel on loopback vs Redis "
          f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores), medians")
    head = (f"{'size':>7} {'endpoint put':>13} {'endpoint get':>13} {'get MiB/s':>10} "
            f"{'redis put':>10} {'redis get':>10} {'get MiB/s':>10}")
    print(head)
    print("-" * len(head))
    for label, size, ep_put, ep_get, r_put, r_get in rows:
        mib = size / 2**20
        print(f"{label:>7} {fmt_s(ep_put):>13} {fmt_s(ep_get):>13} {mib / ep_get:>10.1f} "
              f"{fmt_s(r_put):>10} {fmt_s(r_get):>10} {mib / r_get:>10.1f}")


if __name__ == "__main__":
    main()
