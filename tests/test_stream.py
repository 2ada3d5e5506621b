"""The stream interface (producer, consumer, events, filters) on the in-process queue broker.

Brokers that cross processes are exercised in tests/test_stream_brokers.py;
here the broker is a ``queue.Queue`` so that every test is about the stream's
own semantics: batching, aggregation, per-topic stores, filters, eviction,
end of stream, and what happens to messages that are not events.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from typing import Any

import pytest

from warpstore.connectors.local import LocalConnector
from warpstore.proxy import Proxy
from warpstore.store import Store
from warpstore.stream import StreamConsumer, StreamProducer
from warpstore.stream.events import (
    EndOfStreamEvent,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
    bytes_to_event,
    event_to_bytes,
)
from warpstore.stream.exceptions import EventDecodeError, EventEncodeError, TopicClosedError
from warpstore.stream.filters import SamplingFilter
from warpstore.stream.shims.queue import QueuePublisher, QueueSubscriber


class CountingQueue(queue.Queue[Any]):
    """A queue that counts the messages put on it (one message per flush)."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.puts += 1
        super().put(item, block, timeout)


@pytest.fixture
def store() -> Iterator[Store[Any]]:
    s: Store[Any] = Store(f"stream-test-{id(object())}", LocalConnector(), register=True)
    yield s
    s.close()


def make(topics: tuple[str, ...] = ("t",)) -> tuple[QueuePublisher, dict[str, CountingQueue]]:
    queues = {t: CountingQueue() for t in topics}
    return QueuePublisher(queues), queues  # type: ignore[arg-type]


def test_objects_arrive_as_unresolved_proxies_in_order(store: Store[Any]) -> None:
    pub, queues = make()
    producer = StreamProducer[Any](pub, {"t": store})
    consumer = StreamConsumer[Any](QueueSubscriber(queues["t"], timeout=5))
    for i in range(5):
        producer.send("t", {"i": i}, metadata={"n": i})
    producer.close_topics("t")
    got = list(consumer.iter_with_metadata())
    assert [m for m, _ in got] == [{"n": i} for i in range(5)]
    for i, (_, p) in enumerate(got):
        assert isinstance(p, Proxy)
        assert p == {"i": i}
    # evict=True (the default): each object is gone once its proxy resolved
    assert store.connector._data == {}  # type: ignore[attr-defined]


def test_end_of_stream_stops_every_iterator_after_earlier_events(store: Store[Any]) -> None:
    pub, queues = make()
    producer = StreamProducer[int](pub, {"t": store})
    consumer = StreamConsumer[int](QueueSubscriber(queues["t"], timeout=5))
    producer.send("t", 1)
    producer.send("t", 2)
    producer.close_topics("t")
    producer.close_topics("t")  # a second close sends no second end-of-stream
    assert consumer.next_object() == 1
    assert list(consumer.iter_objects()) == [2]
    with pytest.raises(StopIteration):
        consumer.next()
    with pytest.raises(TopicClosedError, match="'t'"):
        producer.send("t", 3)
    assert queues["t"].puts == 3


def test_batching_one_message_per_batch_and_flush_sends_the_rest(store: Store[Any]) -> None:
    pub, queues = make()
    producer = StreamProducer[int](pub, {None: store}, batch_size=3)
    for i in range(7):
        producer.send("t", i)
    assert queues["t"].puts == 2  # two full batches so far
    producer.flush()
    assert queues["t"].puts == 3
    producer.close(topics=["t"])  # empty buffer: only the end-of-stream
    assert queues["t"].puts == 5  # + end-of-stream, + the publisher's close sentinel
    consumer = StreamConsumer[int](QueueSubscriber(queues["t"], timeout=5))
    assert list(consumer.iter_objects()) == list(range(7))


def test_aggregator_merges_each_batch_and_its_metadata(store: Store[Any]) -> None:
    pub, queues = make()
    producer = StreamProducer[list[int]](pub, {"t": store}, batch_size=2, aggregator=sum_lists)
    producer.send("t", [1], metadata={"a": 1})
    producer.send("t", [2], metadata={"b": 2})
    producer.send("t", [3], metadata={"c": 3})
    producer.close_topics("t")  # flushes the partial batch [3]
    consumer = StreamConsumer[list[int]](QueueSubscriber(queues["t"], timeout=5))
    assert list(consumer.iter_objects_with_metadata()) == [
        ({"a": 1, "b": 2}, [1, 2]),
        ({"c": 3}, [3]),
    ]


def sum_lists(batch: list[list[int]]) -> list[int]:
    return [x for item in batch for x in item]


def test_per_topic_stores_and_inline_topics(store: Store[Any]) -> None:
    other: Store[Any] = Store(f"stream-other-{id(object())}", LocalConnector(), register=True)
    pub, queues = make(("a", "b", "c"))
    producer = StreamProducer[Any](pub, {"a": store, "b": other, "c": None})
    producer.send("a", "in-a")
    producer.send("b", "in-b", evict=False)
    producer.send("c", {"inline": [1, 2.5, None], "raw": b"\x00\xff"})
    producer.close_topics("a", "b", "c")
    a = StreamConsumer[Any](QueueSubscriber(queues["a"], timeout=5)).next()
    b = StreamConsumer[Any](QueueSubscriber(queues["b"], timeout=5)).next()
    c = StreamConsumer[Any](QueueSubscriber(queues["c"], timeout=5)).next()
    assert a == "in-a" and b == "in-b"
    assert c == {"inline": [1, 2.5, None], "raw": b"\x00\xff"} and not isinstance(c, Proxy)
    assert len(store.connector._data) == 0  # type: ignore[attr-defined]
    assert len(other.connector._data) == 1  # type: ignore[attr-defined]  # evict=False kept it
    other.close()


