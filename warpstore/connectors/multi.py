"""Routing between connectors by size, tags and host: one store, the best path per object.

``MultiConnector({name: (connector, Policy), ...})``: each ``put`` goes to the
highest-priority connector whose :class:`Policy` admits the object (its size,
the caller's tags, the host doing the put); the key records which connector
took it, so ``get``/``exists``/``evict`` go straight there, from any process:
the config carries every connector's own config, so a proxy resolves anywhere.

Typical HPC use (what :func:`launch_routing` builds for a launched job): small
objects through the node server, large ones to DAOS or a shared file system,
objects tagged for another site through an endpoint or Globus.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from warpstore.connectors.protocols import ConnectorMixin, connector_from_path, connector_path
from warpstore.exceptions import ConnectorError
from warpstore.serialize import BytesLike

__all__ = ["MultiConnector", "MultiKey", "NoPolicyError", "Policy"]


class NoPolicyError(ConnectorError):
    """No connector's policy admits the object; the message says its size and tags."""


@dataclass
class Policy:
    """When a connector may take an object.

    Args:
        priority: higher wins among the connectors that admit an object.
        min_size_bytes, max_size_bytes: admitted sizes, inclusive (None: no upper bound).
        subset_tags: an object's ``subset_tags`` must all be in this list.
        superset_tags: an object's ``superset_tags`` must include all of these.
        host_pattern: regular expressions; the putting host's name must match one
            (None: any host). E.g. ``["^x3\\d+"]`` for Polaris compute nodes.
    """

    priority: int = 0
    min_size_bytes: int = 0
    max_size_bytes: int | None = None
    subset_tags: list[str] = field(default_factory=list)
    superset_tags: list[str] = field(default_factory=list)
    host_pattern: list[str] | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.host_pattern, str):
            self.host_pattern = [self.host_pattern]
        if self.max_size_bytes is not None and self.max_size_bytes < self.min_size_bytes:
            raise ValueError(
                f"max_size_bytes {self.max_size_bytes} is below min_size_bytes "
                f"{self.min_size_bytes}"
            )
        for pattern in self.host_pattern or []:
            re.compile(pattern)  # a bad pattern fails here, not on some later put

    def admits(
        self,
        size: int,
        subset_tags: Iterable[str] = (),
        superset_tags: Iterable[str] = (),
        host: str | None = None,
    ) -> bool:
        if size < self.min_size_bytes:
            return False
        if self.max_size_bytes is not None and size > self.max_size_bytes:
            return False
        if not set(subset_tags) <= set(self.subset_tags):
            return False
        if not set(self.superset_tags) <= set(superset_tags):
            return False
        if self.host_pattern:
            name = host if host is not None else socket.gethostname()
            if not any(re.search(p, name) for p in self.host_pattern):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class MultiKey(NamedTuple):
    """Which connector holds the object, and that connector's own key."""

    connector_name: str
    connector_key: Any


class MultiConnector(ConnectorMixin):
    """Routes each object to one of several connectors by :class:`Policy`."""

    def __init__(self, connectors: dict[str, tuple[Any, Policy]]) -> None:
        if not connectors:
            raise ValueError("MultiConnector needs at least one (connector, Policy)")
        self.connectors = dict(connectors)
        # highest priority first; ties keep the order given
        self._order = sorted(
            self.connectors, key=lambda n: -self.connectors[n][1].priority
        )

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={type(c).__name__}" for n, (c, _) in self.connectors.items())
        return f"MultiConnector({parts})"

    def _connector(self, key: MultiKey) -> Any:
        try:
            return self.connectors[key.connector_name][0]
        except KeyError:
            raise ConnectorError(
                f"key names connector {key.connector_name!r}, which this MultiConnector does "
                f"not have (it has {', '.join(self.connectors)})"
            ) from None

    def choose(
        self,
        size: int,
        subset_tags: Iterable[str] = (),
        superset_tags: Iterable[str] = (),
        host: str | None = None,
    ) -> str:
        """The name of the connector an object of ``size`` bytes with these tags goes to."""
        subset, superset = list(subset_tags), list(superset_tags)
        for name in self._order:
            if self.connectors[name][1].admits(size, subset, superset, host):
                return name
        raise NoPolicyError(
            f"no connector admits an object of {size} bytes with subset_tags={subset} "
            f"and superset_tags={superset} on host {host or socket.gethostname()}: "
            + "; ".join(
                f"{n}: {self.connectors[n][1].as_dict()}" for n in self._order
            )
        )

    # -- Connector protocol ------------------------------------------------------

    def close(self) -> None:
        for connector, _ in self.connectors.values():
            connector.close()

    def config(self) -> dict[str, Any]:
        return {
            name: {
                "path": connector_path(connector),
                "config": connector.config(),
                "policy": policy.as_dict(),
            }
            for name, (connector, policy) in self.connectors.items()
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiConnector:
        return cls(
            {
                name: (
                    connector_from_path(entry["path"], entry["config"]),
                    Policy(**entry["policy"]),
                )
                for name, entry in config.items()
            }
        )

    def put(
        self,
        obj: BytesLike,
        subset_tags: Iterable[str] = (),
        superset_tags: Iterable[str] = (),
    ) -> MultiKey:
        name = self.choose(memoryview(obj).nbytes, subset_tags, superset_tags)
        return MultiKey(name, self.connectors[name][0].put(obj))

    def put_batch(
        self,
        objs: Sequence[BytesLike],
        subset_tags: Iterable[str] = (),
        superset_tags: Iterable[str] = (),
    ) -> list[MultiKey]:
        subset, superset = list(subset_tags), list(superset_tags)
        groups: dict[str, list[int]] = {}
        for i, obj in enumerate(objs):
            name = self.choose(memoryview(obj).nbytes, subset, superset)
            groups.setdefault(name, []).append(i)
        keys: list[MultiKey | None] = [None] * len(objs)
        for name, indices in groups.items():
            stored = self.connectors[name][0].put_batch([objs[i] for i in indices])
            for i, key in zip(indices, stored, strict=True):
                keys[i] = MultiKey(name, key)
        return [k for k in keys if k is not None]

    def get(self, key: MultiKey) -> BytesLike | None:
        data: BytesLike | None = self._connector(key).get(key.connector_key)
        return data

    def get_batch(self, keys: Sequence[MultiKey]) -> list[BytesLike | None]:
        out: list[BytesLike | None] = [None] * len(keys)
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key.connector_name, []).append(i)
        for indices in groups.values():
            connector = self._connector(keys[indices[0]])
            got = connector.get_batch([keys[i].connector_key for i in indices])
            for i, data in zip(indices, got, strict=True):
                out[i] = data
        return out

    def exists(self, key: MultiKey) -> bool:
        return bool(self._connector(key).exists(key.connector_key))

    def evict(self, key: MultiKey) -> None:
        self._connector(key).evict(key.connector_key)

    def new_key(self, obj: BytesLike | None = None) -> MultiKey:
        size = 0 if obj is None else memoryview(obj).nbytes
        name = self.choose(size)
        return MultiKey(name, self.connectors[name][0].new_key(obj))

    def set(self, key: MultiKey, obj: BytesLike) -> None:
        self._connector(key).set(key.connector_key, obj)
