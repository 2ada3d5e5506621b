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

Recycling (the put path's speed): filling *new* tmpfs pages costs about 2x
a memcpy (the kernel allocates, clears or inserts every 4 KiB page), while
writing into pages a file already has costs a memcpy. So an evicted
segment that nobody maps any more is not unlinked but renamed into
``<directory>/pool/p-<server pid>-<random>`` (:func:`recycle_segment`), and
the next same-node put claims it (:func:`claim_segment`: an atomic rename
to ``c-<pid>-...``, then ``ftruncate`` to its size) and overwrites it. The
pool is small and short-lived (the server bounds it, see
:class:`warpstore.server.core.ServerCore`). *Nobody maps it* is decided by
``flock``: every reader holds a shared lock on a segment for as long as its
mapping lives (and checks, once locked, that the name still leads to the
same file); the recycler renames first and then needs an exclusive lock
without waiting, else it unlinks as before. A reader's view therefore
never changes under it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hmac
import mmap
import os
import re
import stat
import uuid
import weakref
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
    "allocated_file",
    "claim_segment",
    "cleanup_job",
    "create_segment",
    "ensure_private_dir",
    "job_segment_dirs",
    "leftover_segments",
    "open_segment",
    "pack_segment_reply",
    "pool_directory",
    "recycle_segment",
    "remove_empty_job_dirs",
    "remove_segment",
    "reserve_segment",
    "shm_directory",
    "sweep",
    "unpack_segment_reply",
    "write_segment",
]

INLINE_MAX = 64 * 1024  # smaller objects go through the socket: a mapping costs more
NAME = re.compile(r"^[csp]-[0-9]{1,10}-[0-9a-f]{32}$")
POOL = "pool"  # sub-directory of recycled segments
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
    claimed = claim_segment(directory, nbytes, prefix) if nbytes else None
    if claimed is not None:  # a recycled segment: its pages exist already
        name, fd = claimed
        try:
            return name, mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED | _POPULATE)
        finally:
            os.close(fd)
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex}"
    fd = allocated_file(directory / name, nbytes)
    try:
        if nbytes == 0:
            return name, None
        # MAP_POPULATE: the pages exist (fallocate); map them all in one call
        # rather than one fault per page while the writer fills them.
        return name, mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED | _POPULATE)
    finally:
        os.close(fd)


