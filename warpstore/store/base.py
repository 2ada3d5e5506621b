"""The Store: serialization, caching and proxies over any connector."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from warpstore._closing import Closing
from warpstore.connectors.protocols import Connector, connector_path
from warpstore.proxy import Proxy, ProxyLocker
from warpstore.serialize import Deserializer, Serializer, deserialize, serialize
from warpstore.store.cache import LRUCache
from warpstore.store.config import ConnectorConfig, StoreConfig
from warpstore.store.exceptions import NonProxiableTypeError
from warpstore.store.factory import _MISSING, PollingStoreFactory, StoreFactory
from warpstore.store.metrics import StoreMetrics
from warpstore.store.registry import _register_implicitly, register_store, unregister_store

if TYPE_CHECKING:
    from warpstore.store.future import Future
    from warpstore.store.lifetimes import ContextLifetime
    from warpstore.store.ref import OwnedProxy

__all__ = ["Store"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
KeyT = TypeVar("KeyT")

# Objects that are returned as they are, never proxied: a proxy of None or of
# a bool cannot behave like it (``x is None`` and ``if x`` test the proxy).
# The same two types as the original; numbers and strings are proxied.
# Neither can be subclassed, so an exact type test suffices, and it never
# resolves a proxy passed in (isinstance would ask the proxy's target).
_NON_PROXIABLE_TYPES: tuple[type, ...] = (bool, type(None))


def _nonproxiable(obj: Any) -> bool:
    return type(obj) in _NON_PROXIABLE_TYPES


_kwargs_cache: dict[tuple[type, str], tuple[frozenset[str], bool]] = {}
_kwargs_lock = threading.Lock()


def _accepted_kwargs(connector: Any, method: str) -> tuple[frozenset[str], bool]:
    """Keyword names a connector method takes, and whether it takes ``**kwargs``."""
    cache_key = (type(connector), method)
    with _kwargs_lock:
        found = _kwargs_cache.get(cache_key)
    if found is None:
        try:
            params = inspect.signature(getattr(connector, method)).parameters.values()
        except (TypeError, ValueError):  # no signature: let the connector decide
            found = (frozenset(), True)
        else:
            names = frozenset(
                p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            )
            found = (names - {"obj", "objs"}, any(p.kind is p.VAR_KEYWORD for p in params))
        with _kwargs_lock:
            _kwargs_cache[cache_key] = found
    return found


class Store(Closing, Generic[KeyT]):
    """High-level object store: put/get Python objects and hand out proxies.

    The store never knows which connector it talks to: anything implementing
    :class:`~warpstore.connectors.protocols.Connector` works.

    Args:
        name: unique name in a process; proxies find their store by it.
        connector: where the bytes go.
        serializer: replaces :func:`warpstore.serialize.serialize` (it travels
            inside proxies: use an importable function, or rely on
            cloudpickle wherever proxies are cloudpickled).
        deserializer: replaces :func:`warpstore.serialize.deserialize`.
        cache_size: how many deserialized objects to keep (0 disables).
        metrics: record count, bytes and time of every operation.
        populate_target: default of the proxy methods' ``populate_target``:
            proxies made from a local object start resolved with that object,
            so the producer never re-fetches what it already has.
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
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
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
        self._implicit_registration = False
        self._closed = False
        self._config: StoreConfig | None = None
        if register:
            register_store(self)

    def __repr__(self) -> str:
        return f"Store(name={self.name!r}, connector={self.connector!r})"


    # -- configuration -----------------------------------------------------

    def config(self) -> StoreConfig:
        """A :class:`~warpstore.store.config.StoreConfig` that rebuilds this store anywhere.

        It is also a read-only mapping of its fields (``config["name"]``).
        """
        if self._config is None:
            self._config = StoreConfig(
                name=self.name,
                connector=ConnectorConfig(
                    kind=connector_path(self.connector), options=self.connector.config()
                ),
                serializer=self.serializer,
                deserializer=self.deserializer,
                cache_size=self.cache.maxsize,
                metrics=self.metrics is not None,
                populate_target=self.populate_target,
                auto_register=self._registered and not self._implicit_registration,
            )
        return self._config

    @classmethod
    def from_config(cls, config: StoreConfig | Mapping[str, Any]) -> Store[Any]:
        """Build a store (and a fresh connector) from :meth:`config`'s output.

        Also accepts a config read from TOML (:meth:`StoreConfig.from_toml`)
        or its dict form. The store is registered if ``auto_register`` is set.
        """
        cfg = StoreConfig.from_mapping(config)
        return cls(
            cfg.name,
            cfg.connector.get_connector(),
            serializer=cfg.serializer,
            deserializer=cfg.deserializer,
            cache_size=cfg.cache_size,
            metrics=cfg.metrics,
            populate_target=cfg.populate_target,
            register=cfg.auto_register,
        )

    @classmethod
    def from_manifest(cls, path: str | None = None) -> Store[Any]:
        """The Store of a `warpstore launch` job (default: ``$WARPSTORE_MANIFEST``)."""
        from warpstore.hpc.task import store_from_manifest

        return store_from_manifest(path)

    def close(self, *args: Any, **kwargs: Any) -> None:
        """Close the connector (arguments are passed on to it) and unregister."""
        if self._registered:
            from warpstore.store.registry import _mark_closed, get_store

            if get_store(self.name) is self:
                unregister_store(self)
                _mark_closed(self)
            self._registered = False
        if not self._closed:
            self._closed = True
            self.cache.clear()
            self.connector.close(*args, **kwargs)

    # -- timing --------------------------------------------------------------

    def _record(self, op: str, start: float, nbytes: int = 0, count: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.record(op, time.perf_counter() - start, nbytes, count)

    def _check_kwargs(self, caller: str, method: str, kwargs: Mapping[str, Any]) -> None:
        # A misspelt option must name the call the user made, not a connector's put.
        if not kwargs:
            return
        names, var = _accepted_kwargs(self.connector, method)
        if var:
            return
        for name in kwargs:
            if name not in names:
                raise TypeError(
                    f"Store.{caller}() got an unexpected keyword argument {name!r} "
                    f"(nor does {type(self.connector).__name__}.{method}() take it)"
                )

    # -- objects -------------------------------------------------------------

    def serialize(self, obj: Any, serializer: Serializer | None = None) -> Any:
        start = time.perf_counter()
        data = (serializer or self._serialize)(obj)
        self._record("serialize", start, memoryview(data).nbytes)
        return data

    def deserialize(self, data: Any, deserializer: Deserializer | None = None) -> Any:
        start = time.perf_counter()
        obj = (deserializer or self._deserialize)(data)
        self._record("deserialize", start, memoryview(data).nbytes)
        return obj

    def _put(self, caller: str, obj: Any, serializer: Serializer | None, kwargs: Any) -> KeyT:
        self._check_kwargs(caller, "put", kwargs)
        put_into = getattr(self.connector, "put_into", None)
        if put_into is not None and serializer is None and self.serializer is None and not kwargs:
            # The connector hands out the buffer (a shared-memory segment): the
            # object is serialized straight into it, never into a temporary.
            sizes: list[int] = []

            def write(allocate: Any) -> Any:
                begin = time.perf_counter()
                data = serialize(obj, allocate)
                sizes.append(memoryview(data).nbytes)
                self._record("serialize", begin, sizes[0])
                return data

            begin_put = time.perf_counter()
            new_key: KeyT = put_into(write)
            self._record("put", begin_put, sizes[0] if sizes else 0)  # includes the serialize
            return new_key
        data = self.serialize(obj, serializer)
        start = time.perf_counter()
        key = self.connector.put(data, **kwargs)
        self._record("put", start, memoryview(data).nbytes)
        return key

    def _put_batch(
        self, caller: str, objs: Sequence[Any], serializer: Serializer | None, kwargs: Any
    ) -> list[KeyT]:
        self._check_kwargs(caller, "put_batch", kwargs)
        datas = [self.serialize(o, serializer) for o in objs]
        start = time.perf_counter()
        keys = self.connector.put_batch(datas, **kwargs)
        self._record("put_batch", start, sum(memoryview(d).nbytes for d in datas), len(datas))
        return keys

    def put(self, obj: Any, *, serializer: Serializer | None = None, **kwargs: Any) -> KeyT:
        """Serialize and store ``obj``; return its key.

        Args:
            serializer: used instead of the store's serializer for this object.
            kwargs: passed to the connector's ``put`` (e.g. ``subset_tags``
                for a :class:`~warpstore.connectors.multi.MultiConnector`).
        """
        return self._put("put", obj, serializer, kwargs)

    def put_batch(
        self, objs: Sequence[Any], *, serializer: Serializer | None = None, **kwargs: Any
    ) -> list[KeyT]:
        """Store many objects in one connector round trip where it allows."""
        return self._put_batch("put_batch", objs, serializer, kwargs)

    def _get(self, key: KeyT, default: Any, deserializer: Deserializer | None = None) -> Any:
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
        obj = self.deserialize(data, deserializer)
        self.cache.set(key, obj)
        return obj

    def get(
        self, key: KeyT, *, deserializer: Deserializer | None = None, default: Any = None
    ) -> Any:
        """Return the object stored under ``key``, or ``default`` if there is none."""
        return self._get(key, default, deserializer)

    def _set(self, key: KeyT, obj: Any, *, serializer: Serializer | None = None) -> None:
        """Store ``obj`` under an existing or reserved key (futures, ``update()``).

        Raises:
            NotImplementedError: the connector cannot write to a chosen key
                (it is not a :class:`~warpstore.connectors.protocols.DeferrableConnector`).
        """
        setter = getattr(self.connector, "set", None)
        if setter is None:
            raise NotImplementedError(
                f"{type(self.connector).__name__} cannot store an object under a chosen key "
                "(it has no set()): futures and update() need a DeferrableConnector"
            )
        data = self.serialize(obj, serializer)
        self.cache.evict(key)
        start = time.perf_counter()
        setter(key, data)
        self._record("set", start, memoryview(data).nbytes)

    def is_cached(self, key: KeyT) -> bool:
        """Tell whether ``key``'s object is in this process's cache (nothing is fetched)."""
        return key in self.cache

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
        if not self._registered:
            _register_implicitly(self)

    def factory(
        self, key: KeyT, *, evict: bool = False, deserializer: Deserializer | None = None
    ) -> StoreFactory[Any]:
        """The factory a proxy of ``key`` resolves with."""
        return StoreFactory(key, self.config(), evict=evict, deserializer=deserializer)

    def _make_proxy(
        self,
        key: KeyT,
        obj: Any,
        *,
        evict: bool = False,
        deserializer: Deserializer | None = None,
        populate_target: bool | None = None,
        proxy_type: type[Proxy[Any]] = Proxy,
    ) -> Proxy[Any]:
        factory = self.factory(key, evict=evict, deserializer=deserializer)
        if not (self.populate_target if populate_target is None else populate_target):
            return proxy_type(factory)
        # As the original: with populate_target the proxy starts resolved and
        # carries the object's class and hash, so a copy unpickled elsewhere
        # answers isinstance/hash/singledispatch without fetching.
        return proxy_type(factory, cache_defaults=True, target=obj)

    @staticmethod
    def _check_lifetime(evict: bool, lifetime: ContextLifetime | None) -> None:
        if evict and lifetime is not None:
            raise ValueError(
                "evict=True and lifetime are exclusive: an object is evicted either by its "
                "first resolve or by its lifetime, not both"
            )

    def proxy(
        self,
        obj: T,
        *,
        evict: bool = False,
        lifetime: ContextLifetime | None = None,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        populate_target: bool | None = None,
        skip_nonproxiable: bool = False,
        **kwargs: Any,
    ) -> Proxy[T]:
        """Store ``obj`` and return a proxy of it.

        Args:
            evict: evict the object when the proxy is first resolved (for
                objects with exactly one consumer).
            lifetime: evict the object when this lifetime ends.
            serializer: used instead of the store's serializer for ``obj``.
            deserializer: used instead of the store's deserializer by the proxy.
            populate_target: the returned proxy starts resolved with ``obj``
                (default: the store's ``populate_target``).
            skip_nonproxiable: return ``None``/``bool`` objects as they are
                instead of raising.
            kwargs: passed to the connector's ``put`` (routing tags).

        Raises:
            NonProxiableTypeError: ``obj`` is ``None`` or a ``bool`` and
                ``skip_nonproxiable`` is false.
            ValueError: both ``evict=True`` and a ``lifetime``.
        """
        if _nonproxiable(obj):
            if skip_nonproxiable:
                return obj  # type: ignore[return-value]
            raise NonProxiableTypeError(
                f"an object of type {type(obj).__name__} cannot be proxied "
                "(pass skip_nonproxiable=True to get it back as it is)"
            )
        self._check_lifetime(evict, lifetime)
        self._ensure_registered()
        key = self._put("proxy", obj, serializer, kwargs)
        if lifetime is not None:
            lifetime.add_key(key, store=self)
        return self._make_proxy(
            key, obj, evict=evict, deserializer=deserializer, populate_target=populate_target
        )

    def proxy_batch(
        self,
        objs: Sequence[T],
        *,
        evict: bool = False,
        lifetime: ContextLifetime | None = None,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        populate_target: bool | None = None,
        **kwargs: Any,
    ) -> list[Proxy[T]]:
        """Like :meth:`proxy` for many objects, with one batched put."""
        for obj in objs:
            if _nonproxiable(obj):
                raise NonProxiableTypeError(
                    f"an object of type {type(obj).__name__} cannot be proxied"
                )
        self._check_lifetime(evict, lifetime)
        self._ensure_registered()
        keys = self._put_batch("proxy_batch", objs, serializer, kwargs)
        if lifetime is not None:
            lifetime.add_key(*keys, store=self)
        return [
            self._make_proxy(
                k, o, evict=evict, deserializer=deserializer, populate_target=populate_target
            )
            for k, o in zip(keys, objs, strict=True)
        ]

    def proxy_from_key(
        self,
        key: KeyT,
        *,
        evict: bool = False,
        lifetime: ContextLifetime | None = None,
        deserializer: Deserializer | None = None,
    ) -> Proxy[Any]:
        """A proxy of an object already stored under ``key`` (nothing is fetched yet)."""
        self._check_lifetime(evict, lifetime)
        self._ensure_registered()
        if lifetime is not None:
            lifetime.add_key(key, store=self)
        return Proxy(self.factory(key, evict=evict, deserializer=deserializer))

    def locked_proxy(
        self,
        obj: T,
        *,
        evict: bool = False,
        lifetime: ContextLifetime | None = None,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        populate_target: bool | None = None,
        skip_nonproxiable: bool = False,
        **kwargs: Any,
    ) -> ProxyLocker[T]:
        """A proxy wrapped in a :class:`~warpstore.proxy.ProxyLocker` (same options as
        :meth:`proxy`; a skipped non-proxiable object is returned as it is)."""
        if _nonproxiable(obj) and skip_nonproxiable:
            return obj  # type: ignore[return-value]
        proxy = self.proxy(
            obj,
            evict=evict,
            lifetime=lifetime,
            serializer=serializer,
            deserializer=deserializer,
            populate_target=populate_target,
            **kwargs,
        )
        return ProxyLocker(proxy)

    def owned_proxy(
        self,
        obj: T,
        *,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        populate_target: bool | None = None,
        skip_nonproxiable: bool = False,
        **kwargs: Any,
    ) -> OwnedProxy[T]:
        """Store ``obj`` and return the :class:`~warpstore.store.ref.OwnedProxy` that owns it:
        the object is evicted when that proxy is garbage collected.

        Raises:
            NonProxiableTypeError: as :meth:`proxy`.
        """
        from warpstore.store.ref import OwnedProxy

        if _nonproxiable(obj):
            if skip_nonproxiable:
                return obj  # type: ignore[return-value]
            raise NonProxiableTypeError(
                f"an object of type {type(obj).__name__} cannot be proxied "
                "(pass skip_nonproxiable=True to get it back as it is)"
            )
        self._ensure_registered()
        key = self._put("owned_proxy", obj, serializer, kwargs)
        owned = self._make_proxy(
            key,
            obj,
            deserializer=deserializer,
            populate_target=populate_target,
            proxy_type=OwnedProxy,
        )
        return cast("OwnedProxy[T]", owned)

    def future(
        self,
        *,
        evict: bool = False,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        polling_interval: float = 1,
        polling_backoff_factor: float = 1,
        polling_interval_limit: float | None = None,
        polling_timeout: float | None = None,
    ) -> Future[Any]:
        """A :class:`~warpstore.store.future.Future` whose proxy resolves once a result is set.

        The future (or only its :meth:`~warpstore.store.future.Future.proxy`)
        can be sent to other processes: any of them may set the result, any
        may wait on it; waiting polls the connector.

        Raises:
            NotImplementedError: the connector cannot reserve keys (it is not
                a :class:`~warpstore.connectors.protocols.DeferrableConnector`).
        """
        from warpstore.store.factory import _FutureDeserializer
        from warpstore.store.future import Future

        new_key: Callable[[], KeyT] | None = getattr(self.connector, "new_key", None)
        if new_key is None or not hasattr(self.connector, "set"):
            raise NotImplementedError(
                f"{type(self.connector).__name__} cannot reserve a key before the data "
                "exists (it has no new_key()/set()): Store.future() needs a DeferrableConnector"
            )
        self._ensure_registered()
        factory: PollingStoreFactory[Any] = PollingStoreFactory(
            new_key(),
            self.config(),
            deserializer=_FutureDeserializer(deserializer or self.deserializer),
            evict=evict,
            polling_interval=polling_interval,
            polling_backoff_factor=polling_backoff_factor,
            polling_interval_limit=polling_interval_limit,
            polling_timeout=polling_timeout,
        )
        return Future(factory, serializer=serializer)
