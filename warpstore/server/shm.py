"""Shared-memory segments of a node's objects: create, check, map, adopt, sweep.

A same-node put or get through a socket copies every byte at least twice
more than it must (a 100 MiB get cost 9-14x a memcpy). Here each object a
node server holds for same-node readers is one file on a RAM file system,
and every process of the node maps it:

* a *writer* creates ``c-<pid>-<random>`` (``O_CREAT | O_EXCL | O_NOFOLLOW``,
  mode 0600), reserves its size with ``posix_fallocate`` (so a full file
  system is an error now, not a ``SIGBUS`` later), writes the serialized
  object straight into the mapping and registers it with one small message;
* the *server* checks the file (regular, ours, 0600, the declared size) and
  renames it ``s-<server pid>-<random>``: from then on it is the server's;
* a *reader* asks the server for the name (the reply carries an HMAC of
  name and size under the job token: a name is never taken from an
  unauthenticated message), opens it ``O_RDONLY | O_NOFOLLOW``, checks it the
  same way and maps it read-only;
* evicting unlinks the file: mappings that readers still hold stay valid
  (the kernel frees the pages when the last one goes), so eviction never
  pulls memory from under anyone.

The directory: ``$WARPSTORE_SHM_DIR`` if set; else the server's runtime
directory when it is on a RAM file system (``XDG_RUNTIME_DIR`` usually is);
else ``/dev/shm/warpstore-<uid>/<job>/<node>-<transport>`` (the runtime root
may be a shared file system, where mapping would be slow and wrong). Every
level is created 0700 and must be owned by us.

A crashed process leaves files behind: the pid in each name says whose it
is, and :func:`sweep` (run by each server when it starts and by
:func:`cleanup_job` at the job's teardown) removes those of dead processes.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import mmap
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from warpstore.exceptions import ConnectorError, StoreFullError

__all__ = [
    "INLINE_MAX",
    "NAME",
    "CopyMap",
    "SegmentError",
    "SegmentMap",
    "cleanup_job",
    "create_segment",
    "ensure_private_dir",
    "job_segment_dirs",
    "leftover_segments",
    "open_segment",
    "pack_segment_reply",
    "remove_segment",
    "shm_directory",
    "sweep",
    "unpack_segment_reply",
    "write_segment",
]

INLINE_MAX = 64 * 1024  # smaller objects go through the socket: a mapping costs more
NAME = re.compile(r"^[cs]-[0-9]{1,10}-[0-9a-f]{32}$")
_RAM_FS = {"tmpfs", "ramfs", "hugetlbfs"}
_O_NOFOLLOW_CLOEXEC = os.O_NOFOLLOW | os.O_CLOEXEC
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_IOV_MAX = 1024


class SegmentError(ConnectorError):
    """A segment that is missing, not ours, of the wrong mode or size, or badly named."""


class SegmentMap(mmap.mmap):
    """A read-only mapping of a segment: numpy arrays and bytes are *views* of it.

    :func:`warpstore.serialize.deserialize` looks at the exporter of the
    buffer it is given: for this class it returns read-only views (zero copy)
    instead of private copies.
    """

    warpstore_views = True


class CopyMap(mmap.mmap):
    """A read-only mapping whose contents deserialize into private copies."""

    warpstore_views = False


def _ram_fs(path: Path) -> bool:
    """Is ``path`` on tmpfs/ramfs? (longest matching mount point in /proc/self/mounts)"""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return False
    target = os.path.realpath(path)
    best, fstype = "", ""
    for point, kind in mounts:
        point = point.replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(
            best
        ):
            best, fstype = point, kind
    return fstype in _RAM_FS


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (0700) as needed and check that it is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise SegmentError(f"shared-memory directory {path} is not a directory (a link?)")
    if st.st_uid != os.getuid():
        raise SegmentError(f"shared-memory directory {path} belongs to uid {st.st_uid}, not us")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


def shm_directory(server_dir: Path, job: str, node: str, transport: str) -> Path:
    """Where a node server's segments live (see the module docs); created and checked."""
    explicit = os.environ.get("WARPSTORE_SHM_DIR")
    if explicit:
        return ensure_private_dir(Path(explicit) / job / f"{node}-{transport}")
    if _ram_fs(server_dir):
        return ensure_private_dir(server_dir / "shm")
    base = Path("/dev/shm") / f"warpstore-{os.getuid()}"
    return ensure_private_dir(base / job / f"{node}-{transport}")