def test_an_object_for_an_inline_topic_must_be_json_or_bytes() -> None:
    pub, _ = make()
    producer = StreamProducer[Any](pub)
    with pytest.raises(EventEncodeError, match="map the topic to a Store"):
        producer.send("t", {1, 2})


def test_filters_drop_before_storing_and_consumer_evicts_what_it_drops(
    store: Store[Any],
) -> None:
    pub, queues = make()
    producer = StreamProducer[int](pub, {"t": store}, filter_=lambda m: m.get("skip", False))
    for i in range(6):
        producer.send("t", i, metadata={"even": i % 2 == 0, "skip": i == 5})
    producer.close_topics("t")
    sub = QueueSubscriber(queues["t"], timeout=5)
    consumer = StreamConsumer[int](sub, keep=lambda m: m["even"])
    assert list(consumer.iter_objects()) == [0, 2, 4]
    # 5 never reached the store; 1 and 3 were dropped by the consumer and evicted
    assert store.connector._data == {}  # type: ignore[attr-defined]


def test_sampling_filter_keeps_about_p() -> None:
    f = SamplingFilter(0.25, seed=1)
    kept = sum(f({}) for _ in range(4000))
    assert 800 < kept < 1200
    with pytest.raises(ValueError):
        SamplingFilter(1.5)


def test_next_object_of_an_evicted_key_is_a_clear_error(store: Store[Any]) -> None:
    pub, queues = make()
    producer = StreamProducer[str](pub, {"t": store})
    producer.send("t", "x")
    store.connector._data.clear()  # type: ignore[attr-defined]
    consumer = StreamConsumer[str](QueueSubscriber(queues["t"], timeout=5))
    with pytest.raises(ValueError, match="no object for key"):
        consumer.next_object()


def test_messages_that_are_not_events_are_skipped(
    store: Store[Any], caplog: pytest.LogCaptureFixture
) -> None:
    q: queue.Queue[bytes] = queue.Queue()
    producer = StreamProducer[str](QueuePublisher({"t": q}), {"t": store})
    q.put(b"\x80\x04garbage")  # a pickle header: never unpickled
    q.put(json.dumps({"v": 1, "topic": "t", "events": [{"type": "boom", "topic": "t"}]}).encode())
    producer.send("t", "ok")
    producer.close_topics("t")
    consumer = StreamConsumer[str](QueueSubscriber(q, timeout=5))
    assert list(consumer.iter_objects()) == ["ok"]
    assert caplog.text.count("skipped a message") == 2


def key_event_doc(store: Store[Any], **changes: Any) -> bytes:
    key = store.put("v")
    event = NewObjectKeyEvent.from_key(
        key, evict=False, metadata={}, store_config=store.config(), topic="t"
    )
    doc = json.loads(event_to_bytes(event))
    doc["events"][0].update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"key": {"$nt": "os:system", "f": ["x"]}}, "not from a trusted module"),
        ({"key": {"$nt": "warpstore.store:Store", "f": []}}, "not a NamedTuple"),
        ({"evict": "yes"}, "not a boolean"),
        (
            {"store_config": {"name": "s", "connector": {"kind": "os:path", "options": {}}}},
            "trusted",
        ),
        ({"store_config": {"name": "s", "connector": {"kind": "zmq", "options": {}}}}, "trusted"),
    ],
)
def test_events_naming_untrusted_code_are_refused(
    store: Store[Any], changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(EventDecodeError, match=match):
        bytes_to_event(key_event_doc(store, **changes))


def test_a_deserializer_from_outside_warpstore_is_refused(store: Store[Any]) -> None:
    from warpstore.stream.events import store_config_to_wire

    config = {**store_config_to_wire(store.config()), "deserializer": "os:system"}
    with pytest.raises(EventDecodeError, match="deserializer"):
        bytes_to_event(key_event_doc(store, store_config=config))


def test_event_round_trip() -> None:
    from warpstore.connectors.globus import GlobusKey

    key = GlobusKey("f", ("t1", "t2"))
    config = Store("rt", LocalConnector()).config()
    batch = EventBatch(
        "t",
        [
            NewObjectEvent("t", {"$weird": [b"b"]}, {"m": 1}),
            NewObjectKeyEvent("t", key, True, {}, config),
            EndOfStreamEvent("t"),
        ],
    )
    back = bytes_to_event(event_to_bytes(batch))
    assert back.events[0] == batch.events[0] and back.events[2] == batch.events[2]
    assert Store.from_config(back.events[1].store_config).config() == config  # type: ignore[union-attr]
    assert isinstance(back.events[1], NewObjectKeyEvent) and back.events[1].key == key


def test_allowed_stores_skips_events_naming_other_stores(
    store: Store[Any], caplog: pytest.LogCaptureFixture
) -> None:
    forged: Store[Any] = Store("elsewhere", LocalConnector())
    q: queue.Queue[bytes] = queue.Queue()
    pub = QueuePublisher({"t": q})
    StreamProducer[str](pub, {"t": forged}).send("t", "forged")
    producer = StreamProducer[str](pub, {"t": store})
    producer.send("t", "real")
    producer.close_topics("t")
    consumer = StreamConsumer[str](QueueSubscriber(q, timeout=5), allowed_stores=[store.name])
    assert list(consumer.iter_objects()) == ["real"]
    assert "naming store 'elsewhere'" in caplog.text
