"""A double of the ``pydaos`` module (DAOS's container API), for machines without DAOS.

Installed as ``sys.modules["pydaos"]`` by the tests, so that
:mod:`warpstore.connectors.daos_adapter` runs its real code against it. It
mirrors the parts of pydaos the adapter uses, with pydaos's behaviour:

- ``DCont(pool, cont)`` opens an existing container of type PYTHON and raises
  ``PyDError`` for an unknown pool or container (create them with
  :func:`create_container`, as ``daos cont create --type PYTHON`` would);
- ``DCont.get(name)`` raises ``DObjNotFound``; ``DCont.dict(name)`` creates a
  ``DDict`` and raises ``PyDError`` if the name exists;
- ``DDict`` keys are ``str``, values ``bytes``; an empty or None value deletes;
  ``pop`` deletes; ``in`` tests presence;
- ``bget(d, value_size)`` fills ``d`` and, like the releases the adapter guards
  against, fails as a whole with ``PyDError`` if any key is missing; a value
  larger than ``value_size`` costs a second round trip (``round_trips`` counts
  them);
- ``bput`` refuses non-bytes values, as pydaos's C shim does.

State is per process (module globals), shared by every ``DCont`` of the same
pool and container, as DAOS state is shared by every client.
"""

from __future__ import annotations

from typing import Any

DER_NONEXIST = -1005

_pools: dict[str, dict[str, dict[str, DDict]]] = {}
round_trips = 0


class PyDError(Exception):
    def __init__(self, message: str, rc: int) -> None:
        super().__init__(f"{message}: DER_{rc}")
        self.message, self.rc = message, rc


class DObjNotFound(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"Failed to open '{self.name}'"


def create_container(pool: str, cont: str) -> None:
    _pools.setdefault(pool, {}).setdefault(cont, {})


def reset() -> None:
    global round_trips
    _pools.clear()
    round_trips = 0


class DDict:
    value_size = 1024 * 1024

    def __init__(self, name: str) -> None:
        self.name = name
        self._data: dict[str, bytes] = {}

    def bget(self, d: dict[str, Any], value_size: int | None = None) -> dict[str, Any]:
        global round_trips
        size = self.value_size if value_size is None else value_size
        missing = [k for k in d if k not in self._data]
        round_trips += 1
        if missing:
            raise PyDError("failed to retrieve KV value", DER_NONEXIST)
        for key in d:
            value = self._data[key]
            if len(value) > size:
                round_trips += 1  # the value did not fit: fetched again at its size
            d[key] = value
        return d

    def bput(self, d: dict[str, Any] | None) -> None:
        global round_trips
        if d is None:
            return
        round_trips += 1
        for key, value in d.items():
            if not isinstance(key, str):
                raise TypeError("pydaos keys are str")
            if value is None or value == b"":
                self._data.pop(key, None)
            elif isinstance(value, bytes):
                self._data[key] = value
            else:
                raise TypeError(f"pydaos values are bytes, got {type(value).__name__}")

    def get(self, key: str) -> bytes:
        d: dict[str, Any] = {key: None}
        try:
            self.bget(d)
        except PyDError:
            raise KeyError(key) from None
        return d[key]  # type: ignore[no-any-return]

    def put(self, key: str, val: bytes) -> None:
        self.bput({key: val})

    def pop(self, key: str) -> None:
        self.bput({key: None})

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class DCont:
    def __init__(self, pool: str | None = None, cont: str | None = None, path: str | None = None):
        if pool not in _pools or cont not in _pools[pool]:
            raise PyDError("failed to access container", DER_NONEXIST)
        self.pool, self.cont = pool, cont
        self._objs = _pools[pool][cont]

    def get(self, name: str) -> DDict:
        if name not in self._objs:
            raise DObjNotFound(name)
        return self._objs[name]

    def dict(self, name: str, v: dict[str, bytes] | None = None) -> DDict:
        if name in self._objs:
            raise PyDError("failed to create DAOS dict", -1004)
        dd = self._objs[name] = DDict(name)
        dd.bput(v)
        return dd
