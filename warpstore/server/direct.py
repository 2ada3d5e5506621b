"""Small same-node objects as files of the server's shared-memory directory.

A 1 KiB put+get through the node server is two socket round trips to one
Python thread, each with protocol-v2 authentication: about 0.4x of a raw
Redis client, and more client processes do not help because the server is
one thread. Same-node clients are the job's own processes, under the job's
user, and the server's 0700 shared-memory directory is already their trust
boundary (:mod:`warpstore.server.shm`), so for objects under
:data:`~warpstore.server.shm.INLINE_MAX` they skip the server entirely:

* the *area* is ``<shm dir>.small-<server pid>/`` (0700), beside the
  server's segment directory on the same RAM file system, created by the
  server when it starts and removed when it stops (or, after a crash, by the
  next server's or the teardown's sweep: the pid says whose it is);
* an object is the file ``k-<keyed hash of its key>`` (0600) in the area
  (BLAKE2b keyed with a key derived from the job token, and the usage file
  carries a check value of the token: a connector with another token does
  not use the area, and its requests reach the server, which refuses them
  as before). A put writes an unnamed ``O_TMPFILE`` (on file systems without
  it, ``t-<pid>-<random>`` with ``O_CREAT | O_EXCL | O_NOFOLLOW``) and
  publishes it with ``link(2)`` (so it appears complete or not at all, and a
  key that exists is never silently replaced behind the byte count); a get
  opens ``O_NOFOLLOW``, checks regular/ours/0600 and reads; ``exists`` is a
  ``stat``; evict renames the file to a temporary name first (only one
  evictor wins, so its size is subtracted once) and unlinks it;
* ``usage`` (0600, mapped by everyone) has a header (the memory limit, the
  bytes the server itself holds or promised, and, when there is a limit, the
  bytes of these objects) and one record per process with what it added:
  objects, bytes and the operation counters of the server's report. A
  process adds to its own record without a lock (threads take a thread
  lock; a forked child claims a record of its own), so gets never queue on
  one lock; the server sums the records. With a memory limit, a put also
  takes its bytes from the header's count under ``flock(2)``, which the
  server takes too when it checks its own room, so the limit covers both and
  ``StoreFullError`` still comes from the server: a direct put that does not
  fit goes over the socket, and the server drops node-local cache copies or
  refuses it. Without a limit the server never takes the lock; with one, a
  client stopped (``SIGSTOP``) inside its few-instruction critical section
  holds up the server's room checks until it continues (a client that dies
  releases the lock with its file);
* the server holds an exclusive ``flock`` on the area's ``alive`` file for
  its lifetime; a client probes it (one non-blocking ``flock``) before each
  operation, so objects die with their server exactly as the ones in its
  table do: after a crash a get goes to the socket and fails clearly;
* the server looks in the area too: remote ``GET``, ``EXISTS``, ``EVICT``
  and ``STATUS`` see these objects, and a socket ``PUT`` of a key replaces
  its file.

A key is meant to be written once (as every connector's keys are): a key
written both through the socket and directly is served from its file.

A writer that dies with a named temporary file leaves ``t-<pid>-...``; :func:`sweep_area` removes
those of dead processes (the server runs it when it starts and at most once
a minute while serving), :func:`sweep_areas` whole areas of dead servers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import mmap
import os
import re
import shutil
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AREA",
    "COUNTERS",
    "DirectArea",
    "SweepTimer",
    "area_path",
    "direct_bytes",
    "is_area",
    "leftover_files",
    "leftover_names",
    "set_server_bytes",
    "sweep_area",
    "sweep_areas",
]

AREA = re.compile(r"^(.+)\.small-([0-9]{1,10})$")
_TEMP = re.compile(r"^t-([0-9]{1,10})-[0-9a-f]{32}$")
_OBJECT = re.compile(r"^k-[0-9a-f]{32}$")
# Objects are spread over 16 subdirectories (by the first digit of their name): a
# link, rename or unlink takes its directory's lock, and with many processes on few
# cores one preempted holder would stall every other writer of a single directory.
_SHARDS = "0123456789abcdef"
_USAGE = "usage"
_ALIVE = "alive"
# The usage file: a header of int64s, then one record per process that used the
# area. Only the header's limit-counted bytes need the lock (and only when there is
# a memory limit); each process adds to its own record without it, so processes do
# not queue on one lock for every get. The server sums the records for its status.
_BYTES, _SERVER, _LIMIT, _NRECORDS = 0, 1, 2, 3  # header slots
_CHECK = 96  # offset of the token's check value (32 bytes)
_HEADER = 128
# record slots: owner pid, then what it added (net bytes/objects may be negative)
_PID, _RBYTES, _ROBJECTS, _PUT, _GET, _EXISTS, _EVICT, _BYTES_IN, _BYTES_OUT = range(9)
COUNTERS = ("PUT", "GET", "EXISTS", "EVICT")
_RECORD = 128
_RECORDS = 1024  # processes per node with a record of their own; others share record 0
_USAGE_SIZE = _HEADER + _RECORDS * _RECORD
_Q = struct.Struct("<q")
_F = os.O_NOFOLLOW | os.O_CLOEXEC


def area_path(shm_dir: str | os.PathLike[str], server_pid: int) -> Path:
    """The area of the server with pid ``server_pid`` whose segments are in ``shm_dir``."""
    path = Path(shm_dir)
    return path.parent / f"{path.name}.small-{server_pid}"


def is_area(path: Path) -> bool:
    """Is ``path`` a small-object area (not a segment directory)?"""
    return AREA.match(path.name) is not None


def direct_bytes(usage: Any) -> int:
    """Bytes of the area's objects as the memory limit counts them (kept only when
    there is a limit), from the usage map (hold :meth:`DirectArea.locked`)."""
    return int(_Q.unpack_from(usage, _BYTES * 8)[0])


def set_server_bytes(usage: Any, nbytes: int) -> None:
    """Record what the server holds or promised (hold :meth:`DirectArea.locked`)."""
    _Q.pack_into(usage, _SERVER * 8, nbytes)


def _derive(token: bytes, purpose: bytes) -> bytes:
    return hmac.digest(token, b"warpstore/2 direct " + purpose, "sha256")


def _check(fd: int) -> int:
    """Regular, ours, 0600: the object's size; else ``-1`` (treated as absent)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return -1
    return st.st_size


