"""The original's ``proxystore.stream.interface`` module path."""

from warpstore.stream.consumer import StreamConsumer
from warpstore.stream.producer import StreamProducer

__all__ = ["StreamConsumer", "StreamProducer"]
