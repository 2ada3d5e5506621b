"""``launch/warpstore-run``: put a node server under an MPI application's own ranks.

    mpiexec -n 8 --ppn 4 launch/warpstore-run python app.py

Every rank runs this wrapper; none initialises MPI (the application does).
The node-local leader (local rank 0, from the launcher's environment) finds
or starts its node's server; the other ranks wait until it answers; then each
rank runs the application. Inside ``warpstore launch`` the servers are the
launcher's to stop, so the wrapper *execs* the application: same pid, same
signals, same inherited descriptors. Run standalone, the leader must stop its
node's server once every local rank is done, so the application runs as a
child, with ``close_fds=False``: the process manager's PMI descriptor
(``PMI_FD``, inherited by every rank) must reach it, or ``MPI_Init`` fails
with ``PMI_Init returned -1``. (Descriptors Python opened itself are not
inheritable, so only what the rank inherited is passed on.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from warpstore.hpc.environment import local_rank_info


def _connector() -> object:
    if os.environ.get("WARPSTORE_MANIFEST"):
        from warpstore.hpc.task import store_from_manifest

        return store_from_manifest().connector
    from warpstore.hpc.connectors import connector_from_site
    from warpstore.hpc.siteconfig import load_site

    site = load_site(os.environ.get("WARPSTORE_SITE", "local"))
    kind = site["connector"]["type"]
    return connector_from_site(site, kind if kind in ("zmq", "ucx") else "zmq")


def _exec(command: list[str]) -> int:
    """Replace this process with the application (only returns if that fails)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"warpstore-run: {command[0]}: {e.strerror or e}", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126
    raise AssertionError("unreachable")  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    """Run the wrapper; an error is one line on stderr (the traceback with WARPSTORE_DEBUG=1)."""
    from warpstore.cli_errors import debug_enabled, error_line

    try:
        return _main(argv)
    except Exception as e:
        if debug_enabled():
            raise
        message, code = error_line(e)
        print(f"warpstore-run: error: {message}", file=sys.stderr)
        return code


def _main(argv: list[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("usage: warpstore-run CMD [ARGS...]", file=sys.stderr)
        return 2
    from warpstore.connectors._nodeserver import NodeServerConnector
    from warpstore.server.spawn import find_server, stop_server

    local_rank, local_size = local_rank_info()
    if local_rank is None:  # not under an MPI launcher: this process is the node's only rank
        local_size = local_size or 1
    leader = not local_rank
    connector = _connector()
    if not isinstance(connector, NodeServerConnector):
        # nothing to set up on this node (Redis, files, DAOS): the same job line works
        # with any connector, so run the application as it is
        close = getattr(connector, "close", None)
        if callable(close):
            close()
        return _exec(command)
    directory = connector.settings().directory()
    lease = None
    if leader and not os.environ.get("WARPSTORE_MANIFEST"):
        # standalone, this leader is the server's launcher: a server it spawns watches
        # this lease and stops itself if the leader is killed before it can stop it
        from warpstore.server.watchdog import LEASE_ENV, Lease

        lease = Lease(directory / f"leader-{os.getpid()}.lease").start()
        os.environ[LEASE_ENV] = str(lease.path)
    if leader:
        info = connector.local_server()
    else:
        deadline = time.monotonic() + 120
        found = None
        while found is None and time.monotonic() < deadline:
            found = find_server(directory, connector._ping)
            if found is None:
                time.sleep(0.05)
        if found is None:
            print(
                f"warpstore-run: no server on this node after 120 s ({directory})", file=sys.stderr
            )
            return 1
        info = found
    if os.environ.get("WARPSTORE_MANIFEST"):
        connector.close()
        return _exec(command)
    try:
        app = subprocess.Popen(command, close_fds=False)
    except OSError as e:
        print(f"warpstore-run: {command[0]}: {e.strerror or e}", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126

    def forward(signum: int, frame: FrameType | None) -> None:
        if app.poll() is None:
            app.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    rc = app.wait()
    rc = rc if rc >= 0 else 128 - rc
    done = Path(directory) / f"done.{info['pid']}.{local_rank or 0}"
    done.touch()
    # a server someone else started (`warpstore server start`) is theirs to stop
    if leader and local_size and info.get("spawned_here"):
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if len(list(Path(directory).glob(f"done.{info['pid']}.*"))) >= local_size:
                break
            time.sleep(0.1)
        stop_server(info, lambda i: connector.stop_server(i["address"]))
        for marker in Path(directory).glob(f"done.{info['pid']}.*"):
            marker.unlink(missing_ok=True)
    if lease is not None:
        lease.stop()
        lease.path.unlink(missing_ok=True)
    connector.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
