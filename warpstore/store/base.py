"""The Store: serialization, caching and proxies over any connector."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from warpstore.connectors.protocols import Connector, connector_from_path, connector_path
from warpstore.proxy import Proxy, ProxyLocker
from warpstore.serialize import Deserializer, Serializer, deserialize, serialize
from warpstore.store.cache import LRUCache
from warpstore.store.factory import _MISSING, StoreFactory
from warpstore.store.lifetimes import ContextLifetime
from warpstore.store.metrics import StoreMetrics
from warpstore.store.registry import get_store, register_store, unregister_store

__all__ = ["Store"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
KeyT = TypeVar("KeyT")


def _callable_path(fn: Callable[..., Any] | None) -> str | None:
    if fn is None:
        return None
    return f"{fn.__module__}:{fn.__qualname__}"


def _callable_from_path(path: str | None) -> Any:
    if path is None:
        return None
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class Store(Generic[KeyT]):
    """High-level object store: put/get Python objects and hand out proxies.

    The store never knows which connector it talks to: anything implementing
    :class:`~warpstore.connectors.protocols.Connector` works.

    Args:
        name: unique name in a process; proxies find their store by it.
        connector: where the bytes go.
        serializer: replaces :func:`warpstore.serialize.serialize`. Must be an
            importable function (it is named, not pickled, in proxies).
        deserializer: replaces :func:`warpstore.serialize.deserialize`.
        cache_size: how many deserialized objects to keep (0 disables).
        metrics: record count, bytes and time of every operation.
        populate_target: proxies made from a local object start resolved with
            that object, so the producer never re-fetches what it already has.
        register: register this store by name on creation.
    """

    def __init__(
        self,
        name: str,
        connector: Connector[KeyT],
        *,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        cache_size: int = 16,
        metrics: bool = False,
        populate_target: bool = True,
        register: bool = False,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("a Store needs a non-empty name")
        self.name = name
        self.connector = connector
        self.serializer = serializer
        self.deserializer = deserializer
        self.cache = LRUCache[Any](cache_size)
        self.metrics: StoreMetrics | None = StoreMetrics() if metrics else None
        self.populate_target = populate_target
        self._serialize: Serializer = serializer or serialize
        self._deserialize: Deserializer = deserializer or deserialize
        self._registered = False
        self._closed = False
        self._config: dict[str, Any] | None = None
        if register:
            register_store(self)
            self._registered = True

    def __repr__(self) -> str:
        return f"Store(name={self.name!r}, connector={self.connector!r})"

    def __enter__(self) -> Store[KeyT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- configuration -----------------------------------------------------

    def config(self) -> dict[str, Any]:
        """A plain dict from which :meth:`from_config` rebuilds this store anywhere."""
        if self._config is None:
            self._config = {
                "name": self.name,
                "connector_type": connector_path(self.connector),
                "connector_config": self.connector.config(),
                "serializer": _callable_path(self.serializer),
                "deserializer": _callable_path(self.deserializer),
                "cache_size": self.cache.maxsize,
                "metrics": self.metrics is not None,
                "populate_target": self.populate_target,
            }
        return self._config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Store[Any]:
        """Rebuild a store (and a fresh connector) from :meth:`config`'s output."""
        connector = connector_from_path(config["connector_type"], config["connector_config"])
        return cls(
            config["name"],
            connector,
            serializer=_callable_from_path(config.get("serializer")),
            deserializer=_callable_from_path(config.get("deserializer")),
            cache_size=config.get("cache_size", 16),
            metrics=config.get("metrics", False),
            populate_target=config.get("populate_target", True),
            register=config.get("register", False),
        )

    @classmethod
    def from_manifest(cls, path: str | None = None) -> Store[Any]:
        """The Store of a `warpstore launch` job (default: ``$WARPSTORE_MANIFEST``)."""
        from warpstore.hpc.task import store_from_manifest

        return store_from_manifest(path)

    def close(self, *args: Any, **kwargs: Any) -> None:
        """Close the connector (arguments are passed on to it) and unregister."""
        if self._registered:
            unregister_store(self.name)
            self._registered = False
        if not self._closed:
            self._closed = True
            self.cache.clear()
            self.connector.close(*args, **kwargs)

    # -- timing --------------------------------------------------------------

    def _record(self, op: str, start: float, nbytes: int = 0, count: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.record(op, time.perf_counter() - start, nbytes, count)

    # -- objects -------------------------------------------------------------

    def serialize(self, obj: Any) -> Any:
        start = time.perf_counter()
        data = self._serialize(obj)
        self._record("serialize", start, memoryview(data).nbytes)
        return data

    def deserialize(self, data: Any) -> Any:
        start = time.perf_counter()
        obj = self._deserialize(data)
        self._record("deserialize", start, memoryview(data).nbytes)
        return obj

    def put(self, obj: Any, **connector_kwargs: Any) -> KeyT:
        """Serialize and store ``obj``; return its key.

        ``connector_kwargs`` go to the connector's ``put`` (e.g. ``subset_tags``
        for a :class:`~warpstore.connectors.multi.MultiConnector`).
        """
        put_into = getattr(self.connector, "put_into", None)
        if put_into is not None and self.serializer is None and not connector_kwargs:
            # The connector hands out the buffer (a shared-memory segment): the
            # object is serialized straight into it, never into a temporary.
            sizes: list[int] = []

            def write(allocate: Any) -> Any:
                begin = time.perf_counter()
                data = serialize(obj, allocate)
                sizes.append(memoryview(data).nbytes)
                self._record("serialize", begin, sizes[0])
                return data

            start = time.perf_counter()
            key: KeyT = put_into(write)
            self._record("put", start, sizes[0] if sizes else 0)  # includes the serialize
            return key
        data = self.serialize(obj)
        start = time.perf_counter()
        key = self.connector.put(data, **connector_kwargs)
        self._record("put", start, memoryview(data).nbytes)
        return key

    def put_batch(self, objs: Sequence[Any], **connector_kwargs: Any) -> list[KeyT]:
        """Store many objects in one connector round trip where it allows."""
        datas = [self.serialize(o) for o in objs]
        start = time.perf_counter()
        keys = self.connector.put_batch(datas, **connector_kwargs)
        self._record("put_batch", start, sum(memoryview(d).nbytes for d in datas), len(datas))
        return keys

    def _get(self, key: KeyT, default: Any) -> Any:
        start = time.perf_counter()
        cached = self.cache.get(key, _MISSING)
        if cached is not _MISSING:
            self._record("cache_hit", start)
            return cached
        data = self.connector.get(key)
        if data is None:
            self._record("get_missing", start)
            return default
        self._record("get", start, memoryview(data).nbytes)
        obj = self.deserialize(data)
        self.cache.set(key, obj)
        return obj

    def get(self, key: KeyT, default: Any = None) -> Any:
        """Return the object stored under ``key``, or ``default`` if there is none."""
        return self._get(key, default)

    def exists(self, key: KeyT) -> bool:
        """Ask the connector (not the cache: another process may have evicted it)."""
        start = time.perf_counter()
        found = self.connector.exists(key)
        self._record("exists", start)
        return found

    def evict(self, key: KeyT) -> None:
        """Remove ``key`` from the cache and the connector."""
        self.cache.evict(key)
        start = time.perf_counter()
        self.connector.evict(key)
        self._record("evict", start)

    # -- proxies -------------------------------------------------------------

    def _ensure_registered(self) -> None:
        # A proxy resolved in this process must find this very store (and its
        # cache) rather than build a second one from the config it carries.
        if not self._registered and get_store(self.name) is None:
            register_store(self)
            self._registered = True

    def factory(self, key: KeyT, *, evict: bool = False) -> StoreFactory[Any]:
        return StoreFactory(key, self.config(), evict=evict)

    def _make_proxy(self, key: KeyT, obj: Any, evict: bool) -> Proxy[Any]:
        proxy: Proxy[Any] = Proxy(self.factory(key, evict=evict))
        if self.populate_target:
            proxy.__wrapped__ = obj
        return proxy

    def proxy(
        self,
        obj: T,
        *,
        evict: bool = False,
        lifetime: ContextLifetime | None = None,
        **connector_kwargs: Any,
    ) -> Proxy[T]:
        """Store ``obj`` and return a proxy of it.

        Args:
            evict: evict the object when the proxy is first resolved (for
                objects with exactly one consumer).
            lifetime: evict the object when this lifetime ends.
            connector_kwargs: passed to the connector's ``put`` (routing tags).
        """
        self._ensure_registered()
        key = self.put(obj, **connector_kwargs)
        if lifetime is not None:
            lifetime.add_key(key)
        return self._make_proxy(key, obj, evict)

    def proxy_batch(
        self,
        objs: Sequence[T],
        *,
        evict: bool = False,
        lifetime: ContextLifetime | None = None,
        **connector_kwargs: Any,
    ) -> list[Proxy[T]]:
        """Like :meth:`proxy` for many objects, with one batched put."""
        self._ensure_registered()
        keys = self.put_batch(objs, **connector_kwargs)
        if lifetime is not None:
            lifetime.add_key(*keys)
        return [self._make_proxy(k, o, evict) for k, o in zip(keys, objs, strict=True)]

    def proxy_from_key(self, key: KeyT, *, evict: bool = False) -> Proxy[Any]:
        """A proxy of an object already stored under ``key`` (nothing is fetched yet)."""
        self._ensure_registered()
        return Proxy(self.factory(key, evict=evict))

    def locked_proxy(
        self,
        obj: T,
        *,
        evict: bool = False,
        lifetime: ContextLifetime | None = None,
    ) -> ProxyLocker[T]:
        """A proxy wrapped in a :class:`~warpstore.proxy.ProxyLocker`."""
        return ProxyLocker(self.proxy(obj, evict=evict, lifetime=lifetime))
