"""Stream events/s and end-to-end latency per broker, 1 KiB and 1 MiB objects, one run.

    python benchmarks/stream_throughput.py [--events 2000] [--big-events 100]

A producer process streams objects through a node-server store (ZeroMQ, on
127.0.0.1) and each broker; this process consumes them and fetches every
object (``next_object``, which also evicts it). Throughput: objects fetched
per second from the first send to the last fetch, producer sending as fast as
it can. Latency: median and 95th percentile from ``send()`` to the object in
the consumer's hands, with the producer pacing its sends (one at a time, so
no queueing). The floor is the store alone: put + get + evict of the same
object in one process, no broker and no events. Brokers: multiprocessing
queue, Redis pub/sub, Redis lists, ZeroMQ PUB/SUB, node servers (Kafka needs
a Kafka cluster: not run here).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import fmt_s, free_port, redis_server

from warpstore.connectors.zmq import ZMQConnector
from warpstore.store import Store
from warpstore.stream import StreamConsumer, StreamProducer

SIZES = {"1 KiB": 1024, "1 MiB": 1024**2}


def publisher(spec: dict[str, Any]) -> Any:
    kind = spec["kind"]
    if kind == "queue":
        from warpstore.stream.shims.queue import QueuePublisher

        return QueuePublisher({spec["topic"]: spec["queue"]})
    if kind == "redis":
        from warpstore.stream.shims.redis import RedisPublisher

        return RedisPublisher(*spec["redis"])
    if kind == "redis-queue":
        from warpstore.stream.shims.redis import RedisQueuePublisher

        return RedisQueuePublisher(*spec["redis"])
    if kind == "zmq":
        from warpstore.stream.shims.zmq import ZeroMQPublisher

        return ZeroMQPublisher(spec["address"])
    from warpstore.stream.shims.nodeserver import NodeServerPublisher

    return NodeServerPublisher(
        ZMQConnector.from_config({**spec["connector"], "spawn": False}), address=spec["address"]
    )


def subscriber(spec: dict[str, Any], connector: Any) -> Any:
    kind, topic = spec["kind"], spec["topic"]
    if kind == "queue":
        from warpstore.stream.shims.queue import QueueSubscriber

        return QueueSubscriber(spec["queue"], timeout=60)
    if kind == "redis":
        from warpstore.stream.shims.redis import RedisSubscriber

        return RedisSubscriber(*spec["redis"], topic, timeout=60)
    if kind == "redis-queue":
        from warpstore.stream.shims.redis import RedisQueueSubscriber

        return RedisQueueSubscriber(*spec["redis"], topic, timeout=60)
    if kind == "zmq":
        from warpstore.stream.shims.zmq import ZeroMQSubscriber

        return ZeroMQSubscriber(spec["address"], topic, timeout=60)
    from warpstore.stream.shims.nodeserver import NodeServerSubscriber

    return NodeServerSubscriber(topic, connector, address=spec["address"], timeout=60)


def produce(spec: dict[str, Any], store_config: dict[str, Any], n: int, size: int,
            gap: float) -> None:
    store = Store.from_config(store_config)
    pub = publisher(spec)
    if hasattr(pub, "wait_for_subscribers"):
        pub.wait_for_subscribers(spec["topic"], 1, timeout=30)
    data = os.urandom(size)
    topic = spec["topic"]
    with StreamProducer[bytes](pub, {topic: store}) as producer:
        for _ in range(n):
            producer.send(topic, data, metadata={"t": time.monotonic()})
            if gap:
                time.sleep(gap)
        producer.close_topics(topic)


def run(spec: dict[str, Any], store: Store[Any], n: int, size: int, gap: float) -> list[float]:
    """Per-object latencies; the last element is the wall time of the whole stream."""
    sub = subscriber(spec, store.connector)
    proc = multiprocessing.get_context("spawn").Process(
        target=produce, args=(spec, store.config(), n, size, gap)
    )
    proc.start()
    latencies = []
    first = None
    try:
        for meta, obj in StreamConsumer[bytes](sub).iter_objects_with_metadata():
            now = time.monotonic()
            first = meta["t"] if first is None else first
            assert len(obj) == size
            latencies.append(now - meta["t"])
        wall = time.monotonic() - (first or time.monotonic())
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
        sub.close()
    assert len(latencies) == n, f"{spec['kind']}: {len(latencies)} of {n} events"
    return [*latencies, wall]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="1 KiB objects per run")
    parser.add_argument("--big-events", type=int, default=100, help="1 MiB objects per run")
    parser.add_argument("--latency-events", type=int, default=100)
    args = parser.parse_args()
    counts = {1024: args.events, 1024**2: args.big_events}

    work = tempfile.mkdtemp(prefix="warpstore-stream-bench-")
    os.environ.update(
        WARPSTORE_RUNTIME_DIR=work, WARPSTORE_JOB_ID=f"stream-bench-{os.getpid()}",
        WARPSTORE_ADDRESS="127.0.0.1",
    )
    connector = ZMQConnector()
    address = connector.local_server()["address"]
    store: Store[Any] = Store("stream-bench", connector, register=True)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    try:
        with redis_server() as redis_addr:
            for label, size in SIZES.items():
                data = os.urandom(size)
                start = time.perf_counter()
                for _ in range(200):
                    k = store.put(data)
                    store.get(k)
                    store.evict(k)
                    store.cache.clear()
                floor = (time.perf_counter() - start) / 200
                rows.append(("store only (put+get+evict)", label, 1 / floor, floor, floor))
                for kind in ("queue", "redis", "redis-queue", "zmq", "nodeserver"):
                    def spec(topic: str, kind: str = kind) -> dict[str, Any]:
                        return {
                            "kind": kind, "topic": topic, "queue": ctx.Queue(),
                            "redis": redis_addr, "address": (
                                address if kind == "nodeserver"
                                else f"tcp://127.0.0.1:{free_port()}"
                            ),
                            "connector": connector.config(),
                        }
                    n = counts[size]
                    res = run(spec(f"tp-{kind}-{size}"), store, n, size, 0.0)
                    rate = n / res[-1]
                    gap = 0.002 if size < 2**20 else 0.01
                    lat = run(spec(f"lat-{kind}-{size}"), store, args.latency_events, size, gap)
                    lat = sorted(lat[:-1])
                    p95 = lat[int(0.95 * (len(lat) - 1))]
                    rows.append((kind, label, rate, statistics.median(lat), p95))
                    print(f"  {kind:<12} {label}: {rate:9.0f} events/s, "
                          f"latency {fmt_s(statistics.median(lat))}", file=sys.stderr)
    finally:
        store.close()
        connector.stop_server()
        shutil.rmtree(work, ignore_errors=True)
    head = f"{'broker':<28} {'size':>6} {'events/s':>10} {'latency p50':>12} {'p95':>10}"
    print("Streams: producer process -> broker -> consumer fetching each object (node-server "
          "store)")
    print(head)
    print("-" * len(head))
    for kind, label, rate, p50, p95 in rows:
        print(f"{kind:<28} {label:>6} {rate:>10.0f} {fmt_s(p50):>12} {fmt_s(p95):>10}")


if __name__ == "__main__":
    main()
