"""The store the Dask and Parsl plugin tests hand to their integration.

A FileConnector store (its objects are files, so a test can list what is left)
whose connector counts its gets in this process: the client, the scheduler or
DFK and the submit side all run here, so ``store.gets["n"]`` shows whether any
of them fetched a proxied argument or result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from warpstore.connectors.file import FileConnector
from warpstore.store import Store


def counting_store(name: str, directory: Path, **options: Any) -> Store[Any]:
    """A store named ``name`` over files in ``directory``; ``store.gets["n"]`` counts gets."""
    store: Store[Any] = Store(name, FileConnector(directory), **options)
    gets = {"n": 0}
    real_get = store.connector.get

    def counting_get(key: Any) -> Any:
        gets["n"] += 1
        return real_get(key)

    store.connector.get = counting_get  # type: ignore[method-assign]
    store.gets = gets  # type: ignore[attr-defined]
    return store


def stored(store: Store[Any]) -> list[str]:
    """The objects the store holds now (file names, sorted)."""
    return sorted(os.listdir(store.connector.store_dir))  # type: ignore[attr-defined]
