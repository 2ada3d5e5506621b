"""Every call warpstore makes to the Kafka client (``kafka-python``), in one place.

No Kafka broker runs in CI, so the tests swap :data:`kafka` for a strict
double (``tests/kafka_double.py``) that refuses what the real client and
broker refuse; keeping all client calls here keeps that double small and the
rest of the Kafka shim real.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["close", "load", "make_consumer", "make_producer", "next_value", "produce"]

kafka: Any = None
"""The ``kafka`` module in use (imported on first use; tests put the double here)."""


def load() -> Any:
    global kafka
    if kafka is None:
        try:
            import kafka as _kafka
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "Kafka streams need kafka-python: pip install 'warpstore[kafka]'"
            ) from e
        kafka = _kafka
    return kafka


def make_producer(bootstrap_servers: str | Sequence[str], **kwargs: Any) -> Any:
    """A ``KafkaProducer`` that sends raw bytes (the events are already encoded)."""
    return load().KafkaProducer(bootstrap_servers=bootstrap_servers, **kwargs)


def make_consumer(
    topics: Sequence[str], bootstrap_servers: str | Sequence[str], **kwargs: Any
) -> Any:
    """A ``KafkaConsumer`` subscribed to ``topics``."""
    return load().KafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **kwargs)


def produce(producer: Any, topic: str, value: bytes, timeout: float | None) -> None:
    """Send one record and wait for the broker's acknowledgement."""
    producer.send(topic, value=value).get(timeout=timeout)


def next_value(consumer: Any) -> bytes:
    """The next record's value; ``StopIteration`` when ``consumer_timeout_ms`` elapses."""
    record = next(consumer)
    value: bytes = record.value
    return value


def close(client: Any) -> None:
    client.close()
