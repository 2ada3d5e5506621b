"""Moving objects between sites with Globus transfers.

Each site is a Globus collection with a directory that the site's compute
nodes also see as a local path (a shared file system behind a Globus
endpoint). A ``put`` writes the object into this host's directory and submits
one transfer to every other collection; a ``get`` on another site waits for
the transfer into its directory to succeed (polling), then reads the file.
The key carries the transfer task ids, so any process can wait on them.

Which collection is "this host's" is decided by ``host_regex`` (regular
expressions matched against the host name), as in the original design. All
globus-sdk calls are in :mod:`warpstore.connectors.globus_adapter`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from warpstore.connectors.globus_adapter import make_adapter
from warpstore.connectors.protocols import ConnectorMixin
from warpstore.exceptions import ConnectorConnectionError, ConnectorError
from warpstore.serialize import BytesLike

__all__ = ["GlobusConnector", "GlobusEndpoint", "GlobusEndpoints", "GlobusKey"]


class GlobusEndpoint:
    """One site: its collection UUID, the directory on it, that directory's local path
    on this site's hosts, and the host names that belong to the site.

    Args:
        uuid: the Globus collection (endpoint) UUID.
        endpoint_path: the directory on the collection.
        local_path: the same directory as seen from this site's hosts.
        host_regex: regular expression(s) matched against the host name
            (the original's name; ``host_pattern`` is accepted too).
    """

    __slots__ = ("endpoint_path", "host_regex", "local_path", "uuid")

    def __init__(
        self,
        uuid: str,
        endpoint_path: str,
        local_path: str | None,
        host_regex: str | re.Pattern[str] | list[str] | None = None,
        *,
        host_pattern: str | list[str] | None = None,
    ) -> None:
        regex = host_regex if host_regex is not None else host_pattern
        if regex is None:
            raise TypeError("GlobusEndpoint needs host_regex")
        if isinstance(regex, re.Pattern):
            regex = regex.pattern
        self.uuid = uuid
        self.endpoint_path = endpoint_path
        self.local_path = local_path if local_path is not None else endpoint_path
        self.host_regex: str | list[str] = regex

    @property
    def host_pattern(self) -> str | list[str]:
        """Alias of :attr:`host_regex` (this project's earlier name)."""
        return self.host_regex

    def __repr__(self) -> str:
        return (
            f"GlobusEndpoint(uuid={self.uuid!r}, endpoint_path={self.endpoint_path!r}, "
            f"local_path={self.local_path!r}, host_regex={self.host_regex!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GlobusEndpoint):
            return NotImplemented
        return self.dict() == other.dict()

    def __hash__(self) -> int:
        return hash(self.uuid)

    def dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "endpoint_path": self.endpoint_path,
            "local_path": self.local_path,
            "host_regex": self.host_regex,
        }

    def matches(self, host: str) -> bool:
        patterns = [self.host_regex] if isinstance(self.host_regex, str) else self.host_regex
        return any(re.search(p, host) for p in patterns)


class GlobusEndpoints:
    """The sites of a :class:`GlobusConnector`, by UUID (the original's collection type).

    Args:
        endpoints: at least one :class:`GlobusEndpoint`, UUIDs unique.
    """

    def __init__(self, endpoints: Iterable[GlobusEndpoint]) -> None:
        self._endpoints: dict[str, GlobusEndpoint] = {}
        for e in endpoints:
            if e.uuid in self._endpoints:
                raise ValueError(f"Globus endpoint {e.uuid} is given twice")
            self._endpoints[e.uuid] = e
        if not self._endpoints:
            raise ValueError("GlobusEndpoints needs at least one endpoint")

    def __getitem__(self, uuid: str) -> GlobusEndpoint:
        try:
            return self._endpoints[uuid]
        except KeyError:
            raise KeyError(f"no Globus endpoint with UUID {uuid}") from None

    def __iter__(self) -> Iterator[GlobusEndpoint]:
        return iter(self._endpoints.values())

    def __len__(self) -> int:
        return len(self._endpoints)

    def __repr__(self) -> str:
        return f"GlobusEndpoints({list(self._endpoints.values())!r})"

    @classmethod
    def from_dict(cls, json_object: Mapping[str, Mapping[str, Any]]) -> GlobusEndpoints:
        """From ``{uuid: {"endpoint_path": ..., "local_path": ..., "host_regex": ...}}``."""
        return cls(GlobusEndpoint(uuid=uuid, **dict(p)) for uuid, p in json_object.items())

    @classmethod
    def from_json(cls, json_file: str | os.PathLike[str]) -> GlobusEndpoints:
        """Read the :meth:`from_dict` form from a JSON file."""
        with open(json_file) as f:
            return cls.from_dict(json.load(f))

    def dict(self) -> dict[str, dict[str, Any]]:
        """The :meth:`from_dict` form."""
        return {
            uuid: {k: v for k, v in e.dict().items() if k != "uuid"}
            for uuid, e in self._endpoints.items()
        }

    def get_by_host(self, host: str) -> GlobusEndpoint:
        """The endpoint whose ``host_regex`` matches ``host``.

        Raises:
            ValueError: no endpoint matches.
        """
        for e in self:
            if e.matches(host):
                return e
        raise ValueError(f"host {host} matches no Globus endpoint's host_regex")


class GlobusKey(NamedTuple):
    """The object's file name, and the transfer task ids that copy it to the other sites."""

    filename: str
    task_ids: tuple[str, ...]


class GlobusConnector(ConnectorMixin):
    """Objects as files on Globus collections, copied to every site by transfer tasks.

    Args:
        endpoints: the sites (at least two), as :class:`GlobusEndpoint` or dicts.
        polling_interval: seconds between task status checks while waiting.
        timeout: seconds a ``get`` waits for a transfer before giving up.
        clear: delete, on :meth:`close`, every object this connector put
            (default ``True``, as the original).
    """

    def __init__(
        self,
        endpoints: GlobusEndpoints
        | Sequence[GlobusEndpoint | dict[str, Any]]
        | Mapping[str, Mapping[str, Any]],
        polling_interval: float = 1.0,
        timeout: float = 60.0,
        clear: bool = True,
    ) -> None:
        if isinstance(endpoints, Mapping):  # the original's {uuid: {...}} form
            endpoints = GlobusEndpoints.from_dict(endpoints)
        self.endpoints = [
            e if isinstance(e, GlobusEndpoint) else GlobusEndpoint(**e) for e in endpoints
        ]
        if len(self.endpoints) < 2:
            raise ValueError("GlobusConnector needs at least two endpoints to move data between")
        self.polling_interval, self.timeout, self.clear = polling_interval, timeout, clear
        self._adapter = make_adapter()
        self._mine: list[str] = []

    def __repr__(self) -> str:
        return f"GlobusConnector({', '.join(e.uuid for e in self.endpoints)})"

    def _local(self) -> GlobusEndpoint:
        host = socket.gethostname()
        for endpoint in self.endpoints:
            if endpoint.matches(host):
                return endpoint
        raise ConnectorError(
            f"host {host} matches no Globus endpoint's host_regex ("
            + ", ".join(f"{e.uuid}: {e.host_regex}" for e in self.endpoints)
            + ")"
        )

    def _path(self, endpoint: GlobusEndpoint, filename: str) -> Path:
        return Path(os.path.expandvars(endpoint.local_path)) / filename

    # -- Connector protocol ---------------------------------------------------------

    def close(self) -> None:
        if self.clear and self._mine:
            names, self._mine = self._mine, []
            for name in names:
                self._delete(name)

    def config(self) -> dict[str, Any]:
        return {
            "endpoints": [e.dict() for e in self.endpoints],
            "polling_interval": self.polling_interval,
            "timeout": self.timeout,
            "clear": self.clear,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GlobusConnector:
        return cls(**config)

    def new_key(self, obj: BytesLike | None = None) -> GlobusKey:
        return GlobusKey(uuid.uuid4().hex, ())

    def put(self, obj: BytesLike) -> GlobusKey:
        key = self.new_key()
        return self._store(key.filename, obj)

    def set(self, key: GlobusKey, obj: BytesLike) -> None:
        raise NotImplementedError(
            "GlobusConnector keys carry the transfer tasks made by put: use put, not new_key/set"
        )

    def put_batch(self, objs: Sequence[BytesLike]) -> list[GlobusKey]:
        names = [uuid.uuid4().hex for _ in objs]
        local = self._local()
        for name, obj in zip(names, objs, strict=True):
            self._write(local, name, obj)
        tasks = self._transfer(local, names)
        self._mine.extend(names)
        return [GlobusKey(name, tasks) for name in names]

    def _write(self, endpoint: GlobusEndpoint, name: str, obj: BytesLike) -> None:
        path = self._path(endpoint, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(obj)
        os.replace(tmp, path)

    def _transfer(self, local: GlobusEndpoint, names: Sequence[str]) -> tuple[str, ...]:
        tasks = []
        for other in self.endpoints:
            if other.uuid == local.uuid:
                continue
            items = [
                (f"{local.endpoint_path.rstrip('/')}/{n}", f"{other.endpoint_path.rstrip('/')}/{n}")
                for n in names
            ]
            tasks.append(
                self._adapter.submit_transfer(
                    local.uuid, other.uuid, items, label=f"warpstore {len(names)} object(s)"
                )
            )
        return tuple(tasks)

    def _store(self, name: str, obj: BytesLike) -> GlobusKey:
        local = self._local()
        self._write(local, name, obj)
        self._mine.append(name)
        return GlobusKey(name, self._transfer(local, [name]))

    def _wait(self, key: GlobusKey) -> None:
        """Wait until the transfer into this host's endpoint has succeeded."""
        deadline = time.monotonic() + self.timeout
        pending = list(key.task_ids)
        while pending:
            task = pending[0]
            status, detail = self._adapter.task_status(task)
            if status == "SUCCEEDED":
                pending.pop(0)
                continue
            if status == "FAILED":
                raise ConnectorError(
                    f"Globus transfer task {task} of {key.filename} failed: {detail or status}"
                )
            if time.monotonic() > deadline:
                raise ConnectorConnectionError(
                    f"Globus transfer task {task} of {key.filename} not done after "
                    f"{self.timeout:g} s (status {status}: {detail or 'no detail'})"
                )
            time.sleep(self.polling_interval)

    def get(self, key: GlobusKey) -> BytesLike | None:
        path = self._path(self._local(), key.filename)
        if not path.exists() and key.task_ids:
            self._wait(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def get_batch(self, keys: Sequence[GlobusKey]) -> list[BytesLike | None]:
        return [self.get(k) for k in keys]

    def exists(self, key: GlobusKey) -> bool:
        """Stored here, or still on its way here (a transfer neither done nor failed)."""
        if self._path(self._local(), key.filename).exists():
            return True
        statuses = [self._adapter.task_status(t)[0] for t in key.task_ids]
        return any(s not in ("SUCCEEDED", "FAILED") for s in statuses)

    def evict(self, key: GlobusKey) -> None:
        self._delete(key.filename)
        if key.filename in self._mine:
            self._mine.remove(key.filename)

    def _delete(self, name: str) -> None:
        local = self._local()
        self._path(local, name).unlink(missing_ok=True)
        for other in self.endpoints:
            if other.uuid != local.uuid:
                self._adapter.submit_delete(
                    other.uuid, [f"{other.endpoint_path.rstrip('/')}/{name}"], "warpstore evict"
                )
