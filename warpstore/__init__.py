"""warpstore: move data between the tasks of distributed Python applications by reference.

A task puts an object into a :class:`~warpstore.store.Store` and hands on a
:class:`~warpstore.proxy.Proxy`; whoever uses the proxy fetches the object just
in time, from wherever it lives.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("warpstore")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
