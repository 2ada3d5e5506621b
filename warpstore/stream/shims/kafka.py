"""Kafka: a durable, partitioned log; consumers in a group share a topic's events.

Wraps ``kafka-python`` clients you configure yourself (or builds them with
:func:`warpstore.stream.shims.kafka_adapter.make_producer` /
``make_consumer``). Records are the encoded events, sent as raw bytes; each
send waits for the broker's acknowledgement so a flushed stream is durable.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import Self

from warpstore.stream.shims import kafka_adapter

__all__ = ["KafkaPublisher", "KafkaSubscriber"]


class KafkaPublisher:
    """Publishes messages with a ``KafkaProducer``.

    Args:
        client: a ``kafka.KafkaProducer`` (no ``value_serializer``: messages are bytes).
        timeout: seconds to wait for each acknowledgement (``None``: forever).
    """

    def __init__(self, client: Any, *, timeout: float | None = 30.0) -> None:
        self._client = client
        self._timeout = timeout

    def send(self, topic: str, message: bytes) -> None:
        kafka_adapter.produce(self._client, topic, message, self._timeout)

    def close(self) -> None:
        kafka_adapter.close(self._client)


class KafkaSubscriber:
    """Yields record values from a ``KafkaConsumer`` already subscribed to the topic(s).

    Iteration stops (``StopIteration``) when the consumer's
    ``consumer_timeout_ms`` elapses with no record, as ``kafka-python`` does.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        return kafka_adapter.next_value(self._client)

    def close(self) -> None:
        kafka_adapter.close(self._client)
