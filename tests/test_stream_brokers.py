"""Streams across processes through real brokers: Redis (pub/sub and lists), ZeroMQ, the
job's node servers; Kafka through its adapter double (no Kafka broker runs here).

The producer runs in another process (spawned, so it shares nothing with the
test), puts objects in a store both processes reach and publishes events; the
test process consumes them. Every broker runs the same checks.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import free_port
from warpstore.connectors.file import FileConnector
from warpstore.proxy import Proxy
from warpstore.store import Store
from warpstore.stream import StreamConsumer, StreamProducer

N = 20


def make_publisher(spec: dict[str, Any]) -> Any:
    kind = spec["kind"]
    if kind == "redis":
        from warpstore.stream.shims.redis import RedisPublisher

        return RedisPublisher(spec["host"], spec["port"])
    if kind == "redis-queue":
        from warpstore.stream.shims.redis import RedisQueuePublisher

        return RedisQueuePublisher(spec["host"], spec["port"])
    if kind == "zmq":
        from warpstore.stream.shims.zmq import ZeroMQPublisher

        return ZeroMQPublisher(spec["address"])
    if kind == "nodeserver":
        from warpstore.connectors.zmq import ZMQConnector
        from warpstore.stream.shims.nodeserver import NodeServerPublisher

        connector = ZMQConnector.from_config({**spec["connector"], "spawn": False})
        return NodeServerPublisher(connector, address=spec["address"])
    raise AssertionError(kind)


def make_subscriber(spec: dict[str, Any], topic: str, connector: Any = None) -> Any:
    kind = spec["kind"]
    if kind == "redis":
        from warpstore.stream.shims.redis import RedisSubscriber

        return RedisSubscriber(spec["host"], spec["port"], topic, timeout=30)
    if kind == "redis-queue":
        from warpstore.stream.shims.redis import RedisQueueSubscriber

        return RedisQueueSubscriber(spec["host"], spec["port"], topic, timeout=30)
    if kind == "zmq":
        from warpstore.stream.shims.zmq import ZeroMQSubscriber

        return ZeroMQSubscriber(spec["address"], topic, timeout=30)
    if kind == "nodeserver":
        from warpstore.stream.shims.nodeserver import NodeServerSubscriber

        return NodeServerSubscriber(topic, connector, address=spec["address"], timeout=30)
    raise AssertionError(kind)


def produce(
    spec: dict[str, Any],
    store_config: dict[str, Any],
    topic: str,
    n: int,
    subscribers: int,
    batch_size: int,
    evict: bool,
) -> None:
    """The producer process: n objects of growing size, then end of stream."""
    store = Store.from_config(store_config)
    publisher = make_publisher(spec)
    if subscribers and hasattr(publisher, "wait_for_subscribers"):
        publisher.wait_for_subscribers(topic, subscribers, timeout=30)
    with StreamProducer[dict[str, Any]](publisher, {topic: store}, batch_size=batch_size) as p:
        for i in range(n):
            p.send(topic, {"i": i, "data": bytes([i % 256]) * (i * 1000)}, evict=evict,
                   metadata={"i": i, "pid": os.getpid()})
        p.close_topics(topic)
    store.close()


def start_producer(*args: Any) -> Any:
    proc = multiprocessing.get_context("spawn").Process(target=produce, args=args)
    proc.start()
    return proc


def end(proc: Any) -> None:
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        proc.join()
    assert proc.exitcode == 0, f"producer process failed with exit code {proc.exitcode}"


@pytest.fixture(params=["redis", "redis-queue", "zmq", "nodeserver"])
def broker(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """(spec the producer process rebuilds its publisher from, store both processes use)."""
    kind = request.param
    if kind in ("redis", "redis-queue"):
        host, port = request.getfixturevalue("redis_server")
        spec: dict[str, Any] = {"kind": kind, "host": host, "port": port}
    elif kind == "zmq":
        spec = {"kind": kind, "address": f"tcp://127.0.0.1:{free_port()}"}
    else:
        connector = request.getfixturevalue("zmq_connector")
        address = connector.local_server()["address"]
        spec = {"kind": kind, "connector": connector.config(), "address": address,
                "live": connector}
    if kind == "nodeserver":
        # the objects live in the node servers too: the stream needs nothing else
        store: Store[Any] = Store(f"stream-ns-{uuid.uuid4().hex[:8]}", spec.pop("live"))
        spec["_connector"] = store.connector
    else:
        store = Store(f"stream-file-{uuid.uuid4().hex[:8]}", FileConnector(tmp_path / "objs"))
    yield spec, store


def stored_objects(store: Store[Any], keys: list[Any]) -> int:
    return sum(store.exists(k) for k in keys)


def test_objects_cross_processes_in_order_and_are_evicted_after_use(
    broker: tuple[dict[str, Any], Store[Any]],
) -> None:
    batch_size = 4
    spec, store = broker
    topic = f"t-{uuid.uuid4().hex[:8]}"
    sub = make_subscriber(spec, topic, spec.get("_connector"))
    clean = {k: v for k, v in spec.items() if not k.startswith("_")}
    proc = start_producer(clean, store.config(), topic, N, 1, batch_size, True)
    try:
        consumer = StreamConsumer[dict[str, Any]](sub)
        got = list(consumer.iter_with_metadata())
    finally:
        end(proc)
    assert [m["i"] for m, _ in got] == list(range(N))
    assert all(m["pid"] == proc.pid for m, _ in got)
    keys = []
    for i, (_, p) in enumerate(got):
        assert isinstance(p, Proxy)
        keys.append(object.__getattribute__(p, "__factory__").key)
        assert p["data"] == bytes([i % 256]) * (i * 1000)
    assert stored_objects(store, keys) == 0  # evicted by the consumer's first use
    consumer.close()


def test_every_subscriber_sees_every_event_or_each_event_once(
    broker: tuple[dict[str, Any], Store[Any]],
) -> None:
    spec, store = broker
    topic = f"t-{uuid.uuid4().hex[:8]}"
    subs = [make_subscriber(spec, topic, spec.get("_connector")) for _ in range(2)]
    clean = {k: v for k, v in spec.items() if not k.startswith("_")}
    if spec["kind"] == "redis":
        # pub/sub: both subscriptions must be on the server before anything is published
        from warpstore.stream.shims.redis import RedisPublisher

        RedisPublisher(spec["host"], spec["port"]).wait_for_subscribers(topic, 2, 30)
    proc = start_producer(clean, store.config(), topic, N, 2, 1, False)
    try:
        consumers = [StreamConsumer[dict[str, Any]](s) for s in subs]
        if spec["kind"] == "redis-queue":
            # a list: each event is popped by exactly one subscriber; the one end-of-stream
            # event stops one of them, the other then finds the list empty
            seen: dict[int, list[int]] = {0: [], 1: []}
            turn = 0
            while True:
                try:
                    seen[turn].append(consumers[turn].next_object()["i"])
                except StopIteration:
                    break
                turn = 1 - turn
            rest = consumers[1 - turn]
            rest.subscriber._timeout = 0.2
            with pytest.raises(TimeoutError):
                rest.next()
            assert sorted(seen[0] + seen[1]) == list(range(N))
            assert seen[0] and seen[1]
        else:
            for c in consumers:
                assert [o["i"] for o in c.iter_objects()] == list(range(N))
    finally:
        end(proc)
    for s in subs:
        s.close()


def test_nodeserver_subscriber_started_late_misses_nothing(zmq_connector: Any) -> None:
    from warpstore.stream.shims.nodeserver import NodeServerPublisher, NodeServerSubscriber

    store: Store[Any] = Store("ns-late", zmq_connector)
    pub = NodeServerPublisher(zmq_connector, retain=5)
    producer = StreamProducer[int](pub, {"t": store})
    for i in range(3):
        producer.send("t", i)
    producer.close_topics("t")
    consumer = StreamConsumer[int](NodeServerSubscriber("t", zmq_connector, timeout=5))
    assert list(consumer.iter_objects()) == [0, 1, 2]
    # retain=5: older events are trimmed from the server as new ones come
    for _ in range(10):
        pub.send("u", b"not an event")
    status = zmq_connector.server_status()
    # "u": 5 events kept + head; "t": 3 object events + end of stream + head (objects evicted)
    assert status["objects"] == 5 + 1 + 5
    late = NodeServerSubscriber("u", zmq_connector, timeout=5)
    assert late._next == 5


def test_nodeserver_two_concurrent_publishers_are_an_error_not_lost_events(
    zmq_connector: Any,
) -> None:
    from warpstore.stream.shims.nodeserver import NodeServerPublisher, TopicConflictError

    a = NodeServerPublisher(zmq_connector)
    b = NodeServerPublisher(zmq_connector)
    a.send("c", b"a0")
    b.send("c", b"b0")  # b starts after a's head: fine (consecutive publishers)
    with pytest.raises(TopicConflictError, match="another publisher"):
        a.send("c", b"a1")  # a still thinks event 1 is next: it overwrote b's
    later = NodeServerPublisher(zmq_connector)
    later.send("c", b"x")  # a publisher that starts after them continues the log
    later.send("c", b"y")


def test_nodeserver_topic_of_a_launch_job_is_the_same_server_everywhere(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from warpstore.stream.shims.nodeserver import topic_server

    servers = [{"address": f"tcp://10.0.0.{i}:7000", "node": f"n{i}"} for i in range(4)]
    servers.append({"address": "tcp://10.0.0.9:7000", "node": "n9", "elastic": True})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"job_id": "j", "servers": servers}))
    monkeypatch.setenv("WARPSTORE_MANIFEST", str(manifest))

    class Conn:
        transport = "zmq"

    picks = {t: topic_server(t, Conn()) for t in (f"topic-{i}" for i in range(40))}
    assert set(picks.values()) == {s["address"] for s in servers[:4]}  # spread, never elastic
    servers.reverse()
    manifest.write_text(json.dumps({"job_id": "j", "servers": servers}))
    assert {t: topic_server(t, Conn()) for t in picks} == picks  # order-independent


# -- Kafka, through the adapter double ---------------------------------------------


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from tests import kafka_double
    from warpstore.stream.shims import kafka_adapter

    kafka_double.reset()
    monkeypatch.setattr(kafka_adapter, "kafka", kafka_double)
    yield kafka_double
    kafka_double.reset()


def test_kafka_stream_through_the_adapter(kafka: Any, tmp_path: Any) -> None:
    import threading

    from warpstore.stream.shims.kafka import KafkaPublisher, KafkaSubscriber
    from warpstore.stream.shims.kafka_adapter import make_consumer, make_producer

    store: Store[Any] = Store("kafka-objs", FileConnector(tmp_path / "objs"))
    consumer_client = make_consumer(["events"], "127.0.0.1:9092", consumer_timeout_ms=10000)
    producer_client = make_producer("127.0.0.1:9092")
    producer = StreamProducer[list[int]](KafkaPublisher(producer_client), {None: store},
                                         batch_size=3)

    def run() -> None:
        for i in range(10):
            producer.send("events", [i] * 100, metadata={"i": i})
        producer.close(topics=["events"])

    t = threading.Thread(target=run)
    t.start()
    consumer = StreamConsumer[list[int]](KafkaSubscriber(consumer_client))
    got = list(consumer.iter_objects_with_metadata())
    t.join(10)
    assert [m["i"] for m, _ in got] == list(range(10))
    assert all(obj == [m["i"]] * 100 for m, obj in got)
    assert producer_client.sent == 4 + 1 - 1  # 3 full batches + last one with end-of-stream
    with pytest.raises(kafka.KafkaClosedError):  # the producer was closed with the stream
        producer_client.send("events", b"x")
    consumer.close()
    with pytest.raises(kafka.IllegalStateError):
        next(consumer_client)


def test_kafka_refusals_reach_the_caller(kafka: Any) -> None:
    from warpstore.stream.shims.kafka import KafkaPublisher
    from warpstore.stream.shims.kafka_adapter import make_producer

    pub = KafkaPublisher(make_producer("127.0.0.1:9092"))
    with pytest.raises(kafka.InvalidTopicError):
        pub.send("bad topic!", b"{}")
    with pytest.raises(kafka.MessageSizeTooLargeError):
        # an inline object over Kafka's default 1 MiB request limit: use a store instead
        StreamProducer[bytes](pub).send("events", b"x" * (1 << 20))
    with pytest.raises(AssertionError, match="Unrecognized configs"):
        make_producer("127.0.0.1:9092", not_a_config=1)