class DirectArea:
    """One process's handle on a server's area (the server's own, or a client's).

    Args:
        path: the area directory.
        create: the server creating it (with ``memory_limit``); clients open it
            and refuse one that is not a private directory of ours.
    """

    def __init__(
        self,
        path: Path,
        token: bytes,
        *,
        create: bool = False,
        memory_limit: int | None = None,
    ) -> None:
        self.path = path
        self._name_key = _derive(token, b"names")
        check = _derive(token, b"check")
        self._prefix = str(path) + "/"
        self._alive_fd = self._dirfd = -1
        if create:
            path.mkdir(mode=0o700)
            for shard in _SHARDS:
                (path / shard).mkdir(mode=0o700)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise OSError(errno.EPERM, f"{path} is not a private directory of ours")
        if create:
            fd = os.open(path / _USAGE, os.O_RDWR | os.O_CREAT | os.O_EXCL | _F, 0o600)
            os.ftruncate(fd, _USAGE_SIZE)
            m = mmap.mmap(fd, _USAGE_SIZE)
            _Q.pack_into(m, _LIMIT * 8, -1 if memory_limit is None else memory_limit)
            m[_CHECK : _CHECK + 32] = check
            m.close()
            os.close(fd)
            # held (exclusively) until this process exits: clients see it die. Locked
            # before it gets its name, so an ``alive`` file is never seen unlocked
            # while its server lives.
            making = path / f"{_ALIVE}.new"
            self._alive_fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | _F, 0o600)
            fcntl.flock(self._alive_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(making, path / _ALIVE)
        else:
            self._alive_fd = os.open(path / _ALIVE, os.O_RDONLY | _F)
            if _check(self._alive_fd) < 0:
                os.close(self._alive_fd)
                raise OSError(errno.EPERM, f"{path}/{_ALIVE} is not a file of ours")
        self._owner = create
        self._tmpfile = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
        self._dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _F)
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing an fd
        self._pid = -1
        self._fd = -1
        self._record = 0  # offset of this process's record (record 0: shared, locked)
        self._map: mmap.mmap | None = None
        self._open()
        assert self._map is not None
        if not hmac.compare_digest(self._map[_CHECK : _CHECK + 32], check):
            self.close()
            raise OSError(errno.EACCES, f"{path} belongs to a job with another token")
        self._limited: bool = _Q.unpack_from(self._map, _LIMIT * 8)[0] >= 0

    def _name(self, key: bytes) -> str:
        digest = hashlib.blake2b(key, digest_size=16, key=self._name_key).hexdigest()
        return f"{self._prefix}{digest[0]}/k-{digest}"

    def _open(self) -> None:
        """(Re)open the usage file: a forked child must not share its parent's lock."""
        fd = os.open(self._prefix + _USAGE, os.O_RDWR | _F)
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.getuid()
            or st.st_mode & 0o077
            or st.st_size != _USAGE_SIZE
        ):
            os.close(fd)
            raise OSError(errno.EPERM, f"{self.path}/{_USAGE} is not a usage file of ours")
        self._fd, self._map, self._pid = fd, mmap.mmap(fd, _USAGE_SIZE), os.getpid()
        self._record = self._claim()

    def _claim(self) -> int:
        """A record of our own: a free one, or one whose process is gone (its counts stay)."""
        from warpstore.server.runtime import pid_alive

        assert self._map is not None
        m, pid = self._map, os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            used = int(_Q.unpack_from(m, _NRECORDS * 8)[0])
            for i in range(1, used):
                off = _HEADER + i * _RECORD
                owner = _Q.unpack_from(m, off)[0]
                if owner == pid or not pid_alive(owner):
                    _Q.pack_into(m, off, pid)
                    return off
            if used < 1:
                used = 1
            if used >= _RECORDS:
                return _HEADER  # record 0, shared under the lock
            off = _HEADER + used * _RECORD
            _Q.pack_into(m, off, pid)
            _Q.pack_into(m, _NRECORDS * 8, used + 1)
            return off
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def server_alive(self) -> bool:
        """Is the area's server still running? (It holds ``alive`` locked until it exits.)"""
        if self._owner:
            return True
        try:
            fcntl.flock(self._alive_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(self._alive_fd, fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        if self._dirfd >= 0:
            os.close(self._dirfd)
            self._dirfd = -1
        if self._alive_fd >= 0:
            os.close(self._alive_fd)
            self._alive_fd = -1
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
            os.close(self._fd)
            self._map = None

    def _acquire(self) -> mmap.mmap:
        self._thread_lock.acquire()
        try:
            if self._pid != os.getpid():
                self._open()
            assert self._map is not None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self._map

    def _release(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def locked(self) -> Iterator[mmap.mmap]:
        """Exclusive use of the usage file (this thread and process only)."""
        m = self._acquire()
        try:
            yield m
        finally:
            self._release()

    def _add(self, *changes: tuple[int, int]) -> None:
        """Add to this process's record (without the file lock unless it is the shared one)."""
        with self._thread_lock:
            if self._pid != os.getpid():
                self._open()  # a forked child: a record (and a lock) of its own
            m, base = self._map, self._record
            assert m is not None
            shared = base == _HEADER
            if shared:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                for slot, by in changes:
                    off = base + slot * 8
                    _Q.pack_into(m, off, _Q.unpack_from(m, off)[0] + by)
            finally:
                if shared:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _limit_add(self, nbytes: int) -> bool:
        """With a memory limit: take ``nbytes`` of it (``False``: they do not fit) or give
        them back (negative), under the lock, with what the server holds counted too."""
        m = self._acquire()
        try:
            used = _Q.unpack_from(m, _BYTES * 8)[0]
            if nbytes > 0:
                server = _Q.unpack_from(m, _SERVER * 8)[0]
                if used + server + nbytes > _Q.unpack_from(m, _LIMIT * 8)[0]:
                    return False
            _Q.pack_into(m, _BYTES * 8, used + nbytes)
            return True
        finally:
            self._release()

    # -- what clients and the server both do ---------------------------------------

    def _new_file(self) -> tuple[int, str | None]:
        """A file to write an object into: unnamed (``O_TMPFILE``: nothing to remove if we
        die, no directory entry until it is complete) or, where the file system has no
        ``O_TMPFILE``, ``t-<pid>-<random>``. ``(-1, None)`` when the area is gone."""
        if self._tmpfile:
            try:
                return os.open(self.path, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600), None
            except FileNotFoundError:
                return -1, None
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._tmpfile = False
        temp = f"{self._prefix}t-{os.getpid()}-{os.urandom(16).hex()}"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _F, 0o600), temp
        except FileNotFoundError:
            return -1, None

    def put(self, key: bytes, parts: Sequence[Any]) -> bool:
        """Store ``parts`` (back to back) as ``key``; ``False`` when it does not fit
        (the caller sends it to the server, which decides) or the area is gone."""
        if not self.server_alive():
            return False
        views = [memoryview(p).cast("B") for p in parts]
        nbytes = sum(v.nbytes for v in views)
        fd, temp = self._new_file()
        if fd < 0:
            return False  # the server stopped and its area went with it
        try:
            if os.writev(fd, views) != nbytes:  # tmpfs writes all or fails; be sure anyway
                raise OSError(errno.EIO, f"short write of a small object in {self.path}")
            if self._limited and not self._limit_add(nbytes):
                return False
            self._add((_RBYTES, nbytes), (_ROBJECTS, 1), (_PUT, 1), (_BYTES_IN, nbytes))
            final = self._name(key)

            # published complete, by one link: an unnamed file through /proc (linkat
            # with AT_SYMLINK_FOLLOW), a named one directly
            # (a dir_fd makes Python call linkat, not link, which would link the
            # /proc symlink itself)
            def publish() -> None:
                if temp is None:
                    name = final[len(self._prefix) :]
                    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=self._dirfd)
                else:
                    os.link(temp, final, follow_symlinks=False)

            try:
                try:
                    publish()
                except FileExistsError:  # written before: replace it, counting it out once
                    self.evict(key, count=False)
                    publish()
            except BaseException:
                self._add((_RBYTES, -nbytes), (_ROBJECTS, -1), (_PUT, -1), (_BYTES_IN, -nbytes))
                if self._limited:
                    self._limit_add(-nbytes)
                raise
            return True
        finally:
            os.close(fd)
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)

    def get(self, key: bytes, count: bool = True) -> bytearray | None:
        """The object's bytes (a private, writable copy), or ``None`` if it is not here."""
        if not self.server_alive():
            return None
        try:
            fd = os.open(self._name(key), os.O_RDONLY | _F)
        except OSError:
            return None
        try:
            size = _check(fd)
            if size < 0:
                return None
            buf = bytearray(size)
            if size and os.readv(fd, [buf]) != size:
                return None
        finally:
            os.close(fd)
        if count:
            self._add((_GET, 1), (_BYTES_OUT, size))
        return buf

    def exists(self, key: bytes, count: bool = True) -> bool:
        if not self.server_alive():
            return False
        try:
            st = os.lstat(self._name(key))
        except OSError:
            return False
        found = stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
        if found and count:
            self._add((_EXISTS, 1))
        return found

    def evict(self, key: bytes, count: bool = True) -> bool:
        """Remove ``key``'s file; ``True`` if there was one. Readers that opened it
        keep reading it (the kernel frees it when they close it)."""
        if not self.server_alive():
            return False
        name = self._name(key)
        # in the same directory: a rename across directories takes a file-system-wide lock
        temp = f"{name[:-34]}t-{os.getpid()}-{os.urandom(16).hex()}"
        try:
            os.rename(name, temp)  # atomic: one evictor wins
        except OSError:
            return False
        try:
            size = os.lstat(temp).st_size
        finally:
            os.unlink(temp)
        if self._limited:
            self._limit_add(-size)
        self._add((_RBYTES, -size), (_ROBJECTS, -1), (_EVICT, 1 if count else 0))
        return True

    # -- the server's side ------------------------------------------------------------

    def publish_server_bytes(self, nbytes: int) -> None:
        """The bytes the server holds (and has promised), which direct puts must leave."""
        with self.locked() as m:
            set_server_bytes(m, nbytes)

    def usage(self) -> dict[str, int]:
        """Bytes, objects and operation counters of the area (for the server's status):
        the sum of every process's record. Read without the lock (each record has one
        writer), so a client stopped while holding it never stalls the server's status."""
        m = self._map
        assert m is not None
        n = max(1, _Q.unpack_from(m, _NRECORDS * 8)[0])
        total = [0] * 9
        for i in range(min(n, _RECORDS)):
            values = struct.unpack_from("<9q", m, _HEADER + i * _RECORD)
            for j in range(1, 9):
                total[j] += values[j]
        return {
            "bytes": total[_RBYTES],
            "objects": total[_ROBJECTS],
            "bytes_in": total[_BYTES_IN],
            "bytes_out": total[_BYTES_OUT],
            **{op: total[_PUT + i] for i, op in enumerate(COUNTERS)},
        }

    def remove(self) -> None:
        """Remove the whole area (the server stopping); open readers are unaffected."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def sweep_area(path: Path, alive: Callable[[int], bool] | None = None) -> list[str]:
    """Remove the temporary files of dead writers in an area; return their names."""
    from warpstore.server.runtime import pid_alive

    is_alive = alive or pid_alive
    removed = []
    for name in _names(path):
        m = _TEMP.match(name.rsplit("/", 1)[-1])
        if m and not is_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(path / name)
            removed.append(name)
    return removed


def _areas(shm_dir: Path) -> Iterator[tuple[Path, int]]:
    """The areas beside ``shm_dir`` that belong to it, with their servers' pids."""
    try:
        names = os.listdir(shm_dir.parent)
    except OSError:
        return
    for name in sorted(names):
        m = AREA.match(name)
        path = shm_dir.parent / name
        if m and m.group(1) == shm_dir.name and stat.S_ISDIR(os.lstat(path).st_mode):
            yield path, int(m.group(2))