def _check(fd: int, path: Path, nbytes: int | None) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SegmentError(f"segment {path} is not a regular file")
    if st.st_uid != os.getuid():
        raise SegmentError(f"segment {path} belongs to uid {st.st_uid}, not us")
    if st.st_mode & 0o077:
        raise SegmentError(f"segment {path} has mode {stat.S_IMODE(st.st_mode):o}, not 600")
    if nbytes is not None and st.st_size != nbytes:
        raise SegmentError(f"segment {path} holds {st.st_size} bytes, expected {nbytes}")


def _name_ok(name: str) -> str:
    if not NAME.match(name):
        raise SegmentError(f"refusing segment name {name[:80]!r}")
    return name


def create_segment(directory: Path, nbytes: int, prefix: str = "c") -> tuple[str, mmap.mmap | None]:
    """A new segment of ``nbytes`` and a writable mapping of it (``None`` when empty).

    Raises:
        StoreFullError: when the file system cannot hold ``nbytes`` more.
    """
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex}"
    path = directory / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW_CLOEXEC, 0o600)
    try:
        if nbytes == 0:
            return name, None
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as e:
            os.unlink(path)
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StoreFullError(
                    f"no room for a {nbytes}-byte segment in {directory}: {e.strerror}"
                ) from None
            raise
        # MAP_POPULATE: the pages exist (fallocate); map them all in one call
        # rather than one fault per page while the writer fills them.
        return name, mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED | _POPULATE)
    finally:
        os.close(fd)


def write_segment(directory: Path, parts: Sequence[Any]) -> str:
    """A new segment holding ``parts`` back to back, written with ``writev(2)``.

    One copy, straight from the caller's buffers (a serialized message's
    header and an array's own memory) into the segment, and no mapping:
    on tmpfs this measured 2x faster than ``posix_fallocate`` + a populated
    mapping + a copy, because the kernel allocates the pages as it writes.

    Raises:
        StoreFullError: when the file system cannot hold it.
    """
    views = [m for m in (memoryview(p).cast("B") for p in parts) if m.nbytes]
    total = sum(v.nbytes for v in views)
    name = f"c-{os.getpid()}-{uuid.uuid4().hex}"
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW_CLOEXEC, 0o600)
    try:
        while views:
            n = os.writev(fd, views[:_IOV_MAX])
            while n and views:  # drop what was written, keep the rest of a partial part
                if n >= views[0].nbytes:
                    n -= views[0].nbytes
                    views.pop(0)
                else:
                    views[0] = views[0][n:]
                    n = 0
    except OSError as e:
        os.unlink(path)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise StoreFullError(
                f"no room for a {total}-byte segment in {directory}: {e.strerror}"
            ) from None
        raise
    finally:
        os.close(fd)
    return name


def open_segment(
    directory: Path,
    name: str,
    nbytes: int,
    *,
    writable: bool = False,
    populate: bool = False,
    views: bool = True,
) -> mmap.mmap | None:
    """Map an existing segment after checking it (``None`` for an empty one).

    Raises:
        SegmentError: bad name, missing file, not ours, wrong mode or size.
    """
    path = directory / _name_ok(name)
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | _O_NOFOLLOW_CLOEXEC)
    except OSError as e:
        raise SegmentError(f"cannot open segment {path}: {e.strerror}") from None
    try:
        _check(fd, path, nbytes)
        if nbytes == 0:
            return None
        if writable:
            return mmap.mmap(fd, nbytes)
        flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
        cls = SegmentMap if views else CopyMap
        return cls(fd, nbytes, flags=flags, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def adopt_segment(directory: Path, name: str, nbytes: int) -> tuple[str, mmap.mmap | None]:
    """Server side of a same-node put: check a writer's segment and make it the server's.

    The file is renamed ``s-<our pid>-...`` (so a crashed writer's sweep no
    longer matches it) and mapped writable, as received frames are.
    """
    if not name.startswith("c-"):
        raise SegmentError(f"refusing segment name {name[:80]!r}")
    path = directory / _name_ok(name)
    try:
        fd = os.open(path, os.O_RDWR | _O_NOFOLLOW_CLOEXEC)
    except OSError as e:
        raise SegmentError(f"cannot open segment {path}: {e.strerror}") from None
    try:
        _check(fd, path, nbytes)
        new = f"s-{os.getpid()}-{name.rsplit('-', 1)[1]}"
        os.rename(path, directory / new)
        before, after = os.fstat(fd), os.lstat(directory / new)
        if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino):
            raise SegmentError(f"segment {path} was replaced while being adopted")
        return new, (mmap.mmap(fd, nbytes) if nbytes else None)
    finally:
        os.close(fd)


