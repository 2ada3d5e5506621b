"""Where a node's server is found: runtime files, the job token, node identity.

Layout (``root`` is ``$WARPSTORE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/warpstore``,
else ``<tmp>/warpstore-<user>``)::

    root/<job>/token                        job-wide secret, mode 0600
    root/<job>/nodes/<node>/<transport>/server.json   address, pid, ... (0600)
    root/<job>/nodes/<node>/<transport>/server.lock   serialises spawning
    root/<job>/nodes/<node>/<transport>/server.log    the server's log
    root/<job>/nodes/<node>/<transport>/report.json   written when it stops

``<job>`` is the scheduler's job id (``PBS_JOBID``, ``SLURM_JOB_ID``) or
``$WARPSTORE_JOB_ID``, else ``nojob``; ``<node>`` is ``$WARPSTORE_HOSTNAME``
(a test-only override, also useful in containers) or the short host name.
The node is part of the path, so the root may be a shared file system, which
is also what lets every node of a job read the one job token.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import secrets
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "file_lock",
    "interface_address",
    "job_dir",
    "job_id",
    "load_token",
    "node_dir",
    "node_name",
    "pid_alive",
    "read_json",
    "runtime_root",
    "write_json_atomic",
]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def runtime_root() -> Path:
    explicit = os.environ.get("WARPSTORE_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "warpstore"
    return Path(tempfile.gettempdir()) / f"warpstore-{_user()}"


def job_id() -> str:
    for var in ("WARPSTORE_JOB_ID", "PBS_JOBID", "SLURM_JOB_ID", "FLUX_JOB_ID", "LSB_JOBID"):
        value = os.environ.get(var)
        if value:
            return value.replace("/", "_")
    return "nojob"


_RANK_VARS = ("PMI_RANK", "PALS_RANKID", "SLURM_PROCID", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")


def simulated_node() -> int | None:
    """Test-only: with ``WARPSTORE_SIMULATE_NODES=<ranks per node>``, MPI rank r acts as
    node ``sim<r // ranks per node>`` at 127.0.0.<2 + node>, so that one machine runs the
    multi-node paths (distinct host names, distinct addresses) of a real launch.
    """
    per_node = os.environ.get("WARPSTORE_SIMULATE_NODES")
    if not per_node:
        return None
    for var in _RANK_VARS:
        if var in os.environ:
            return int(os.environ[var]) // max(1, int(per_node))
    return None


def node_name() -> str:
    sim = simulated_node()
    if sim is not None:
        return f"sim{sim}"
    # Slurm names the node in every step; several slurmd "nodes" may share one host.
    return (
        os.environ.get("WARPSTORE_HOSTNAME")
        or os.environ.get("SLURMD_NODENAME")
        or socket.gethostname().split(".")[0]
    )


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def job_dir(root: str | os.PathLike[str] | None = None) -> Path:
    return _private_dir(Path(root) if root else runtime_root()) / job_id()


def node_dir(
    transport: str, root: str | os.PathLike[str] | None = None, node: str | None = None
) -> Path:
    return _private_dir(job_dir(root) / "nodes" / (node or node_name()) / transport)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: one process at a time, across the node."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write ``data`` as JSON, mode 0600, via a temp file and rename (readers never see half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def create_token_file(path: str | os.PathLike[str]) -> None:
    """Write a new random token to ``path`` (0600), appearing there only when complete.

    Readers do not take the lock, so the file is written under a temporary name
    and hard-linked into place: nobody ever reads a half-written (empty) token,
    and an existing token is never replaced.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_token(
    token: str | bytes | None = None,
    token_file: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    create: bool = True,
) -> tuple[bytes, str | None]:
    """Find the job's secret token: explicit, a file, the environment, or the job's file.

    Returns the token and the file it came from (``None`` if it was given
    directly). With ``create``, a missing job token file is generated (mode
    0600, under a lock so that concurrent first users agree on one token).
    """
    if token:
        return (token.encode() if isinstance(token, str) else token), None
    env_token = os.environ.get("WARPSTORE_TOKEN")
    if token_file is None and env_token:
        return env_token.encode(), None
    path = Path(token_file or os.environ.get("WARPSTORE_TOKEN_FILE") or job_dir(root) / "token")
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with file_lock(str(path) + ".lock"):
            if not path.exists():
                create_token_file(path)
    try:
        value = path.read_text().strip()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"token file {path} does not exist on {node_name()}") from e
    if not value:
        raise ValueError(f"token file {path} on {node_name()} is empty")
    mode = path.stat().st_mode & 0o077
    if mode:
        raise PermissionError(
            f"token file {path} is readable by others (mode {oct(path.stat().st_mode & 0o777)}); "
            f"run: chmod 600 {path}"
        )
    return value.encode(), str(path)


_SIOCGIFADDR = 0x8915


def interface_address(interface: str) -> str:
    """The IPv4 address of a network interface such as ``hsn0`` or ``ib0``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(
                s.fileno(), _SIOCGIFADDR, struct.pack("256s", interface.encode()[:15])
            )
        except OSError as e:
            names = ", ".join(name for _, name in socket.if_nameindex())
            raise ValueError(
                f"no IPv4 address for network interface {interface!r} on node {node_name()} "
                f"(interfaces here: {names})"
            ) from e
    return socket.inet_ntoa(packed[20:24])


def default_address(
    address: str | None = None, interface: str | None = None, transport: str = "zmq"
) -> str:
    """The IP this node's server binds to: explicit, interface, environment, host name."""
    if address:
        return address
    sim = simulated_node()
    if sim is not None:
        # UCX's TCP wire-up fails intermittently ("Destination is unreachable") between
        # secondary loopback addresses, so simulated UCX nodes differ by port only.
        return "127.0.0.1" if transport == "ucx" else f"127.0.0.{2 + sim}"
    interface = interface or os.environ.get("WARPSTORE_INTERFACE")
    if interface:
        return interface_address(interface)
    env = os.environ.get("WARPSTORE_ADDRESS")
    if env:
        return env
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
