"""``launch/warpstore-run``: put a node server under an MPI application's own ranks.

    mpiexec -n 8 --ppn 4 launch/warpstore-run python app.py

Every rank runs this wrapper; none initialises MPI (the application does).
The node-local leader (local rank 0, from the launcher's environment) finds
or starts its node's server; the other ranks wait until it answers; then each
rank runs the application as a child process and exits with its status.
Inside ``warpstore launch`` the servers are the launcher's to stop; run
standalone, the leader stops its node's server once every local rank is done.
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


def main(argv: list[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("usage: warpstore-run CMD [ARGS...]", file=sys.stderr)
        return 2
    from warpstore.connectors._nodeserver import NodeServerConnector
    from warpstore.server.spawn import find_server, stop_server

    local_rank, local_size = local_rank_info()
    leader = not local_rank
    connector = _connector()
    if not isinstance(connector, NodeServerConnector):
        print(
            f"warpstore-run: the job's connector {type(connector).__name__} has no node "
            "servers; run the application directly",
            file=sys.stderr,
        )
        return 2
    directory = connector.settings().directory()
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
            print(f"warpstore-run: no server on this node after 120 s ({directory})",
                  file=sys.stderr)
            return 1
        info = found
    app = subprocess.Popen(command)

    def forward(signum: int, frame: FrameType | None) -> None:
        if app.poll() is None:
            app.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    rc = app.wait()
    rc = rc if rc >= 0 else 128 - rc
    done = Path(directory) / f"done.{info['pid']}.{local_rank or 0}"
    done.touch()
    if leader and not os.environ.get("WARPSTORE_MANIFEST") and local_size:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if len(list(Path(directory).glob(f"done.{info['pid']}.*"))) >= local_size:
                break
            time.sleep(0.1)
        stop_server(info, lambda i: connector.stop_server(i["address"]))
        for marker in Path(directory).glob(f"done.{info['pid']}.*"):
            marker.unlink(missing_ok=True)
    connector.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