def allocated_file(path: Path, nbytes: int) -> int:
    """A new segment file (0600, ``O_EXCL``) with ``nbytes`` of pages allocated now
    (``posix_fallocate``): a writable descriptor, the caller's to close.

    Raises:
        StoreFullError: when the file system cannot hold it (nothing is left behind).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW_CLOEXEC, 0o600)
    try:
        if nbytes:
            os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise StoreFullError(
                f"no room for a {nbytes}-byte segment in {path.parent}: {e.strerror}"
            ) from None
        raise
    return fd


def reserve_segment(directory: Path, nbytes: int) -> tuple[str, int]:
    """A new segment of ``nbytes`` with its pages allocated now, and a writable descriptor.

    For a writer that knows the size before the data arrives (a node fetching
    another node's object): allocating tmpfs pages costs about as much as
    the copy into them, so doing it while the data is still on the network
    halves the copy that follows (:func:`write_segment` with ``reserved``).
    A recycled segment from the pool is taken when there is one.

    Raises:
        StoreFullError: when the file system cannot hold it.
    """
    claimed = claim_segment(directory, nbytes)
    if claimed is not None:
        return claimed
    name = f"c-{os.getpid()}-{uuid.uuid4().hex}"
    return name, allocated_file(directory / name, nbytes)


def write_segment(
    directory: Path, parts: Sequence[Any], reserved: tuple[str, int] | None = None
) -> str:
    """A new segment holding ``parts`` back to back, written with ``pwritev(2)``.

    One copy, straight from the caller's buffers (a serialized message's
    header and an array's own memory) into the segment, and no mapping:
    on tmpfs this measured 2x faster than ``posix_fallocate`` + a populated
    mapping + a copy, because the kernel allocates the pages as it writes.
    A recycled segment from the pool is used when there is one (its pages
    exist: overwriting them measured about a memcpy, new pages about two).

    ``reserved``: a segment from :func:`reserve_segment` of exactly this size
    to write into (its descriptor is closed here).

    Raises:
        StoreFullError: when the file system cannot hold it.
    """
    views = [m for m in (memoryview(p).cast("B") for p in parts) if m.nbytes]
    total = sum(v.nbytes for v in views)
    claimed = reserved or (claim_segment(directory, total) if total else None)
    if claimed is not None:  # a recycled segment: overwrite its pages (about a memcpy)
        name, fd = claimed
    else:
        name = f"c-{os.getpid()}-{uuid.uuid4().hex}"
        fd = os.open(
            directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW_CLOEXEC, 0o600
        )
    path = directory / name
    offset = 0
    try:
        while views:
            n = os.pwritev(fd, views[:_IOV_MAX], offset)
            offset += n
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
    lock: bool = True,
) -> mmap.mmap | None:
    """Map an existing segment after checking it (``None`` for an empty one).

    A read-only mapping holds a shared ``flock`` on the segment for as long
    as it lives (so it is never recycled under it: see the module docs);
    ``lock=False`` is for a writer's own, not yet registered segment.

    Raises:
        SegmentError: bad name, missing file, not ours, wrong mode or size, or
            being recycled.
    """
    path = directory / _name_ok(name)
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | _O_NOFOLLOW_CLOEXEC)
    except OSError as e:
        raise SegmentError(f"cannot open segment {path}: {e.strerror}") from None
    keep = False
    try:
        _check(fd, path, nbytes)
        if nbytes == 0:
            return None
        if writable:
            return mmap.mmap(fd, nbytes)
        if lock:
            _lock_shared(fd, path)
        flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
        cls = SegmentMap if views else CopyMap
        mapping = cls(fd, nbytes, flags=flags, prot=mmap.PROT_READ)
        if lock:  # the lock lives as long as the mapping
            weakref.finalize(mapping, os.close, fd)
            keep = True
        return mapping
    finally:
        if not keep:
            os.close(fd)


_nofile_raised = False


def _raise_nofile_limit() -> None:
    """Each live read-only mapping keeps its segment's descriptor (for the lock):
    lift the soft limit on open files to the hard one, once, as Ray's object store
    clients do, so that many live views do not crowd out the program's own files."""
    global _nofile_raised
    if _nofile_raised:
        return
    _nofile_raised = True
    import resource

    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _lock_shared(fd: int, path: Path) -> None:
    """Take a reader's shared lock and check the name still leads to this file."""
    _raise_nofile_limit()
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SegmentError(f"segment {path} is being recycled") from None
    try:
        now = os.lstat(path)
    except OSError:
        now = None
    st = os.fstat(fd)
    if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        raise SegmentError(f"segment {path} was evicted while being opened")


def pool_directory(directory: Path) -> Path:
    """Where ``directory``'s recycled segments wait (created 0700 and checked)."""
    return ensure_private_dir(directory / POOL)


def recycle_segment(directory: Path, name: str) -> str | None:
    """Move an evicted segment into the pool if no process maps it; else unlink it.

    Returns the pool name, or ``None`` when it was unlinked. The caller (the
    server) must already have dropped its own mapping of it.
    """
    if not NAME.match(name):
        return None
    pool = directory / POOL
    new = f"p-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        os.rename(directory / name, pool / new)  # new readers can no longer find it
        fd = os.open(pool / new, os.O_RDONLY | _O_NOFOLLOW_CLOEXEC)
    except OSError:
        (directory / name).unlink(missing_ok=True)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a reader still maps it: its pages stay until it unmaps
        (pool / new).unlink(missing_ok=True)
        return None
    finally:
        os.close(fd)
    return new


def claim_segment(directory: Path, nbytes: int, prefix: str = "c") -> tuple[str, int] | None:
    """Take a recycled segment for a new object of ``nbytes``: ``(name, writable fd)``.

    Picks the smallest pooled file of at least ``nbytes`` (else the largest),
    renames it ``<prefix>-<pid>-<random>`` (the rename is the claim: of two
    writers only one can win it) and cuts it to ``nbytes``. ``None`` when the
    pool is empty or missing.
    """
    pool = directory / POOL
    try:
        entries = [(e.stat(follow_symlinks=False).st_size, e.name) for e in os.scandir(pool)]
    except OSError:
        return None
    entries = [(size, n) for size, n in entries if NAME.match(n) and n.startswith("p-")]
    entries.sort(key=lambda e: (e[0] < nbytes, e[0] if e[0] >= nbytes else -e[0]))
    for _, pooled in entries:
        name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            os.rename(pool / pooled, directory / name)
        except OSError:
            continue  # another writer claimed it first
        try:
            fd = os.open(directory / name, os.O_RDWR | _O_NOFOLLOW_CLOEXEC)
        except OSError:
            continue
        try:
            _check(fd, directory / name, None)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody maps it (paranoia)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.ftruncate(fd, nbytes)
        except (OSError, SegmentError):
            os.close(fd)
            (directory / name).unlink(missing_ok=True)
            continue
        return name, fd
    return None


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
    """Remove the segments in ``directory`` (and its pool) whose owner process is gone.

    Returns their names (pooled ones as ``pool/<name>``).
    """
    from warpstore.server.runtime import pid_alive

    is_alive = alive or pid_alive
    removed = []
    for where, label in ((directory, ""), (directory / POOL, f"{POOL}/")):
        try:
            names = os.listdir(where)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if NAME.match(name) and not is_alive(int(name.split("-")[1])):
                (where / name).unlink(missing_ok=True)
                removed.append(label + name)
    return removed


def _dir_node(name: str) -> str:
    """The node of a ``<node>-<transport>`` segment directory (or of its ``.small-<pid>`` area)."""
    m = re.match(r"^(.+)\.small-[0-9]{1,10}$", name)
    return (m.group(1) if m else name).rsplit("-", 1)[0]


def job_segment_dirs(
    job: str | None = None,
    root: str | os.PathLike[str] | None = None,
    node: str | None = None,
) -> Iterator[Path]:
    """Every directory that may hold this job's segments on this node.

    With ``node``, only that node's: several nodes of a job may share one host
    (Slurm's several slurmd per host, the tests' simulated nodes), and each
    node's check must report only its own leftovers.
    """
    from warpstore.server.runtime import job_id, runtime_root

    job = (job or job_id()).replace("/", "_")
    explicit = os.environ.get("WARPSTORE_SHM_DIR")
    bases = [Path(explicit) / job] if explicit else []
    bases.append(Path("/dev/shm") / f"warpstore-{os.getuid()}" / job)
    for base in bases:
        if base.is_dir():
            yield from (
                p
                for p in base.iterdir()
                if p.is_dir()
                and not p.is_symlink()
                and (node is None or _dir_node(p.name) == node)
            )
    nodes = (Path(root) if root else runtime_root()) / job / "nodes"  # looked at, not made
    if nodes.is_dir():
        found = nodes.glob("*/*/shm") if node is None else (nodes / node).glob("*/shm")
        yield from (p for p in found if p.is_dir())


def _segment_files(directory: Path) -> list[Path]:
    """The segment files in ``directory`` and in its pool."""
    out: list[Path] = []
    for where in (directory, directory / POOL):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            out.extend(where / n for n in os.listdir(where) if NAME.match(n))
    return out


def leftover_segments(
    job: str | None = None,
    root: str | os.PathLike[str] | None = None,
    node: str | None = None,
) -> list[Path]:
    """This job's segments still on this node (what a teardown check reports);
    with ``node``, only that node's (see :func:`job_segment_dirs`)."""
    from warpstore.server import direct  # small objects beside the segments

    dirs = [d for d in job_segment_dirs(job, root, node) if not direct.is_area(d)]
    return sorted(
        [p for d in dirs for p in _segment_files(d)]
        + [f for d in dirs for f in direct.leftover_files(d)]
    )


def cleanup_job(
    job: str | None = None,
    root: str | os.PathLike[str] | None = None,
    *,
    everything: bool = False,
    remove_dirs: bool = True,
    node: str | None = None,
) -> list[Path]:
    """Teardown: remove this job's segments on this node; return what was removed.

    By default only those of dead processes (safe while servers still run);
    ``everything=True`` once the job's processes are all gone. Empty
    segment directories are removed too (also the job's directory under
    ``/dev/shm/warpstore-<uid>`` once empty) unless ``remove_dirs=False``:
    a server that stops while others of the job on its node still run must
    not remove their (momentarily empty) directories. With ``node``, only
    that node's directories (see :func:`job_segment_dirs`).
    """
    from warpstore.server import direct  # small objects beside the segments
    from warpstore.server.runtime import job_id

    job = (job or job_id()).replace("/", "_")
    removed: list[Path] = []
    for directory in list(job_segment_dirs(job, root, node)):
        if direct.is_area(directory):
            continue  # swept with its segment directory
        removed.extend(direct.sweep_areas(directory, everything=everything))
        if everything:
            for path in _segment_files(directory):
                path.unlink(missing_ok=True)
                removed.append(path)
        else:
            removed.extend(directory / n for n in sweep(directory))
        parent = [directory.parent] if directory.parent.name == job else []
        for empty in [directory / POOL, directory, *parent] if remove_dirs else []:
            with contextlib.suppress(OSError):
                empty.rmdir()  # only when empty
    return removed


def remove_empty_job_dirs(job: str | None = None) -> list[Path]:
    """Remove ``job``'s directories under ``/dev/shm/warpstore-<uid>`` (and
    ``$WARPSTORE_SHM_DIR``) that hold nothing: what a killed server leaves.

    Never removes a file: a directory with a segment in it stays.
    """
    from warpstore.server.runtime import job_id

    job = (job or job_id()).replace("/", "_")
    explicit = os.environ.get("WARPSTORE_SHM_DIR")
    bases = [Path(explicit) / job] if explicit else []
    bases.append(Path("/dev/shm") / f"warpstore-{os.getuid()}" / job)
    removed = []
    for base in bases:
        if not base.is_dir() or base.is_symlink():
            continue
        for directory in sorted(base.rglob("*"), key=lambda p: -len(p.parts)):
            if directory.is_dir() and not directory.is_symlink():
                with contextlib.suppress(OSError):
                    directory.rmdir()
                    removed.append(directory)
        with contextlib.suppress(OSError):
            base.rmdir()
            removed.append(base)
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