def _locked(alive: Path) -> bool:
    """Is the area's server alive, by its lock (which a reused pid does not hold)?
    An area without an ``alive`` file yet counts as alive: it is being made."""
    try:
        fd = os.open(alive, os.O_RDONLY | _F)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops a lock we got
    return False


def sweep_areas(
    shm_dir: Path, alive: Callable[[int], bool] | None = None, everything: bool = False
) -> list[Path]:
    """Remove the areas of ``shm_dir``'s dead servers (every area with ``everything``)
    and dead writers' files in the others; return the objects and files that went."""
    from warpstore.server.runtime import pid_alive

    is_alive = alive or pid_alive
    removed: list[Path] = []
    for path, pid in list(_areas(shm_dir)):
        if everything or not is_alive(pid) or not _locked(path / _ALIVE):
            removed.extend(path / n for n in leftover_names(path))
            shutil.rmtree(path, ignore_errors=True)
        else:
            removed.extend(path / n for n in sweep_area(path, is_alive))
    return removed


def _names(path: Path) -> list[str]:
    """Every entry of an area and of its subdirectories, relative to it."""
    found: list[str] = []
    for sub in ("", *(f"{s}/" for s in _SHARDS)):
        with contextlib.suppress(OSError):
            found.extend(sub + n for n in os.listdir(f"{path}/{sub}"))
    return found


def leftover_names(path: Path) -> list[str]:
    """Objects and temporary files in an area, relative to it (what a teardown check
    reports)."""
    return sorted(
        n for n in _names(path) if _OBJECT.match(base := n.rsplit("/", 1)[-1]) or _TEMP.match(base)
    )


def leftover_files(shm_dir: Path) -> list[Path]:
    """Every object and temporary file in the areas of ``shm_dir``."""
    return [path / n for path, _ in _areas(shm_dir) for n in leftover_names(path)]


class SweepTimer:
    """Calls ``sweep`` at most once per ``interval`` seconds (from the server's loop)."""

    def __init__(self, sweep: Callable[[], object], interval: float = 60.0) -> None:
        self.sweep, self.interval, self.last = sweep, interval, time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.sweep()
