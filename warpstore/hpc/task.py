"""``warpstore.task_store()``: the one call task code makes.

Inside a job started by ``warpstore launch`` it returns a Store wired to the
task's own node server (and able to resolve keys of every other node), built
from the manifest named by ``$WARPSTORE_MANIFEST``. Outside one it falls back
to the site's default connector (``$WARPSTORE_SITE``, else ``local``) and says
so in a log line. One store per process, built once, thread-safely.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from warpstore.store import Store

__all__ = ["store_from_manifest", "task_store"]

logger = logging.getLogger("warpstore.task")

_lock = threading.Lock()
_stores: dict[str, Store[Any]] = {}


def store_from_manifest(path: str | os.PathLike[str] | None = None) -> Store[Any]:
    """A Store for the job whose manifest is at ``path`` (default ``$WARPSTORE_MANIFEST``)."""
    from warpstore.connectors.file import FileConnector
    from warpstore.connectors.redis import RedisConnector
    from warpstore.connectors.zmq import ZMQConnector
    from warpstore.hpc.manifest import read_manifest
    from warpstore.store.registry import get_store, register_store

    manifest = read_manifest(path)
    name = f"warpstore-{manifest['job_id']}"
    existing = get_store(name)
    if existing is not None:
        return existing
    connector = manifest["connector"]
    from warpstore.connectors.daos import DAOSConnector
    from warpstore.connectors.margo import MargoConnector
    from warpstore.connectors.multi import MultiConnector
    from warpstore.connectors.ucx import UCXConnector

    classes = {
        "zmq": ZMQConnector,
        "ucx": UCXConnector,
        "margo": MargoConnector,
        "daos": DAOSConnector,
        "multi": MultiConnector,
        "redis": RedisConnector,
        "file": FileConnector,
    }
    if connector.get("type") not in classes:
        raise ValueError(
            f"manifest {path or os.environ.get('WARPSTORE_MANIFEST')} names connector "
            f"{connector.get('type')!r}; this warpstore knows {', '.join(classes)}"
        )
    cls: Any = classes[connector["type"]]
    store: Store[Any] = Store(name, cls.from_config(connector["config"]))
    register_store(store, exist_ok=True)
    return store


def task_store() -> Store[Any]:
    """The Store task code should use, wherever it runs."""
    manifest = os.environ.get("WARPSTORE_MANIFEST")
    key = manifest or f"site:{os.environ.get('WARPSTORE_SITE', 'local')}"
    with _lock:
        store = _stores.get(key)
        if store is None:
            if manifest:
                store = store_from_manifest(manifest)
            else:
                from warpstore.hpc.connectors import connector_from_site
                from warpstore.hpc.siteconfig import load_site

                site = load_site(os.environ.get("WARPSTORE_SITE", "local"))
                connector = connector_from_site(site)
                # a warning: silently using a different store than the job's is how data
                # ends up where the other tasks never look
                logger.warning(
                    "not inside a `warpstore launch` job (WARPSTORE_MANIFEST unset): using "
                    "site %r's default connector %r",
                    site.name,
                    connector,
                )
                store = Store(f"warpstore-site-{site.name}", connector, register=False)
                from warpstore.store.registry import register_store

                register_store(store, exist_ok=True)
            _stores[key] = store
        return store
