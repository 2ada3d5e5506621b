"""Redis connector (also KeyDB, Valkey and anything speaking RESP).

Batch operations are pipelined: one round trip for many keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from warpstore.exceptions import ConnectorConnectionError, ConnectorError
from warpstore.serialize import BytesLike

__all__ = ["RedisConnector", "RedisKey"]


class RedisKey(NamedTuple):
    """Key of an object held by a :class:`RedisConnector`."""

    redis_key: str


class RedisConnector:
    """Stores objects in a Redis server.

    ``hostname`` may be a plain host name (with ``port``) or a URL
    (``redis://``, ``rediss://``, ``unix://``) as accepted by redis-py.

    Args:
        timeout: seconds a reply may take (redis-py's ``socket_timeout``): a paused
            or unreachable Redis is an error after this long, never a hang.
            ``None`` waits forever, as redis-py does by default.
        connect_timeout: seconds to establish a connection
            (``socket_connect_timeout``).
        kwargs: any other redis-py ``Redis`` argument (``password``, ``ssl``...).
    """

    def __init__(
        self,
        hostname: str,
        port: int | None = None,
        *,
        clear: bool = False,
        prefix: str = "warpstore:",
        timeout: float | None = 30.0,
        connect_timeout: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        try:
            import redis
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "RedisConnector needs redis-py: pip install 'warpstore[redis]'"
            ) from e
        self.hostname = hostname
        self.port = port
        self.clear = clear
        self.prefix = prefix
        self.timeout = kwargs.pop("socket_timeout", timeout)
        self.connect_timeout = kwargs.pop("socket_connect_timeout", connect_timeout)
        self.kwargs = kwargs
        kwargs = {
            **kwargs,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        if "retry" not in kwargs:
            # redis-py retries timeouts 3 times by default, so a paused Redis took 4x (plus
            # back-off) the stated timeout: retry dropped connections only.
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.retry import Retry

            kwargs["retry"] = Retry(
                ExponentialWithJitterBackoff(base=0.01, cap=1.0),
                3,
                supported_errors=(redis.exceptions.ConnectionError,),
            )
        self._redis_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._timeout_error: type[BaseException] = redis.exceptions.TimeoutError
        self._error_base: type[BaseException] = redis.exceptions.RedisError
        if "://" in hostname:
            if port is not None:
                raise ValueError("give either a redis:// URL or a hostname and port, not both")
            self._client = redis.Redis.from_url(hostname, **kwargs)
            self.address = hostname
        else:
            if port is None:
                port = 6379
                self.port = port
            self._client = redis.Redis(host=hostname, port=port, **kwargs)
            self.address = f"{hostname}:{port}"

    def __repr__(self) -> str:
        return f"RedisConnector({self.address!r})"

    def _call(self, what: str, key: Any, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._timeout_error as e:
            raise ConnectorConnectionError(
                f"no reply from Redis at {self.address} to {what} {key} within "
                f"{self.timeout} s (the connector's timeout; connect timeout "
                f"{self.connect_timeout} s): is it running, paused or overloaded? ({e})"
            ) from e
        except self._redis_errors as e:
            raise ConnectorConnectionError(
                f"cannot reach Redis at {self.address} to {what} {key}: {e}"
            ) from e
        except self._error_base as e:
            raise ConnectorError(f"Redis at {self.address} failed to {what} {key}: {e}") from e

    def close(self, clear: bool | None = None) -> None:
        """Close the connection pool; with ``clear``, delete this store's keys first."""
        if self.clear if clear is None else clear:
            keys = list(self._client.scan_iter(match=f"{self.prefix}*"))
            if keys:
                self._call("clear", f"{len(keys)} keys", self._client.delete, *keys)
        self._client.close()

    def config(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "port": self.port,
            "clear": self.clear,
            "prefix": self.prefix,
            "timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            **self.kwargs,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RedisConnector:
        return cls(**config)

    def evict(self, key: RedisKey) -> None:
        self._call("evict", key.redis_key, self._client.delete, key.redis_key)

    def exists(self, key: RedisKey) -> bool:
        return bool(self._call("check", key.redis_key, self._client.exists, key.redis_key))

    def get(self, key: RedisKey) -> BytesLike | None:
        result: BytesLike | None = self._call("get", key.redis_key, self._client.get, key.redis_key)
        return result

    def get_batch(self, keys: Sequence[RedisKey]) -> list[BytesLike | None]:
        if not keys:
            return []
        names = [k.redis_key for k in keys]
        result: list[BytesLike | None] = self._call(
            "get", f"{len(names)} keys", self._client.mget, names
        )
        return result

    def new_key(self, obj: BytesLike | None = None) -> RedisKey:
        return RedisKey(f"{self.prefix}{uuid.uuid4().hex}")

    def put(self, obj: BytesLike) -> RedisKey:
        key = self.new_key()
        self.set(key, obj)
        return key

    def put_batch(self, objs: Sequence[BytesLike]) -> list[RedisKey]:
        keys = [self.new_key() for _ in objs]
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key, obj in zip(keys, objs, strict=True):
            pipe.set(key.redis_key, obj)
        self._call("put", f"{len(keys)} keys", pipe.execute)
        return keys

    def set(self, key: RedisKey, obj: BytesLike) -> None:
        self._call("put", key.redis_key, self._client.set, key.redis_key, obj)
