"""A double of :class:`warpstore.connectors.globus_adapter.GlobusAdapter` (no Globus here).

Same methods and semantics, within one machine: collections are registered
directories (:func:`register_collection`), a transfer task copies its items
on a background thread after ``delay`` seconds and ends SUCCEEDED, or FAILED
(with a Globus-like detail) if a source file is missing; ``task_status`` of an
unknown task raises as the Transfer API does (404); deletes remove files. The
login flow accepts exactly the code ``good-code``.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_collections: dict[str, tuple[str, Path]] = {}
_tasks: dict[str, tuple[str, str]] = {}
_lock = threading.Lock()
delay = 0.2
revoked: list[str] = []


class GlobusAPIError(Exception):
    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(f"{http_status}: {message}")
        self.http_status = http_status


def register_collection(collection: str, endpoint_path: str, local_dir: Path) -> None:
    _collections[collection] = (endpoint_path.rstrip("/"), local_dir)


def reset() -> None:
    _collections.clear()
    _tasks.clear()
    revoked.clear()


def _local(collection: str, path: str) -> Path:
    if collection not in _collections:
        raise GlobusAPIError(404, f"collection {collection} not found")
    root, local = _collections[collection]
    if not path.startswith(root + "/"):
        raise GlobusAPIError(403, f"{path} is outside {root} on {collection}")
    return local / path[len(root) + 1 :]


class GlobusDouble:
    def __init__(self, client: str | None = None) -> None:
        self.client_id = client or "double-client"

    def authorize_url(self) -> str:
        return f"https://auth.globus.org/v2/oauth2/authorize?client_id={self.client_id}"

    def exchange_code(self, code: str) -> dict[str, Any]:
        if code != "good-code":
            raise GlobusAPIError(401, "invalid_grant")
        return {
            "access_token": "acc-" + uuid.uuid4().hex,
            "refresh_token": "ref-" + uuid.uuid4().hex,
            "expires_at_seconds": int(time.time()) + 3600,
        }

    def revoke(self, tokens: dict[str, Any]) -> None:
        revoked.extend(tokens[k] for k in ("access_token", "refresh_token") if k in tokens)

    def submit_transfer(
        self, source: str, destination: str, items: Sequence[tuple[str, str]], label: str
    ) -> str:
        pairs = [(_local(source, s), _local(destination, d)) for s, d in items]
        task = uuid.uuid4().hex
        with _lock:
            _tasks[task] = ("ACTIVE", "Queued")

        def run() -> None:
            time.sleep(delay)
            for src, dst in pairs:
                if not src.exists():
                    with _lock:
                        _tasks[task] = ("FAILED", f"FILE_NOT_FOUND: {src.name}")
                    return
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            with _lock:
                _tasks[task] = ("SUCCEEDED", "")

        threading.Thread(target=run, daemon=True).start()
        return task

    def submit_delete(self, endpoint: str, paths: Sequence[str], label: str) -> str:
        for path in paths:
            _local(endpoint, path).unlink(missing_ok=True)
        task = uuid.uuid4().hex
        with _lock:
            _tasks[task] = ("SUCCEEDED", "")
        return task

    def task_status(self, task_id: str) -> tuple[str, str]:
        with _lock:
            if task_id not in _tasks:
                raise GlobusAPIError(404, f"task {task_id} not found")
            return _tasks[task_id]
