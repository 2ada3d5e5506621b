"""One MPI rank of the server launch: the node-local leader starts the node's server.

Run by the launcher through the site's launcher line (one rank per node)::

    mpiexec -n NODES --ppn 1 python -m warpstore.hpc.server_rank --manifest M ...

Ranks find each other with mpi4py: the node-local leader (rank 0 of
``COMM_TYPE_SHARED``) binds the server, then one ``allgather`` (a tree, so
log(nodes) steps) collects every node's host, address and pid, or its error.
Rank 0 writes the manifest, or a failure file naming the nodes that failed,
in which case every server closes again and the launch fails fast.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import traceback
from typing import Any

from warpstore.hpc.manifest import write_manifest
from warpstore.server.runtime import job_id, node_name, write_json_atomic

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warpstore-server-rank")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--base", required=True, help="JSON file with the manifest's fixed part")
    parser.add_argument("--transport", default="zmq", choices=["zmq", "ucx", "margo"])
    parser.add_argument("--protocol", default=None, help="margo: Mercury protocol")
    parser.add_argument("--interface", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--memory-limit", type=int, default=None)
    args = parser.parse_args(argv)

    if args.transport == "ucx":
        # before MPI: an MPI that bundles its own UCX (the mpich wheel) must not load first
        from warpstore.server.ucx_env import import_ucxx

        import_ucxx()
    from mpi4py import MPI

    from warpstore.server.main import RunningServer
    from warpstore.server.runtime import read_json

    comm = MPI.COMM_WORLD
    shared = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
    # Ranks that share memory but report different node names (the test-only
    # node simulation) are split further, so each "node" gets its own leader.
    name = node_name()
    names = sorted(set(shared.allgather(name)))
    local = shared.Split(names.index(name), shared.rank)
    leader = local.rank == 0

    started = time.time()
    server: RunningServer | None = None
    mine: dict[str, Any] | None = None
    if leader:
        try:
            server = RunningServer(
                args.transport,
                interface=args.interface,
                port=args.port,
                memory_limit=args.memory_limit,
                runtime_dir=os.environ.get("WARPSTORE_RUNTIME_DIR"),
                token_file=os.environ.get("WARPSTORE_TOKEN_FILE"),
                **({"protocol": args.protocol} if args.transport == "margo" else {}),
            )
            mine = {
                "ok": True,
                "node": name,
                "host": socket.gethostname(),
                "address": server.address,
                "pid": os.getpid(),
                "rank": comm.rank,
            }
        except Exception as e:
            traceback.print_exc()
            mine = {
                "ok": False,
                "node": name,
                "host": socket.gethostname(),
                "error": f"{type(e).__name__}: {e}",
                "rank": comm.rank,
            }
    if mine is not None:
        mine["bind_s"] = round(time.time() - started, 4)
    gathered = time.time()
    everyone = [r for r in comm.allgather(mine) if r is not None]
    allgather_s = time.time() - gathered
    failed = [r for r in everyone if not r["ok"]]
    if comm.rank == 0:
        base = read_json(args.base) or {}
        if failed:
            write_json_atomic(args.manifest + ".failed", {"failed": failed, "job": job_id()})
        else:
            write_manifest(
                args.manifest,
                {
                    **base,
                    "servers": [
                        {k: r[k] for k in ("node", "host", "address", "pid", "rank")}
                        for r in everyone
                    ],
                    "discovery_s": round(time.time() - started, 4),
                    "bind_s_max": max(r.get("bind_s", 0.0) for r in everyone),
                    "allgather_s": round(allgather_s, 4),
                    "created": time.time(),
                },
            )
    if failed:
        if server is not None:
            server.finish()
        return 1
    if server is not None:
        server.serve()
        # The server removed its own segments; a client that died mid-put leaves one
        # (named after its pid): sweep this job's segments of dead processes here, on
        # this node only (another node on this host, whose server was killed, is the
        # teardown's sweep step's to check and report).
        from warpstore.server.shm import cleanup_job

        cleanup_job(root=os.environ.get("WARPSTORE_RUNTIME_DIR"), node=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
