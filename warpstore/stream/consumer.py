"""StreamConsumer: iterate a topic's events and hand out proxies (or objects)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Generator
from typing import Any, Generic, TypeVar, cast

from typing_extensions import Self

from warpstore._closing import Closing
from warpstore.proxy import Proxy
from warpstore.store import Store
from warpstore.store.registry import get_or_create_store
from warpstore.stream.events import (
    EndOfStreamEvent,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
    bytes_to_event,
)
from warpstore.stream.exceptions import EventDecodeError
from warpstore.stream.filters import NullFilter
from warpstore.stream.protocols import Filter, Subscriber

__all__ = ["StreamConsumer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MISSING: Any = object()
_store_lock = threading.Lock()


class StreamConsumer(Closing, Generic[T]):
    """Iterates the objects of a stream until its end-of-stream event.

    ``for p in consumer`` yields a :class:`~warpstore.proxy.Proxy` per object
    stored by the producer (the object itself for topics without a store);
    nothing is fetched until the proxy is used. The stores named by the
    events are built (from the config in the event) on first use and
    remembered.

    Args:
        subscriber: the broker's subscriber (see :mod:`warpstore.stream.shims`).
        filter_: called with each event's metadata; ``True`` drops the event.
        keep: called with each event's metadata; ``False`` drops the event.
            A dropped object the producer sent with ``evict=True`` is evicted.
        allowed_stores: names of the stores events may point to. An event
            names a store by its config (connector class and options, e.g. a
            Redis host): on a broker that others can write to (ZeroMQ
            PUB/SUB, a Redis without a password), set this so a forged event
            cannot make the consumer fetch and deserialize data from a
            server of the forger's choosing. Events naming other stores are
            logged and skipped. Default: any store from a trusted module.

    A message that is not a valid event is logged and skipped: whatever else
    writes to the broker cannot crash or steer the consumer.
    """

    def __init__(
        self,
        subscriber: Subscriber,
        *,
        filter_: Filter | None = None,
        keep: Filter | None = None,
        allowed_stores: Collection[str] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self._allowed = None if allowed_stores is None else frozenset(allowed_stores)
        self._filter = filter_
        self._keep: Filter = keep if keep is not None else NullFilter()
        self._stores: dict[str, Store[Any]] = {}
        self._pending: list[Any] = []
        self._ended = False


    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Any:
        return self.next()

    def close(self, *, stores: bool = False, subscriber: bool = True) -> None:
        """Close the subscriber and, with ``stores=True``, the stores this consumer built."""
        if stores:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
        if subscriber:
            self.subscriber.close()

    # -- events ----------------------------------------------------------------

    def _get_store(self, event: NewObjectKeyEvent) -> Store[Any]:
        name = event.store_config["name"]
        with _store_lock:
            store = self._stores.get(name)
            if store is None:
                store = self._stores[name] = get_or_create_store(event.store_config)
            return store

    def _next_batch(self) -> EventBatch:
        while True:
            message = next(self.subscriber)
            try:
                batch = bytes_to_event(message)
            except EventDecodeError as e:
                logger.warning("stream: skipped a message that is not a valid event: %s", e)
                continue
            if self._allowed is not None:
                for event in batch.events:
                    if isinstance(event, NewObjectKeyEvent):
                        name = event.store_config["name"]
                        if name not in self._allowed:
                            logger.warning(
                                "stream: skipped an event of topic %r naming store %r, which is "
                                "not in allowed_stores",
                                batch.topic,
                                name,
                            )
                batch.events = [
                    e
                    for e in batch.events
                    if not isinstance(e, NewObjectKeyEvent)
                    or e.store_config["name"] in self._allowed
                ]
            return batch

    def _next_event(self) -> NewObjectEvent | NewObjectKeyEvent:
        if self._ended:
            raise StopIteration
        while not self._pending:
            batch = self._next_batch()
            self._pending = list(reversed(batch.events))
        event = self._pending.pop()
        if isinstance(event, EndOfStreamEvent):
            self._ended = True
            self._pending.clear()
            raise StopIteration
        return cast("NewObjectEvent | NewObjectKeyEvent", event)

    def _wanted(self, metadata: dict[str, Any]) -> bool:
        if self._filter is not None and self._filter(metadata):
            return False
        return bool(self._keep(metadata))

    def _next_kept(self) -> NewObjectEvent | NewObjectKeyEvent:
        while True:
            event = self._next_event()
            if self._wanted(event.metadata):
                return event
            if isinstance(event, NewObjectKeyEvent) and event.evict:
                self._get_store(event).evict(event.key)

    # -- the original's iteration API --------------------------------------------

    def next_with_metadata(self) -> tuple[dict[str, Any], Any]:
        """The next event's metadata and a proxy of its object (or the inline object)."""
        event = self._next_kept()
        if isinstance(event, NewObjectEvent):
            return event.metadata, event.obj
        proxy: Proxy[T] = self._get_store(event).proxy_from_key(event.key, evict=event.evict)
        return event.metadata, proxy

    def next(self) -> Any:
        """A proxy of the next object; ``StopIteration`` at the end of the stream."""
        return self.next_with_metadata()[1]

    def next_object_with_metadata(self) -> tuple[dict[str, Any], T]:
        """The next event's metadata and its object, fetched now (and evicted if asked)."""
        event = self._next_kept()
        if isinstance(event, NewObjectEvent):
            return event.metadata, cast(T, event.obj)
        store = self._get_store(event)
        obj = store.get(event.key, default=_MISSING)
        if obj is _MISSING:
            raise ValueError(
                f"{store!r} has no object for key {event.key!r} of topic {event.topic!r} "
                "(evicted, or put to another store)"
            )
        if event.evict:
            store.evict(event.key)
        return event.metadata, cast(T, obj)

    def next_object(self) -> T:
        """The next object, fetched now; ``StopIteration`` at the end of the stream."""
        return self.next_object_with_metadata()[1]

    def iter_with_metadata(self) -> Generator[tuple[dict[str, Any], Any], None, None]:
        """Yield ``(metadata, proxy)`` pairs until the end of the stream."""
        while True:
            try:
                yield self.next_with_metadata()
            except StopIteration:
                return

    def iter_objects(self) -> Generator[T, None, None]:
        """Yield the objects themselves until the end of the stream."""
        while True:
            try:
                yield self.next_object()
            except StopIteration:
                return

    def iter_objects_with_metadata(self) -> Generator[tuple[dict[str, Any], T], None, None]:
        """Yield ``(metadata, object)`` pairs until the end of the stream."""
        while True:
            try:
                yield self.next_object_with_metadata()
            except StopIteration:
                return
