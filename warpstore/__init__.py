"""warpstore: move data between the tasks of distributed Python applications by reference.

A task puts an object into a :class:`~warpstore.store.Store` and hands on a
:class:`~warpstore.proxy.Proxy`; whoever uses the proxy fetches the object just
in time, from wherever it lives.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("warpstore")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "task_store"]


def task_store() -> Any:
    """The Store for task code: wired to this node's server inside a `warpstore launch` job.

    See :func:`warpstore.hpc.task.task_store`.
    """
    from warpstore.hpc.task import task_store as _task_store

    return _task_store()
