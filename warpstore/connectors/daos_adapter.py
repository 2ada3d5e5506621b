"""The only module that calls pydaos (DAOS's Python container API).

:class:`DAOSDict` opens one DAOS dictionary (a ``DDict`` named ``namespace``
in a container of type PYTHON) and offers what the connector needs. It also
absorbs pydaos's known traits, so the connector does not have to:

- ``DDict.bget`` fails as a whole in some DAOS releases when any key is
  missing: the batch is retried key by key, and missing keys come back None;
- reads of values larger than the value buffer (1 MiB by default) cost a
  second round trip: callers pass the value's size (warpstore keys carry it)
  and the buffer is sized from it;
- values are byte strings and an empty value deletes a key: callers never
  store empty values (see :class:`~warpstore.connectors.daos.DAOSConnector`).

pydaos ships with DAOS (``module load daos`` on Aurora), not on PyPI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from warpstore.exceptions import ConnectorError

__all__ = ["DAOSDict"]


def _pydaos() -> Any:
    try:
        import pydaos
    except ImportError as e:
        raise ConnectorError(
            "the DAOS connector needs pydaos, which comes with DAOS itself (on Aurora: "
            "`module load daos`; elsewhere: `spack install daos` or your site's DAOS "
            f"client packages); import failed: {e}"
        ) from e
    return pydaos


class DAOSDict:
    def __init__(self, pool: str, container: str, namespace: str) -> None:
        pydaos = self._pydaos = _pydaos()
        self.where = f"daos://{pool}/{container}/{namespace}"
        try:
            cont = pydaos.DCont(pool, container)
        except pydaos.PyDError as e:
            raise ConnectorError(
                f"cannot open DAOS container {container!r} in pool {pool!r}: {e}. Check the "
                f"pool (`daos pool list`) and that the container exists and is of type "
                f"PYTHON; create one with `daos cont create {pool} {container} --type PYTHON`"
            ) from e
        self._cont = cont
        try:
            self._dict = cont.get(namespace)
        except pydaos.DObjNotFound:
            try:
                self._dict = cont.dict(namespace)
            except pydaos.PyDError:  # another process created it first
                self._dict = cont.get(namespace)

    def get(self, key: str, size: int) -> bytes | None:
        found = self.bget([key], size)
        return found[key]

    def bget(self, keys: Iterable[str], size: int) -> dict[str, bytes | None]:
        wanted: dict[str, bytes | None] = dict.fromkeys(keys)
        if not wanted:
            return {}
        value_size = max(1, size)  # one round trip: the buffer fits the value
        try:
            self._dict.bget(wanted, value_size=value_size)
        except self._pydaos.PyDError:
            for key in list(wanted):  # some releases fail the batch on a missing key
                single: dict[str, bytes | None] = {key: None}
                try:
                    self._dict.bget(single, value_size=value_size)
                except self._pydaos.PyDError:
                    single[key] = None
                wanted[key] = single[key]
        return wanted

    def put(self, key: str, value: bytes) -> None:
        self.bput({key: value})

    def bput(self, items: dict[str, bytes]) -> None:
        try:
            self._dict.bput(items)
        except self._pydaos.PyDError as e:
            raise ConnectorError(f"DAOS put of {len(items)} value(s) into {self.where}: {e}") from e

    def delete(self, key: str) -> None:
        self._dict.pop(key)

    def exists(self, key: str) -> bool:
        return key in self._dict
