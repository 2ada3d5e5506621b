"""Run one node server in the foreground until told to stop.

This is what ``warpstore server start --foreground`` (and every elastic spawn)
runs. It binds, records itself in the node's ``server.json`` (only once it can
serve), serves until SIGTERM/SIGINT or an authenticated SHUTDOWN request, then
writes ``report.json`` (what it held and served) and removes ``server.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from warpstore.server.runtime import (
    default_address,
    file_lock,
    job_id,
    load_token,
    node_dir,
    node_name,
    process_state,
    read_json,
    write_json_atomic,
)
from warpstore.server.spawn import find_server
from warpstore.units import format_size, plural

__all__ = ["RunningServer", "run_server"]

logger = logging.getLogger("warpstore.server")


def _setup_logging(node: str) -> None:
    logging.basicConfig(
        level=os.environ.get("WARPSTORE_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s [{node} pid {os.getpid()}] %(name)s: %(message)s",
    )


class RunningServer:
    """A bound node server recorded in ``server.json``, ready to :meth:`serve`.

    Split from serving so that the MPI launcher can bind every node's server,
    exchange the addresses, and only then start serving.
    """

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
        protocol: str | None = None,
    ) -> None:
        self.node = node_name()
        _setup_logging(self.node)
        server_class: Any
        if transport == "zmq":
            from warpstore.server.zmq_server import ZMQServer as server_class
        elif transport == "ucx":
            from warpstore.server.ucx_server import UCXServer as server_class
        elif transport == "margo":
            from warpstore.server.margo_server import MargoServer as server_class
        else:
            raise ValueError(
                f"unknown server transport {transport!r} (available: zmq, ucx, margo)"
            )

        token, token_path = load_token(token_file=token_file, root=runtime_dir)
        self.runtime_dir = runtime_dir
        self.directory = node_dir(transport, runtime_dir)
        ip = default_address(address, interface, transport)
        if transport == "margo":
            self.server = server_class(
                token, ip, port, self.node, memory_limit, protocol=protocol or "tcp"
            )
        else:
            self.server = server_class(token, ip, port, self.node, memory_limit)
        self.memory_limit = memory_limit
        shm_dir = None
        if os.environ.get("WARPSTORE_SHM", "1") != "0":
            from warpstore.server.shm import shm_directory

            shm_dir = shm_directory(self.directory, job_id(), self.node, transport)
            self.server.core.enable_shm(shm_dir, token)
        self.info_path = self.directory / "server.json"
        self.info: dict[str, Any] = {
            "address": self.server.address,
            "pid": os.getpid(),
            # tells this process from a later one reusing its pid (see spawn.is_our_server)
            "pid_start": (process_state(os.getpid()) or ("", None))[1],
            "node": self.node,
            "job": job_id(),
            "transport": transport,
            "token_file": token_path,
            "memory_limit": memory_limit,
            "started": time.time(),
            "log": str(self.directory / "server.log"),
            "shm_dir": str(shm_dir) if shm_dir else None,
        }
        with file_lock(self.directory / "server.json.lock"):
            running = find_server(self.directory)
            if running is not None and running.get("pid") != os.getpid():
                self.server.core.abandon_shm()  # its area; the directory is the other's
                self.server.close()
                raise RuntimeError(
                    f"a {transport} server is already running on node {self.node}: "
                    f"{running.get('address')} (pid {running.get('pid')})"
                )
            write_json_atomic(self.info_path, self.info)

    @property
    def address(self) -> str:
        return str(self.server.address)

    def serve(self) -> dict[str, Any]:
        """Serve until SIGTERM/SIGINT or SHUTDOWN; write the report; return the final status."""
        server = self.server

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s: stopping", signal.Signals(signum).name)
            server.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # inside `warpstore launch`: stop if the launcher dies without stopping us
        from warpstore.server.watchdog import watch_launcher

        watch_launcher()
        limit = "no limit" if self.memory_limit is None else format_size(self.memory_limit)
        logger.info("serving at %s (job %s, memory limit %s)", server.address, job_id(), limit)
        try:
            server.serve()
        finally:
            status = self.finish()
        return status

    def finish(self) -> dict[str, Any]:
        status: dict[str, Any] = self.server.core.status()
        self.server.core.close_shm()
        self.server.close()
        segments = self._check_segments()
        current = read_json(self.info_path)
        if current is not None and current.get("pid") == os.getpid():
            Path(self.info_path).unlink(missing_ok=True)
        write_json_atomic(
            self.directory / "report.json", {**self.info, "final": status, "segments": segments}
        )
        logger.info(
            "stopped %s: held %s (%s), served %s %s, in %s, out %s, errors %s",
            self.server.address,
            plural(status["objects"], "object"),
            format_size(status["bytes"]),
            plural(status["requests_total"], "request"),
            json.dumps(status["requests"]),
            format_size(status["bytes_in"]),
            format_size(status["bytes_out"]),
            json.dumps(status["errors"]),
        )
        return status


    def _check_segments(self) -> dict[str, list[str]]:
        """The teardown check of this node: remove the job's segments that dead processes
        (a crashed client, a killed server of another transport) left here; list them, and
        any that a live process still holds, for the job report."""
        if self.server.core.shm_dir is None:
            return {"removed": [], "left": []}
        from warpstore.server.shm import cleanup_job, leftover_segments

        try:
            # other servers of the job on this node may still run: leave directories be;
            # other nodes on this host (several slurmd, simulated nodes) check their own
            removed = cleanup_job(root=self.runtime_dir, remove_dirs=False, node=self.node)
            left = leftover_segments(root=self.runtime_dir, node=self.node)
        except OSError as e:  # a report without the check beats no report
            logger.warning("could not check this node's segments: %s", e)
            return {"removed": [], "left": []}
        if removed:
            logger.warning(
                "removed %s that dead processes left: %s",
                plural(len(removed), "shared-memory segment"),
                ", ".join(p.name for p in removed),
            )
        return {"removed": [str(p) for p in removed], "left": [str(p) for p in left]}


def run_server(transport: str = "zmq", **kwargs: Any) -> dict[str, Any]:
    """Bind, serve until stopped, and return the final status (also in ``report.json``)."""
    status: dict[str, Any] = RunningServer(transport, **kwargs).serve()
    return status
