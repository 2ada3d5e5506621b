"""Importing ucxx with UCX settings for host memory, or a clear error without it.

ucxx sets UCX variables when it is imported (``UCX_RNDV_FRAG_MEM_TYPE=cuda``,
``UCX_RNDV_THRESH``, ...), tuned for GPU buffers. Node servers move host
memory, so ours are set first, unless the user or the site config set them:
UCX reads its environment once, when the first context is made.

The ``libucx-cu12`` wheel has TCP and shared memory but no verbs/RDMA
transports: on InfiniBand/RoCE sites set
``RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true`` so ucxx loads the system UCX
(the site configs do this where it applies).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from warpstore.exceptions import ConnectorError

__all__ = ["HOST_MEMORY_DEFAULTS", "apply_ucx_env", "import_ucxx", "wheel_ucx_preload"]

HOST_MEMORY_DEFAULTS = {
    # ucxx would stage rendezvous fragments in CUDA memory
    "UCX_RNDV_FRAG_MEM_TYPE": "host",
    # progress driven by the asyncio loop's epoll wake-ups, no extra progress thread:
    # measured here at ~100 us per 1 KiB round trip, against 200 us to 8 ms (bimodal)
    # with ucxx's default progress thread
    "UCXPY_PROGRESS_MODE": "blocking",
    # ucxx sets UCX_MEMTYPE_CACHE, which UCX 1.18+ no longer knows: no warning per process
    "UCX_WARN_UNUSED_ENV_VARS": "n",
}


def apply_ucx_env(settings: Mapping[str, Any] | None = None) -> None:
    """Export a site's UCX settings (``UCX_TLS``, ``UCX_NET_DEVICES``...) and our defaults.

    Explicit settings win over the environment; defaults never override it.
    """
    for key, value in (settings or {}).items():
        if not key.startswith(("UCX_", "UCXPY_", "RAPIDS_")):
            raise ValueError(f"UCX setting {key!r} is not a UCX_*, UCXPY_* or RAPIDS_* variable")
        os.environ[key] = str(value)
    for key, value in HOST_MEMORY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def wheel_ucx_preload() -> str | None:
    """``LD_PRELOAD`` value that makes a process use the libucx wheel's UCX, if needed.

    PyPI's ``mpich`` wheel bundles its own, older UCX under the same sonames
    (``libucs.so.0``...). In a process that initialises MPI first, the loader
    then binds the libucx wheel's ``libuct`` to mpich's ``libucs`` and ucxx
    fails with ``undefined symbol: ucs_...``. Loading the libucx wheel's
    libraries first works both ways (MPICH runs on the newer UCX), so the
    launcher preloads them for UCX jobs when both wheels are installed and
    the user did not ask for the system UCX.
    """
    if os.environ.get("RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY", "false").lower() != "false":
        return None
    from importlib import metadata, util

    try:
        metadata.distribution("mpich")
    except metadata.PackageNotFoundError:
        return None
    spec = util.find_spec("libucx")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = os.path.join(next(iter(spec.submodule_search_locations)), "lib")
    names = ("libucs.so", "libucs_signal.so", "libuct.so", "libucp.so")
    paths = [os.path.join(lib, n) for n in names if os.path.exists(os.path.join(lib, n))]
    return ":".join(paths) or None


def import_ucxx() -> Any:
    apply_ucx_env()
    try:
        import ucxx
    except OSError as e:
        if "undefined symbol" in str(e):
            raise ConnectorError(
                f"cannot load UCX ({e}): another UCX was loaded into this process first, "
                "typically by PyPI's mpich wheel when mpi4py is imported before warpstore's "
                "UCX transport. Run under `warpstore launch --connector ucx` (it preloads the "
                "right UCX), import warpstore.connectors.ucx before mpi4py, or use the system "
                "UCX for both (RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true)"
            ) from e
        raise
    except ImportError as e:
        raise ConnectorError(
            "the UCX transport needs ucxx: pip install 'warpstore[ucx]' (PyPI package "
            f"ucxx-cu12, which also runs on CPU-only machines); import failed: {e}"
        ) from e
    return ucxx
