"""StreamProducer: put objects in stores, publish small events naming their keys.

Bulk data goes through a :class:`~warpstore.store.Store` (one per topic if you
like: a node-server store for a stream inside a job, Redis for one across
sites) and only events go through the broker, so the broker never carries
more than a few hundred bytes per object.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from warpstore._closing import Closing
from warpstore.store import Store
from warpstore.stream.events import (
    EndOfStreamEvent,
    Event,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
    event_to_bytes,
)
from warpstore.stream.exceptions import TopicClosedError
from warpstore.stream.filters import NullFilter
from warpstore.stream.protocols import Filter, Publisher

__all__ = ["StreamProducer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _Buffered(Generic[T]):
    obj: T
    evict: bool
    metadata: dict[str, Any]


@dataclasses.dataclass
class _TopicBuffer(Generic[T]):
    objects: list[_Buffered[T]] = dataclasses.field(default_factory=list)
    closed: bool = False
    end_of_stream_sent: bool = False


class StreamProducer(Closing, Generic[T]):
    """Sends objects to topics of a stream (the original's ``proxystore.stream`` API).

    Args:
        publisher: the broker's publisher (see :mod:`warpstore.stream.shims`).
        stores: topic -> Store holding that topic's objects; the key ``None``
            is the default for other topics. A topic with no store sends each
            object inside its event (JSON values and bytes only).
        aggregator: turns each batch of ``batch_size`` objects into one
            object (metadata dicts are merged) before it is stored.
        batch_size: objects buffered per topic before one flush: one
            ``put_batch`` and one message for the whole batch.
        default_store: the store for topics not in ``stores`` (same as
            ``stores[None]``).
        filter_: called with each object's metadata; ``True`` drops it.
        keep: called with each object's metadata; ``False`` drops it.

    Not thread-safe: use one producer per thread.
    """

    def __init__(
        self,
        publisher: Publisher,
        stores: Mapping[str | None, Store[Any] | None] | None = None,
        *,
        aggregator: Callable[[list[T]], T] | None = None,
        batch_size: int = 1,
        default_store: Store[Any] | None = None,
        filter_: Filter | None = None,
        keep: Filter | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.publisher = publisher
        self._stores: dict[str | None, Store[Any] | None] = dict(stores or {})
        if default_store is not None:
            self._stores[None] = default_store
        self._aggregator = aggregator
        self._batch_size = batch_size
        self._filter = filter_
        self._keep: Filter = keep if keep is not None else NullFilter()
        self._buffers: dict[str, _TopicBuffer[T]] = {}


    def _buffer(self, topic: str) -> _TopicBuffer[T]:
        buf = self._buffers.get(topic)
        if buf is None:
            buf = self._buffers[topic] = _TopicBuffer()
        return buf

    def _store(self, topic: str) -> Store[Any] | None:
        if topic in self._stores:
            return self._stores[topic]
        return self._stores.get(None)

    def send(
        self,
        topic: str,
        obj: T,
        *,
        evict: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Queue ``obj`` for ``topic``; a full batch is flushed at once.

        Args:
            evict: the consumer evicts the object once it has read it (set
                ``False`` when several consumers read the same object; then
                you evict it yourself).
            metadata: JSON-able dict sent with the event, seen by filters.

        Raises:
            TopicClosedError: the topic was closed by :meth:`close_topics`.
        """
        buf = self._buffer(topic)
        if buf.closed:
            raise TopicClosedError(f"topic {topic!r} has been closed by this producer")
        metadata = {} if metadata is None else metadata
        if self._filter is not None and self._filter(metadata):
            return
        if not self._keep(metadata):
            return
        buf.objects.append(_Buffered(obj, evict, metadata))
        if len(buf.objects) >= self._batch_size:
            self.flush_topic(topic)

    def flush_topic(self, topic: str) -> None:
        """Store the topic's buffered objects and publish one batch event for them."""
        buf = self._buffer(topic)
        objects, buf.objects = buf.objects, []
        send_eos = buf.closed and not buf.end_of_stream_sent
        if not objects and not send_eos:
            return
        if self._aggregator is not None and objects:
            merged: dict[str, Any] = {}
            for item in objects:
                merged.update(item.metadata)
            objects = [
                _Buffered(
                    self._aggregator([item.obj for item in objects]),
                    any(item.evict for item in objects),
                    merged,
                )
            ]
        events: list[Event] = []
        store = self._store(topic)
        if objects and store is not None:
            keys = store.put_batch([item.obj for item in objects])
            config = store.config()
            events.extend(
                NewObjectKeyEvent.from_key(
                    key, evict=item.evict, metadata=item.metadata, store_config=config, topic=topic
                )
                for key, item in zip(keys, objects, strict=True)
            )
        else:
            events.extend(NewObjectEvent(topic, item.obj, item.metadata) for item in objects)
        if send_eos:
            events.append(EndOfStreamEvent(topic))
        message = event_to_bytes(EventBatch(topic, events))
        self.publisher.send(topic, message)
        if send_eos:
            buf.end_of_stream_sent = True

    def flush(self) -> None:
        """Flush every topic's buffer."""
        for topic in list(self._buffers):
            self.flush_topic(topic)

    def close_topics(self, *topics: str) -> None:
        """Flush each topic and send its end-of-stream event.

        Consumers read everything sent before it, then stop (``StopIteration``).
        Closing a topic twice sends one end-of-stream event.
        """
        for topic in topics:
            self._buffer(topic).closed = True
            self.flush_topic(topic)

    def close(
        self,
        *,
        topics: Iterable[str] = (),
        publisher: bool = True,
        stores: bool = False,
    ) -> None:
        """Close ``topics`` (see :meth:`close_topics`), then the publisher and maybe the stores.

        Objects still buffered in a partial batch of a topic not named in
        ``topics`` are lost: call :meth:`flush` first to keep them.
        """
        self.close_topics(*topics)
        if stores:
            seen: set[int] = set()
            for store in self._stores.values():
                if store is not None and id(store) not in seen:
                    seen.add(id(store))
                    store.close()
        if publisher:
            self.publisher.close()
