"""One rank of the teardown's sweep step: remove what the job left on this node.

Each node's server checks its node when it stops (its report's ``segments``).
A server that was killed (SIGKILL, the OOM killer, a node fault) cannot, and
its shared-memory segments and small-object area would stay in the node's
memory until that node's next server start. So when some server did not
write its final report, the launcher runs this, an epilog-like step, through
the same site launcher line it used for the servers (one rank per node)::

    mpiexec -n NODES --ppn 1 python -m warpstore.hpc.sweep_rank --job ID ...

Each rank removes the job's segments and areas of dead processes on its own
node (:func:`warpstore.server.shm.cleanup_job`), lists what live processes
still hold, and writes ``<out>/<node>.<pid>.json`` for the launcher's report.
It needs no MPI (no ``MPI_Init``: it starts fast and cannot hang on a
peer), only the rank variables the launcher line sets, which name the node
where nodes are simulated on one host.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from warpstore.server.runtime import node_name, write_json_atomic

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warpstore-sweep-rank")
    parser.add_argument("--job", required=True, help="the job's id, as in its manifest")
    parser.add_argument("--runtime-dir", required=True, help="the job's runtime directory")
    parser.add_argument("--out", required=True, help="directory for this node's result")
    args = parser.parse_args(argv)

    from warpstore.server.shm import cleanup_job, leftover_segments

    started = time.monotonic()
    node = node_name()
    result: dict[str, object] = {"node": node, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        # every server of the job has ended: what dead processes left goes, what a
        # live process (a workflow rank that outlived the job's end) holds stays
        removed = cleanup_job(args.job, root=args.runtime_dir, node=node)
        left = leftover_segments(args.job, root=args.runtime_dir, node=node)
        result.update(removed=[str(p) for p in removed], left=[str(p) for p in left])
    except OSError as e:  # reported as this node's error, never a failed job
        result["error"] = f"{type(e).__name__}: {e}"
    result["seconds"] = round(time.monotonic() - started, 4)
    write_json_atomic(Path(args.out) / f"{node}.{os.getpid()}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
