"""Segments made ahead of time: a same-node put then overwrites pages, not new ones.

Writing into *new* tmpfs pages costs about two memcpys (the kernel allocates and
clears each 4 KiB page as the writer faults on it); writing into pages a file
already has costs one. Evicted segments are recycled for that reason (see
:mod:`warpstore.server.shm`), but a workflow that keeps what it puts (no
evictions) fills new pages on every put. Plasma and Ray's object store avoid
this by allocating their whole memory up front; a node server does not know
its objects' sizes in advance, so it prepares one *spare*: after a same-node
put of ``n`` bytes, a background thread makes a pooled segment of ``n`` bytes
(``posix_fallocate``, which allocates the pages in the kernel without a fault
per page) while the server and its clients are idle, and the next put of that
size claims it like any recycled segment.

A spare is a pooled segment: it counts against the memory limit, is the first
thing dropped when room is needed, and expires with the pool. At most one is
being made at a time. ``WARPSTORE_SHM_SPARE=0`` turns this off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from pathlib import Path

from warpstore.exceptions import StoreFullError
from warpstore.server import shm

__all__ = ["SPARE_MIN", "SpareMaker", "make_spare"]

logger = logging.getLogger(__name__)

SPARE_MIN = 1 << 20  # below this, filling new pages costs too little to prepare for


def make_spare(directory: Path, nbytes: int) -> str:
    """A new pooled segment of ``nbytes`` whose pages exist; returns its pool name.

    Made in the pool under the server's own ``s-<pid>-...`` name, which writers
    never claim (they take ``p-`` names) and a crash leaves to the node's sweep,
    and renamed ``p-...`` only when complete, so a writer never claims a
    half-made one; it never appears among the directory's objects' segments.
    """
    uid = uuid.uuid4().hex
    made = directory / shm.POOL / f"s-{os.getpid()}-{uid}"
    os.close(shm.allocated_file(made, nbytes))
    name = f"p-{os.getpid()}-{uid}"
    try:
        os.rename(made, directory / shm.POOL / name)
    except OSError:
        made.unlink(missing_ok=True)
        raise
    return name


class SpareMaker:
    """One background thread that makes spares on request, one at a time.

    The server's thread asks (:meth:`request`) and collects the finished ones
    (:meth:`take`) into its pool accounting; :meth:`pending` is what is being
    made or made but not collected yet, which the memory limit counts.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._cond = threading.Condition()
        self._wanted = 0  # bytes requested or being made now
        self._done: list[tuple[str, int]] = []
        self._closed = False
        self.made = 0
        self._thread = threading.Thread(target=self._run, name="warpstore-spare", daemon=True)
        self._thread.start()

    def request(self, nbytes: int) -> bool:
        """Start making a spare of ``nbytes``; ``False`` if one is still being made."""
        with self._cond:
            if self._closed or self._wanted:
                return False
            self._wanted = nbytes
            self._cond.notify()
            return True

    def pending(self) -> int:
        """Bytes of spares being made or made and not taken yet."""
        with self._cond:
            return self._wanted + sum(n for _, n in self._done)

    def take(self) -> list[tuple[str, int]]:
        """The spares finished since the last call: ``(pool name, size)``."""
        with self._cond:
            done, self._done = self._done, []
            return done

    def wait(self, timeout: float = 30.0) -> None:
        """Until no spare is being made (a put that needs the room waits for it)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._wanted, timeout)

    def close(self) -> None:
        """Stop the thread and remove the spares nobody took."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(30)
        for name, _ in self.take():
            (self._directory / shm.POOL / name).unlink(missing_ok=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted > 0)
                if self._closed:
                    return
                nbytes = self._wanted
            name: str | None = None
            try:
                name = make_spare(self._directory, nbytes)
            except (OSError, StoreFullError) as e:  # full, say: the put fills new pages then
                logger.debug("could not make a %d-byte spare segment: %s", nbytes, e)
            with self._cond:
                if name is not None and self._closed:
                    with contextlib.suppress(OSError):
                        (self._directory / shm.POOL / name).unlink()
                elif name is not None:
                    self._done.append((name, nbytes))
                    self.made += 1
                self._wanted = 0
                self._cond.notify_all()
