"""Streams of objects by reference: producers put objects in stores and publish events.

``StreamProducer(publisher, stores)`` / ``StreamConsumer(subscriber)``, with
brokers in :mod:`warpstore.stream.shims` (an in-process queue, Redis pub/sub
and queues, ZeroMQ, Kafka, and the job's own node servers).
"""

from warpstore.stream.consumer import StreamConsumer
from warpstore.stream.producer import StreamProducer

__all__ = ["StreamConsumer", "StreamProducer"]
