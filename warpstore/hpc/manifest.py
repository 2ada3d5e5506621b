"""The job manifest: which servers this job runs, and how tasks reach them.

Written once by rank 0 of the server launch (JSON, mode 0600, in the job's
directory), read by every task through ``$WARPSTORE_MANIFEST``, and extended,
under a lock, by servers started elastically later in the job.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from warpstore.server.runtime import file_lock, read_json, write_json_atomic

__all__ = ["read_manifest", "register_server", "write_manifest"]

logger = logging.getLogger(__name__)


def read_manifest(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    path = path or os.environ.get("WARPSTORE_MANIFEST")
    if not path:
        raise FileNotFoundError("no manifest: WARPSTORE_MANIFEST is not set (not inside a launch)")
    data = read_json(path)
    if data is None:
        raise FileNotFoundError(f"manifest {path} is missing or not valid JSON")
    return data


def write_manifest(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    with file_lock(str(path) + ".lock"):
        write_json_atomic(path, data)


def register_server(path: str | os.PathLike[str], info: dict[str, Any]) -> bool:
    """Add a server started after the launch; ``False`` if it was already listed."""
    with file_lock(str(path) + ".lock"):
        data = read_json(path)
        if data is None:
            return False
        servers = data.setdefault("servers", [])
        if any(s.get("address") == info["address"] for s in servers):
            return False
        servers.append(
            {
                "node": info.get("node"),
                # the registering task spawned it locally: same host
                "host": socket.gethostname(),
                "address": info["address"],
                "pid": info.get("pid"),
                "elastic": True,
            }
        )
        write_json_atomic(Path(path), data)
    logger.info(
        "registered elastic server %s of node %s in %s", info["address"], info.get("node"), path
    )
    return True
