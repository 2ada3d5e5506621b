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
import errno
import fcntl
import getpass
import json
import os
import secrets
import socket
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "RuntimeFileError",
    "checked_root",
    "create_token_file",
    "file_lock",
    "interface_address",
    "job_dir",
    "job_id",
    "load_token",
    "node_dir",
    "node_name",
    "open_log",
    "pid_alive",
    "process_state",
    "read_json",
    "read_token_file",
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


class RuntimeFileError(PermissionError):
    """A runtime file or directory that is not safely ours: the message says how to fix it."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _check_dir(path: Path, fix_mode: bool) -> None:
    """A real directory (no symlink), ours, not open to others: checked as OpenSSH checks.

    ``lstat`` first, then again through a descriptor opened with
    ``O_NOFOLLOW`` (the same inode, so nothing was swapped in between). A
    directory of ours that others may only read or enter (0755, a default
    umask) is tightened to 0700 through that descriptor; one that others may
    write to, that another user owns, or that is a link, is refused.
    """
    uid = os.getuid()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    how = (
        f"remove it (rm -rf {path}) so that warpstore recreates it, or set "
        "WARPSTORE_RUNTIME_DIR to a directory of your own with mode 0700"
    )
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RuntimeFileError(
            f"runtime directory {path} is not a real directory (a symlink or a file); {how}"
        )
    if st.st_uid != uid:
        raise RuntimeFileError(
            f"runtime directory {path} belongs to uid {st.st_uid}, not to you (uid {uid}); {how}"
        )
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as e:
        raise RuntimeFileError(f"cannot open runtime directory {path}: {e}; {how}") from e
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or fst.st_uid != uid:
            raise RuntimeFileError(f"runtime directory {path} changed while checked; {how}")
        mode = stat.S_IMODE(fst.st_mode)
        if mode & 0o022:
            raise RuntimeFileError(
                f"runtime directory {path} is writable by others (mode {mode:04o}): others "
                f"may have planted files in it; {how}"
            )
        if mode & 0o077:
            if not fix_mode:
                raise RuntimeFileError(
                    f"runtime directory {path} is open to others (mode {mode:04o}); "
                    f"run: chmod 700 {path}"
                )
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _private_dir(path: Path, parents: bool = True) -> Path:
    """``path``, created 0700 if missing, after :func:`_check_dir` accepted it."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        if not parents:
            raise
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    _check_dir(path, fix_mode=True)
    return path


def checked_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The runtime root, created or checked (see :func:`_check_dir`)."""
    return _private_dir(Path(root) if root else runtime_root())


def job_dir(root: str | os.PathLike[str] | None = None) -> Path:
    return _private_dir(checked_root(root) / job_id(), parents=False)


def node_dir(
    transport: str, root: str | os.PathLike[str] | None = None, node: str | None = None
) -> Path:
    path = job_dir(root)
    for part in ("nodes", node or node_name(), transport):
        path = _private_dir(path / part, parents=False)
    return path


_FILE_FLAGS = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: one process at a time, across the node."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _FILE_FLAGS, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write ``data`` as JSON, mode 0600, via a temp file and rename (readers never see half).

    The temp file has a random name and is created with ``O_EXCL|O_NOFOLLOW``:
    a planted file or link of that name makes this fail, never write through it.
    """
    path = Path(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_log(path: str | os.PathLike[str]) -> int:
    """A descriptor appending to ``path`` (0600), never through a symlink."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _FILE_FLAGS, 0o600)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _FILE_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink where a runtime file should be
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = json.loads(f.read(1 << 20))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as dead."""
    if pid <= 0:
        return False
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


def process_state(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks since boot)`` from ``/proc/<pid>/stat``.

    The start time tells a process from a later one that reuses its pid.
    ``None`` if there is no such process (or no ``/proc``).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def create_token_file(path: str | os.PathLike[str]) -> None:
    """Write a new random token to ``path`` (0600), appearing there only when complete.

    Readers do not take the lock, so the file is written under a random
    temporary name (``O_EXCL|O_NOFOLLOW``) and hard-linked into place: nobody
    ever reads a half-written (empty) token, and an existing token is never
    replaced.
    """
    path = Path(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_token_file(path: str | os.PathLike[str]) -> bytes:
    """The secret in ``path``, after OpenSSH's checks on a private key file.

    Opened with ``O_NOFOLLOW`` (a symlink is refused, so a planted link to
    ``/proc/self/...`` or another user's file is never read) and checked
    through the descriptor: a regular file, owned by us, mode 0600 or
    stricter. Every refusal is one line naming the file and the fix.
    """
    node = node_name()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _FILE_FLAGS)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"token file {path} does not exist on node {node}: the job it belongs to has "
            "ended or its runtime directory was removed (a token file is only created by "
            "the process that creates the job or server)"
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RuntimeFileError(
                f"token file {path} on node {node} is a symbolic link; refusing to follow it "
                f"(remove it: rm {path})"
            ) from None
        raise RuntimeFileError(f"cannot open token file {path} on node {node}: {e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RuntimeFileError(
                f"token file {path} on node {node} is not a regular file (remove it: rm {path})"
            )
        if st.st_uid != os.getuid():
            raise RuntimeFileError(
                f"token file {path} on node {node} belongs to uid {st.st_uid}, not to you "
                f"(uid {os.getuid()}): someone else may know it; remove it: rm {path}"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise RuntimeFileError(
                f"token file {path} on node {node} is open to others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        value = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if not value:
        raise RuntimeFileError(f"token file {path} on node {node} is empty")
    return value


def load_token(
    token: str | bytes | None = None,
    token_file: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    create: bool = True,
) -> tuple[bytes, str | None]:
    """Find the job's secret token: explicit, a file, the environment, or the job's file.

    Returns the token and the file it came from (``None`` if it was given
    directly). With ``create``, a missing token file at the job's default
    place is generated (mode 0600, under a lock so that concurrent first
    users agree on one token). A file named explicitly (``token_file``,
    ``$WARPSTORE_TOKEN_FILE``, a proxy's config) is never created: its
    absence means the job it names is gone, and a fresh token there would
    lock every other client of a still-running job out.
    """
    if token:
        return (token.encode() if isinstance(token, str) else token), None
    env_token = os.environ.get("WARPSTORE_TOKEN")
    if token_file is None and env_token:
        return env_token.encode(), None
    named = token_file or os.environ.get("WARPSTORE_TOKEN_FILE")
    path = Path(named) if named else job_dir(root) / "token"
    if not named and create:
        with file_lock(str(path) + ".lock"):
            if not os.path.lexists(path):
                create_token_file(path)
    return read_token_file(path), str(path)


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