def remove_segment(directory: Path, name: str) -> None:
    """Unlink a segment; processes that map it keep their pages until they unmap."""
    if NAME.match(name):
        (directory / name).unlink(missing_ok=True)


def sweep(directory: Path, alive: Callable[[int], bool] | None = None) -> list[str]:
    """Remove the segments in ``directory`` whose owner process is gone; return their names."""
    from warpstore.server.runtime import pid_alive

    is_alive = alive or pid_alive
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if NAME.match(name) and not is_alive(int(name.split("-")[1])):
            (directory / name).unlink(missing_ok=True)
            removed.append(name)
    return removed


def job_segment_dirs(
    job: str | None = None, root: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """Every directory that may hold this job's segments on this node."""
    from warpstore.server.runtime import job_dir, job_id

    job = job or job_id()
    explicit = os.environ.get("WARPSTORE_SHM_DIR")
    bases = [Path(explicit) / job] if explicit else []
    bases.append(Path("/dev/shm") / f"warpstore-{os.getuid()}" / job)
    for base in bases:
        if base.is_dir():
            yield from (p for p in base.iterdir() if p.is_dir() and not p.is_symlink())
    nodes = job_dir(root) / "nodes"
    if nodes.is_dir():
        yield from (p for p in nodes.glob("*/*/shm") if p.is_dir())


def leftover_segments(
    job: str | None = None, root: str | os.PathLike[str] | None = None
) -> list[Path]:
    """This job's segments still on this node (what a teardown check reports)."""
    from warpstore.server import direct  # small objects beside the segments

    dirs = [d for d in job_segment_dirs(job, root) if not direct.is_area(d)]
    return sorted(
        [d / n for d in dirs for n in os.listdir(d) if NAME.match(n)]
        + [f for d in dirs for f in direct.leftover_files(d)]
    )


def cleanup_job(
    job: str | None = None,
    root: str | os.PathLike[str] | None = None,
    *,
    everything: bool = False,
) -> list[Path]:
    """Teardown: remove this job's segments on this node; return what was removed.

    By default only those of dead processes (safe while servers still run);
    ``everything=True`` once the job's processes are all gone. Empty
    segment directories are removed too.
    """
    from warpstore.server import direct  # small objects beside the segments

    removed: list[Path] = []
    for directory in list(job_segment_dirs(job, root)):
        if direct.is_area(directory):
            continue  # swept with its segment directory
        removed.extend(direct.sweep_areas(directory, everything=everything))
        if everything:
            for name in os.listdir(directory):
                if NAME.match(name):
                    (directory / name).unlink(missing_ok=True)
                    removed.append(directory / name)
        else:
            removed.extend(directory / n for n in sweep(directory))
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty
    return removed


def _segment_tag(token: bytes, key: bytes, body: bytes) -> bytes:
    return hmac.digest(token, b"warpstore-segment\0" + key + b"\0" + body, "sha256")


def pack_segment_reply(token: bytes, key: bytes, name: str, nbytes: int) -> bytes:
    """The GET_SHM reply body: name and size, MAC'd with the job token and bound to ``key``."""
    body = f"{name}\0{nbytes}".encode("ascii")
    return body + _segment_tag(token, key, body)


def unpack_segment_reply(token: bytes, key: bytes, data: bytes) -> tuple[str, int]:
    """Inverse of :func:`pack_segment_reply`; refuses anything whose MAC does not verify."""
    body, tag = data[:-32], data[-32:]
    if len(data) <= 32 or not hmac.compare_digest(tag, _segment_tag(token, key, body)):
        raise SegmentError("segment reply failed authentication")
    try:
        name, size = body.decode("ascii").split("\0")
        return _name_ok(name), int(size)
    except ValueError:
        raise SegmentError("malformed segment reply") from None
