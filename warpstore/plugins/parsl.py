"""A Parsl serializer that passes large app arguments and results by proxy.

Parsl's own ``parsl.serialize.proxystore.ProxyStoreSerializer`` imports
``proxystore``; this is the same plug-in for warpstore, with the same
constructor (``store=``, ``should_proxy=``) plus a size ``threshold``::

    from parsl.serialize.facade import register_method_for_data
    from warpstore.plugins.parsl import ProxyStoreSerializer, register

    register(ProxyStoreSerializer(store=store, threshold=1_000_000))

:func:`register` puts the serializer first in Parsl's list of data
serializers (``register_method_for_data`` alone would leave it behind Parsl's
dill serializer, which accepts everything and so is always chosen first).
Serialization is a dill pickler that, for each object the policy selects
anywhere inside the arguments, stores the object and pickles a proxy
instead; the worker gets proxies and fetches each object only when the app
uses it. Proxies passed as arguments are never fetched to be re-sent.

Results: the message carries the store's config and the threshold (as JSON,
ahead of the pickle), so the worker, on its first task, registers the same
policy for what it sends back: a large result returns as a proxy.

Lifetimes: arguments are stored with ``evict=True`` (evicted when the worker
first resolves them; an argument the app never touches stays); results are
stored with ``evict=False`` because a result can be used by several later
apps: evict them yourself (``store.evict(get_key(p))``) or use a store whose
connector is cleared at the end of the workflow.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import dill
from parsl.serialize import facade
from parsl.serialize.base import SerializerBase

from warpstore.proxy import Proxy
from warpstore.store import Store
from warpstore.store.registry import get_or_create_store

__all__ = ["ProxyStoreSerializer", "WarpstoreSerializer", "register", "size_of"]

logger = logging.getLogger(__name__)

_worker_lock = threading.Lock()


def size_of(obj: Any) -> int:
    """Bytes of an object's data where that is known without serializing it, else 0.

    Buffers (numpy arrays and anything with ``nbytes``) and bytes (not str: the pickler
    also shows us module and attribute names);
    containers are not measured as a whole, the pickler visits their items.
    """
    if issubclass(type(obj), Proxy):
        return 0
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    nbytes = getattr(type(obj), "nbytes", None)
    if nbytes is not None:
        value = getattr(obj, "nbytes", 0)
        return value if isinstance(value, int) else 0
    return 0


class _ProxyingPickler(dill.Pickler):  # type: ignore[misc]
    """dill, except that objects chosen by the policy are stored and pickled as proxies."""

    def __init__(
        self, file: io.BytesIO, *, store: Store[Any], should_proxy: Callable[[Any], bool],
        evict: bool,
    ) -> None:
        super().__init__(file)
        self._store = store
        self._should_proxy = should_proxy
        self._evict = evict

    def reducer_override(self, obj: Any) -> Any:
        # type() first: a Proxy is pickled as itself (its factory), never fetched
        if issubclass(type(obj), Proxy) or not self._should_proxy(obj):
            return NotImplemented
        # The proxy carries the object's class and hash (not the object): the
        # receiving side's isinstance() checks (Parsl's DFK does one on every
        # result) answer without fetching.
        proxy = self._store.proxy(obj, evict=self._evict)
        return proxy.__reduce__()


class ProxyStoreSerializer(SerializerBase):
    """Parsl data serializer that proxies large objects through a warpstore Store.

    Args:
        store: where proxied objects go; it must be reachable from the workers.
        should_proxy: policy: ``True`` proxies the object (Parsl's name).
        threshold: shortcut policy: proxy buffers of at least this many bytes
            (see :func:`size_of`); it is also the policy the workers use for
            results. Give ``should_proxy``, ``threshold`` or both.
        evict: evict proxied arguments once the worker resolved them.

    Made with no arguments (as Parsl does on the worker to read a message),
    it only deserializes.
    """

    def __init__(
        self,
        *,
        store: Store[Any] | None = None,
        should_proxy: Callable[[Any], bool] | None = None,
        threshold: int | None = None,
        evict: bool = True,
    ) -> None:
        self._store = store
        self._threshold = threshold
        self._evict = evict
        if should_proxy is None and threshold is not None:
            should_proxy = self._over_threshold
        self._should_proxy = should_proxy

    @property
    def identifier(self) -> bytes:
        # the same on every process and for every instance: Parsl looks it up
        return b"warpstore.plugins.parsl ProxyStoreSerializer"

    def _over_threshold(self, obj: Any) -> bool:
        assert self._threshold is not None
        return size_of(obj) >= self._threshold

    def serialize(self, data: Any) -> bytes:
        if self._store is None or self._should_proxy is None:
            raise TypeError("this ProxyStoreSerializer has no store: it only deserializes")
        from warpstore.stream.events import store_config_to_wire

        head = {"store": store_config_to_wire(self._store.config()), "threshold": self._threshold}
        f = io.BytesIO()
        f.write(json.dumps(head, separators=(",", ":")).encode() + b"\n")
        _ProxyingPickler(
            f, store=self._store, should_proxy=self._should_proxy, evict=self._evict
        ).dump(data)
        return f.getvalue()

    def deserialize(self, payload: bytes) -> Any:
        head_line, _, body = bytes(payload).partition(b"\n")
        head = json.loads(head_line)
        if self._store is None and head.get("threshold") is not None:
            _adopt_policy(head)
        return dill.loads(body)


WarpstoreSerializer = ProxyStoreSerializer


def register(serializer: ProxyStoreSerializer) -> None:
    """Make ``serializer`` the first data serializer Parsl tries in this process."""
    others = {k: v for k, v in facade.methods_for_data.items() if k != serializer.identifier}
    facade.methods_for_data.clear()
    facade.methods_for_data[serializer.identifier] = serializer
    facade.methods_for_data.update(others)


def _adopt_policy(head: dict[str, Any]) -> None:
    """On a worker: send results back with the submitter's store and threshold."""
    with _worker_lock:
        current = facade.methods_for_data.get(ProxyStoreSerializer().identifier)
        if isinstance(current, ProxyStoreSerializer) and current._store is not None:
            return
        store = get_or_create_store(head["store"])
        register(ProxyStoreSerializer(store=store, threshold=int(head["threshold"]), evict=False))
        logger.info(
            "results above %s bytes go back through store %r", head["threshold"], store.name
        )
