"""Producers and consumers passing numpy arrays by reference across MPI ranks.

Even ranks produce arrays and put them into their node's server; they send
only the *proxy* (a few hundred bytes) to the next rank with an MPI message;
odd ranks resolve it, fetching the array straight from the producer's node,
and check it. Run it inside a launched job:

    warpstore launch --site local -- mpiexec -n 4 python examples/mpi_workflow.py

or render it for a site:

    warpstore render --site polaris --nodes 2 -A MyProject -- \\
        mpiexec -n 8 --ppn 4 python examples/mpi_workflow.py
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import numpy as np
from mpi4py import MPI

import warpstore
from warpstore.proxy import get_factory, is_resolved


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Producer ranks put numpy arrays; consumer ranks resolve the proxies.",
        epilog="Run under MPI inside a job: warpstore launch --site local -- "
        "mpiexec -n 4 python examples/mpi_workflow.py",
    )
    parser.add_argument("--size-mib", type=float, default=4.0, help="size of each array")
    parser.add_argument("--rounds", type=int, default=3, help="arrays each producer sends")
    return parser.parse_args()


def main(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    if size < 2:
        print("run with at least 2 ranks", file=sys.stderr)
        return 2
    store = warpstore.task_store()
    n = int(args.size_mib * 2**20 // 8)
    failures = 0
    lines: list[str] = []  # printed by rank 0, so ranks' output never interleaves
    for round_ in range(args.rounds):
        if rank % 2 == 0 and rank + 1 < size:
            data = np.random.default_rng(1000 * round_ + rank).random(n)
            proxy = store.proxy(data, evict=True)  # the one consumer evicts it
            comm.send((proxy, hashlib.sha256(data.data).hexdigest()), dest=rank + 1, tag=round_)
        elif rank % 2 == 1:
            proxy, expected = comm.recv(source=rank - 1, tag=round_)
            assert not is_resolved(proxy)
            start = time.perf_counter()
            got = hashlib.sha256(np.ascontiguousarray(proxy).data).hexdigest()  # fetched now
            elapsed = time.perf_counter() - start
            key = get_factory(proxy).key  # type: ignore[attr-defined]
            ok = got == expected and isinstance(proxy, np.ndarray)
            failures += not ok
            # node-server keys name the producer's node and server; others (redis, file) do not
            where = (
                f"node {key.node} ({key.address})" if hasattr(key, "node") else type(key).__name__
            )
            lines.append(
                f"rank {rank} round {round_}: {'OK' if ok else 'MISMATCH'} "
                f"{args.size_mib:g} MiB from {where} in {elapsed * 1e3:.1f} ms"
            )
    total = comm.allreduce(failures)
    everyone = comm.gather(lines)
    if rank == 0:
        for line in (line for rank_lines in everyone or [] for line in rank_lines):
            print(line)
        print(
            f"workflow {'OK' if total == 0 else 'FAILED'}: {size} ranks, "
            f"{args.rounds} rounds, {total} mismatches",
            flush=True,
        )
    return 1 if total else 0


if __name__ == "__main__":
    # parsed outside the MPI_Abort guard: --help and bad options exit normally (every
    # rank parses the same command line, so no rank is left waiting in a collective)
    arguments = parse_args()
    code = 1
    try:
        code = main(arguments)
    except BaseException:
        # one rank failing must not leave the others blocked in a collective
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
    sys.exit(code)
