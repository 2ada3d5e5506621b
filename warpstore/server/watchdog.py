"""Servers that end with their launcher: a lease the launcher renews, and a watcher.

``warpstore launch`` normally stops every server it started. If it is killed
in a way it cannot handle (SIGKILL, the OOM killer, a node failure), nothing
would, and the servers would hold memory and ports on a node until the
allocation ends, or for good on a laptop or login node. So the launcher
writes a small *lease* file in the job directory and renews it every few
seconds; every server it starts, and every elastic server a task starts,
finds the lease through ``WARPSTORE_LAUNCHER_LEASE`` and watches it:

* on the launcher's own host it checks the launcher's pid *and* its start
  time (a reused pid is not the launcher), so it notices a SIGKILL within
  about a second;
* on other hosts (the job directory is on a shared file system) it notices
  that the lease stopped changing for ``expires_s`` seconds, timed with its
  own monotonic clock, so clock skew between nodes does not matter.

When the launcher is gone the server sends itself SIGTERM: the same orderly
stop as any other (it writes its report and removes its ``server.json``).

The lease is also how the launcher stops its servers at the end of a job
(:meth:`Lease.request_stop`): a file on the job's file system, so the
batch shell's teardown never needs the servers' network, which may be one
it cannot use (Slingshot's cxi gives the batch step no VNI).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warpstore.server.runtime import pid_alive

__all__ = ["LEASE_ENV", "Lease", "pid_start_time", "watch_launcher"]

LEASE_ENV = "WARPSTORE_LAUNCHER_LEASE"
RENEW_S = 2.0
# Generous: a false alarm loses the job's data, while a late stop only matters to a
# launcher killed on another host inside an allocation that goes on (else the
# scheduler ends everything). Shared file systems stall; nodes get busy.
EXPIRES_S = 300.0

logger = logging.getLogger("warpstore.server.watchdog")


def pid_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (the state)
    except (OSError, IndexError, ValueError):
        return None


class Lease:
    """The launcher's side: write the lease and renew it from a daemon thread."""

    def __init__(self, path: Path, renew_s: float = RENEW_S, expires_s: float = EXPIRES_S) -> None:
        self.path = path
        self.renew_s = renew_s
        self.expires_s = float(os.environ.get("WARPSTORE_LEASE_EXPIRES_S", expires_s))
        self._stop = threading.Event()
        self._beat = 0
        self._thread = threading.Thread(target=self._run, name="warpstore-lease", daemon=True)
        self._write()

    def _write(self, stop: bool = False) -> None:
        from warpstore.server.runtime import write_json_atomic

        self._beat += 1
        write_json_atomic(
            self.path,
            {
                "pid": os.getpid(),
                "pid_start": pid_start_time(os.getpid()),
                "host": socket.gethostname(),
                "beat": self._beat,
                "renew_s": self.renew_s,
                "expires_s": self.expires_s,
                "stop": stop,
            },
        )

    def _run(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self._write()
            except OSError as e:  # a full or flaky file system: keep trying
                logger.warning("could not renew the launcher lease %s: %s", self.path, e)

    def start(self) -> Lease:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (servers still running will stop once the lease expires)."""
        self._stop.set()

    def request_stop(self) -> None:
        """Ask every server watching this lease to stop now (they do within ``poll_s``)."""
        self.stop()
        if self._thread.is_alive():
            self._thread.join(self.renew_s + 5)
        self._write(stop=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def launcher_gone(lease: dict[str, Any]) -> str | None:
    """Why the launcher described by ``lease`` is known dead, if this host can tell."""
    if lease.get("host") != socket.gethostname():
        return None
    pid = int(lease.get("pid", 0))
    if not pid_alive(pid):
        return f"launcher pid {pid} has exited"
    started = lease.get("pid_start")
    if started is not None and pid_start_time(pid) not in (None, started):
        return f"launcher pid {pid} has exited (the pid now belongs to another process)"
    return None


def watch_launcher(
    on_lost: Callable[[str], None] | None = None,
    path: str | None = None,
    poll_s: float = 1.0,
    stop: threading.Event | None = None,
) -> threading.Thread | None:
    """Watch the launcher's lease; call ``on_lost(reason)`` once it is gone or says stop.

    The lease is ``path``, else ``$WARPSTORE_LAUNCHER_LEASE``. The default
    ``on_lost`` logs the reason and sends this process SIGTERM, so the server's
    own signal handler stops it in order. Returns the daemon thread, or
    ``None`` when there is no lease to watch (a server started by hand).
    """
    lease_path = path or os.environ.get(LEASE_ENV)
    if not lease_path:
        return None

    def lost(reason: str) -> None:
        logger.log(logging.INFO if "asked" in reason else logging.WARNING, "stopping: %s", reason)
        os.kill(os.getpid(), signal.SIGTERM)

    callback = on_lost or lost
    stopped = stop or threading.Event()

    def run() -> None:
        last_beat: Any = None
        changed = time.monotonic()
        pids_comparable: bool | None = None  # decided at the first reading
        while not stopped.is_set():
            lease = _read(Path(lease_path))
            now = time.monotonic()
            if lease is not None:
                reason = launcher_gone(lease) if pids_comparable is not False else None
                if pids_comparable is None:
                    # A launcher that looks dead at once is one whose pid we cannot see
                    # (a container with its own pid namespace, same host name): trust
                    # only the lease's renewal then, never a pid.
                    pids_comparable, reason = reason is None, None
                if lease.get("stop"):
                    reason = "the launcher asked its servers to stop (end of the job)"
                if reason:
                    callback(reason)
                    return
                if lease.get("beat") != last_beat:
                    last_beat, changed = lease.get("beat"), now
                expires = float(lease.get("expires_s", EXPIRES_S))
            else:
                expires = EXPIRES_S
            if now - changed > expires:
                callback(
                    f"the launcher's lease {lease_path} was not renewed for {expires:g} s "
                    "(the launcher is gone)"
                )
                return
            # on the launcher's own host the lease is read more often: one node's worth
            # of reads costs nothing, and the end of every job waits for it
            here = lease is not None and lease.get("host") == socket.gethostname()
            stopped.wait(min(poll_s, 0.2) if here else poll_s)

    thread = threading.Thread(target=run, name="warpstore-launcher-watch", daemon=True)
    thread.start()
    return thread
