"""A strict in-memory double of the ``kafka`` (kafka-python) client and a one-broker cluster.

Installed as :data:`warpstore.stream.shims.kafka_adapter.kafka` by the tests.
It follows kafka-python's documented behaviour for what warpstore uses, and
refuses what the real client or broker refuses:

- ``KafkaProducer(**configs)``: unknown configs -> ``AssertionError`` ("Unrecognized
  configs"); ``send`` needs a key or a value; without ``value_serializer`` the
  value must be bytes-like (else ``AssertionError``); a record larger than
  ``max_request_size`` (default 1048576) -> ``MessageSizeTooLargeError``;
  ``send`` after ``close`` -> ``KafkaClosedError``; topic names must match
  ``[a-zA-Z0-9._-]{1,249}`` (the broker answers ``InvalidTopicError``, raised
  by the future's ``get``).
- ``KafkaConsumer(*topics, **configs)``: iteration yields ``ConsumerRecord`` s in
  offset order and blocks; ``consumer_timeout_ms`` elapsed -> ``StopIteration``;
  ``auto_offset_reset`` ``"latest"`` (default) starts at the end of the log at
  subscription, ``"earliest"`` at its start; consumers with the same ``group_id``
  share the topic (each record to one of them); iterating a closed consumer
  raises ``IllegalStateError``.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from typing import Any, NamedTuple


class KafkaError(RuntimeError):
    pass


class MessageSizeTooLargeError(KafkaError):
    pass


class InvalidTopicError(KafkaError):
    pass


class KafkaClosedError(KafkaError):
    pass


class IllegalStateError(KafkaError):
    pass


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_cond = threading.Condition()
_logs: dict[str, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
_group_offsets: dict[tuple[str, str], int] = {}


def reset() -> None:
    with _cond:
        _logs.clear()
        _group_offsets.clear()


class FutureRecordMetadata:
    def __init__(self, result: RecordMetadata | None, error: KafkaError | None) -> None:
        self._result = result
        self._error = error

    def get(self, timeout: float | None = None) -> RecordMetadata:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


_PRODUCER_CONFIGS = {
    "bootstrap_servers": "localhost",
    "client_id": None,
    "key_serializer": None,
    "value_serializer": None,
    "acks": 1,
    "linger_ms": 0,
    "max_request_size": 1048576,
    "compression_type": None,
    "retries": 0,
}


class KafkaProducer:
    def __init__(self, **configs: Any) -> None:
        unknown = set(configs) - set(_PRODUCER_CONFIGS)
        assert not unknown, f"Unrecognized configs: {unknown}"
        self.config = {**_PRODUCER_CONFIGS, **configs}
        self._closed = False
        self.sent = 0

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        if self._closed:
            raise KafkaClosedError("KafkaProducer already closed!")
        assert not (value is None and key is None), "Need at least one: key or value"
        if self.config["value_serializer"] is not None:
            value = self.config["value_serializer"](value)
        assert value is None or isinstance(value, (bytes, bytearray, memoryview)), (
            f"value must be bytes without a value_serializer, got {type(value).__name__}"
        )
        size = len(value or b"") + len(key or b"") + 61
        if size > self.config["max_request_size"]:
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the "
                "maximum request size you have configured with the max_request_size configuration"
            )
        if not _TOPIC.match(topic):
            return FutureRecordMetadata(None, InvalidTopicError(f"invalid topic {topic!r}"))
        with _cond:
            log = _logs[topic]
            log.append((key, None if value is None else bytes(value)))
            _cond.notify_all()
            self.sent += 1
            return FutureRecordMetadata(RecordMetadata(topic, 0, len(log) - 1), None)

    def flush(self, timeout: float | None = None) -> None:
        if self._closed:
            raise KafkaClosedError("KafkaProducer already closed!")

    def close(self, timeout: float | None = None) -> None:
        self._closed = True


_CONSUMER_CONFIGS = {
    "bootstrap_servers": "localhost",
    "client_id": None,
    "group_id": None,
    "auto_offset_reset": "latest",
    "consumer_timeout_ms": float("inf"),
    "enable_auto_commit": True,
    "value_deserializer": None,
}


class KafkaConsumer:
    def __init__(self, *topics: str, **configs: Any) -> None:
        unknown = set(configs) - set(_CONSUMER_CONFIGS)
        assert not unknown, f"Unrecognized configs: {unknown}"
        self.config = {**_CONSUMER_CONFIGS, **configs}
        assert self.config["auto_offset_reset"] in ("earliest", "latest"), "bad auto_offset_reset"
        self._topics = list(topics)
        self._closed = False
        with _cond:
            start = {t: 0 if self.config["auto_offset_reset"] == "earliest" else len(_logs[t])
                     for t in topics}
            group = self.config["group_id"]
            if group is not None:
                for t in topics:
                    _group_offsets.setdefault((group, t), start[t])
            self._offsets = start

    def _take(self) -> ConsumerRecord | None:
        group = self.config["group_id"]
        for t in self._topics:
            off = _group_offsets[(group, t)] if group is not None else self._offsets[t]
            if off < len(_logs[t]):
                key, value = _logs[t][off]
                if group is not None:
                    _group_offsets[(group, t)] = off + 1
                else:
                    self._offsets[t] = off + 1
                return ConsumerRecord(t, 0, off, key, value)
        return None

    def __iter__(self) -> KafkaConsumer:
        return self

    def __next__(self) -> ConsumerRecord:
        if self._closed:
            raise IllegalStateError("Consumer already closed")
        deadline = time.monotonic() + self.config["consumer_timeout_ms"] / 1000
        with _cond:
            while True:
                record = self._take()
                if record is not None:
                    return record
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StopIteration
                _cond.wait(min(left, 1.0))

    def close(self, autocommit: bool = True) -> None:
        self._closed = True
