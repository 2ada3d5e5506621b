"""Find this node's server, or start one: elastic, race-free, detached.

The first process on a node that needs a server starts it; every other one
connects to it. A ``flock`` on the node's ``server.lock`` makes "check, then
spawn" atomic across processes, so eight tasks starting at the same moment
end up with exactly one server. The server runs in its own session, so it
outlives the task that started it (its data must survive the task's exit);
the job's teardown or ``warpstore server stop`` ends it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warpstore.exceptions import ConnectorConnectionError
from warpstore.server.runtime import (
    file_lock,
    node_dir,
    node_name,
    open_log,
    pid_alive,
    process_state,
    read_json,
)

__all__ = [
    "ServerSettings",
    "ensure_server",
    "find_server",
    "is_our_server",
    "recorded_pid",
    "spawn_server",
    "stop_server",
]

logger = logging.getLogger(__name__)

ServerInfo = dict[str, Any]
Ping = Callable[[ServerInfo], bool]

_children: list[subprocess.Popen[bytes]] = []


class ServerSettings:
    """How to start a server on this node if none is running."""

    def __init__(
        self,
        transport: str = "zmq",
        *,
        address: str | None = None,
        interface: str | None = None,
        port: int | None = None,
        token_file: str | None = None,
        memory_limit: int | None = None,
        runtime_dir: str | None = None,
        extra_args: list[str] | None = None,
        token: bytes | None = None,
    ) -> None:
        self.transport = transport
        self.address = address
        self.interface = interface
        self.port = port
        self.token_file = token_file
        self.memory_limit = memory_limit
        self.runtime_dir = runtime_dir
        self.extra_args = extra_args or []
        self.token = token  # given directly (not in a file): passed in the environment

    def directory(self) -> Path:
        return node_dir(self.transport, self.runtime_dir)

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "warpstore",
            "server",
            "start",
            "--foreground",
            "--transport",
            self.transport,
        ]
        if self.address:
            cmd += ["--address", self.address]
        if self.interface:
            cmd += ["--interface", self.interface]
        if self.port:
            cmd += ["--port", str(self.port)]
        if self.token_file:
            cmd += ["--token-file", self.token_file]
        if self.memory_limit is not None:
            cmd += ["--memory-limit", str(self.memory_limit)]
        if self.runtime_dir:
            cmd += ["--runtime-dir", self.runtime_dir]
        return cmd + self.extra_args


def recorded_pid(info: ServerInfo) -> int | None:
    """The pid in a ``server.json``, or ``None`` if it is missing or not a number."""
    pid = info.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, (int, str)):
        return None
    try:
        value = int(pid)
    except ValueError:
        return None
    return value if value > 0 else None


def is_our_server(info: ServerInfo) -> bool:
    """Whether the pid in ``info`` is still the server that wrote it.

    A pid is reused after its process exits: the start time recorded in
    ``server.json`` (``pid_start``, from ``/proc/<pid>/stat``) must match the
    running process's; without one (or without ``/proc``), its command line
    must be a warpstore server's.
    """
    pid = recorded_pid(info)
    if pid is None or not pid_alive(pid):
        return False
    state = process_state(pid)
    recorded = info.get("pid_start")
    if state is not None and isinstance(recorded, int):
        return state[1] == recorded
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return state is None  # no /proc at all: pid existence is all there is
    return b"warpstore" in b" ".join(cmdline) and b"server" in cmdline


def find_server(
    directory: Path, ping: Ping | None = None, *, hung_error: bool = False
) -> ServerInfo | None:
    """The live server recorded in ``directory``, or ``None`` (stale files are ignored).

    Live means: the recorded pid is still the process that wrote the record
    (not a reused pid) and, with ``ping``, it answers an authenticated request
    quickly. A server that is ours but does not answer is hung (or stopped
    with SIGSTOP): with ``hung_error`` that is an error naming the pid and the
    fix, else it counts as not running.
    """
    info = read_json(directory / "server.json")
    if info is None:
        return None
    if recorded_pid(info) is None:
        logger.warning("ignoring %s: its pid %r is not a number", directory / "server.json",
                       info.get("pid"))
        return None
    if not is_our_server(info):
        return None
    if ping is not None and not ping(info):
        if hung_error:
            raise _hung(info, directory)
        return None
    return info


def _hung(info: ServerInfo, directory: Path) -> ConnectorConnectionError:
    pid = recorded_pid(info)
    state = process_state(pid or 0)
    stopped = state is not None and state[0] in ("T", "t")
    why = "is stopped (SIGSTOP)" if stopped else "does not answer"
    resume = f"resume it (kill -CONT {pid}) or " if stopped else ""
    return ConnectorConnectionError(
        f"the {info.get('transport', '')} server {info.get('address')} on node {node_name()} "
        f"(pid {pid}) {why}: {resume}stop it (warpstore server stop --transport "
        f"{info.get('transport', 'zmq')}, or kill {pid}) so that a new one can start; "
        f"its record is {directory / 'server.json'}"
    )


def spawn_server(settings: ServerSettings, timeout: float = 60.0) -> ServerInfo:
    """Start a detached server and wait until it has written its ``server.json``."""
    directory = settings.directory()
    log_path = directory / "server.log"
    env = None
    if settings.token is not None:  # a token given directly: by environment, never argv
        env = {**os.environ, "WARPSTORE_TOKEN": settings.token.decode()}
        env.pop("WARPSTORE_TOKEN_FILE", None)
    log = open_log(log_path)
    try:
        proc = subprocess.Popen(
            settings.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the task's process group
            close_fds=True,
            env=env,
        )
    finally:
        os.close(log)
    _children.append(proc)  # keep a handle so Python can reap it if it exits early
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_json(directory / "server.json")
        if info is not None and info.get("pid") == proc.pid:
            logger.info(
                "started %s server %s on node %s (pid %s)",
                settings.transport,
                info.get("address"),
                node_name(),
                proc.pid,
            )
            return info
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    else:
        proc.kill()
    proc.wait()
    tail = log_path.read_text(errors="replace").strip().splitlines()[-10:]
    raise ConnectorConnectionError(
        f"the {settings.transport} server on node {node_name()} did not start "
        f"(exit code {proc.returncode}); last lines of {log_path}:\n" + "\n".join(tail)
    )


def ensure_server(
    settings: ServerSettings, ping: Ping | None = None, spawn: bool = True
) -> ServerInfo:
    """This node's server: the running one, or a new one if there is none.

    A server this call started carries ``spawned_here: True``, so the caller
    (and only that one, of all the racers) registers it in the job's manifest.
    """
    directory = settings.directory()
    info = find_server(directory, ping)
    if info is not None:
        return info
    with file_lock(directory / "server.lock"):
        info = find_server(directory, ping, hung_error=True)
        if info is not None:
            return info
        if not spawn:
            raise ConnectorConnectionError(
                f"no {settings.transport} server is running on node {node_name()} "
                f"(looked in {directory}) and spawning is disabled"
            )
        return {**spawn_server(settings), "spawned_here": True}


def stop_server(
    info: ServerInfo, request_stop: Callable[[ServerInfo], None] | None, timeout: float = 10.0
) -> bool:
    """Stop a server: ask it (authenticated SHUTDOWN), then SIGTERM, then SIGKILL.

    Returns ``True`` once the process is gone. A signal goes only to the
    process that wrote ``info`` (same pid *and* start time, see
    :func:`is_our_server`): a pid reused by another process is never signalled.
    """
    pid = recorded_pid(info)
    if pid is None or not is_our_server(info):
        logger.info("server %s (pid %r) is no longer running", info.get("address"),
                    info.get("pid"))
        return True
    if request_stop is not None:
        try:
            request_stop(info)
        except Exception as e:
            logger.warning(
                "shutdown request to %s failed (%s); sending SIGTERM", info.get("address"), e
            )
    for sig, wait in ((None, timeout / 2), (signal.SIGTERM, timeout / 2), (signal.SIGKILL, 5)):
        if sig is not None:
            if not is_our_server(info):
                return True  # gone (its pid may already belong to another process)
            try:
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    os.kill(pid, signal.SIGCONT)  # a stopped server must run to exit
            except ProcessLookupError:
                return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                for child in _children:
                    if child.pid == pid:
                        child.wait()
                return True
            time.sleep(0.02)
    return not pid_alive(pid)
