"""How long `warpstore launch` takes to get servers up, and to tear them down.

    python benchmarks/launch_scaling.py [--ranks 1,2,4,8] [--repeats 3]

For each count of simulated nodes (one server rank per node, all on this
machine, ``WARPSTORE_SIMULATE_NODES=1``), runs
``warpstore launch --site local --nodes N -- python -c <record the time>`` and
reports medians of:

- launch->ready: from starting the launcher process until the workflow command
  starts (imports, job dir, mpiexec, every server bound, manifest written);
- servers ready: the launcher's own "ready" timing (mpiexec start to manifest);
- discovery: inside the ranks, from the shared-memory split to the manifest
  (bind every server, then one allgather);
- allgather: rank 0's time in the allgather of (host, address, port), the
  exchange itself, which should grow like log(nodes) (it waits for the slowest
  rank's bind, so on an oversubscribed machine it also shows CPU contention);
- teardown: authenticated SHUTDOWN of every server until mpiexec has exited
  (every server reports here, so no sweep step runs: that step is only for
  the nodes of killed servers);
- floor: ``mpiexec -n N python -c 'from mpi4py import MPI'`` alone, the part
  no launcher can avoid.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_launch(ranks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="warpstore-bench-") as work:
        stamp = Path(work) / "started"
        code = f"import time; open({str(stamp)!r}, 'w').write(repr(time.time()))"
        env = {**os.environ, "WARPSTORE_SIMULATE_NODES": "1"}
        env.pop("WARPSTORE_MANIFEST", None)
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "warpstore", "launch", "--site", "local",
             "--nodes", str(ranks), "--", sys.executable, "-c", code],
            cwd=work, env=env, capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"launch with {ranks} ranks failed:\n{proc.stderr}")
        (job_dir,) = Path(work).glob("warpstore-*/")
        report = json.loads((job_dir / "report.json").read_text())
        manifest = json.loads((job_dir / "manifest.json").read_text())
        assert len(manifest["servers"]) == ranks, manifest
        # every server reported, so the teardown ran no sweep step (it costs nothing here)
        assert "sweep" not in report and "sweep" not in report["timings_s"], report
        return {
            "launch_to_ready": float(stamp.read_text()) - t0,
            "ready": report["timings_s"]["ready"],
            "discovery": manifest["discovery_s"],
            "allgather": manifest["allgather_s"],
            "teardown": report["timings_s"]["teardown"],
        }


def floor(ranks: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["mpiexec", "-n", str(ranks), sys.executable, "-c", "from mpi4py import MPI"],
        check=True, timeout=300,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    counts = [int(r) for r in args.ranks.split(",")]
    print(f"warpstore launch scaling on {os.cpu_count()} cores, median of {args.repeats} runs")
    head = (
        f"{'nodes':>5} {'launch->ready':>14} {'servers ready':>14} {'discovery':>10} "
        f"{'allgather':>10} "
        f"{'teardown':>9} {'mpiexec floor':>14}"
    )
    print(head)
    print("-" * len(head))
    for n in counts:
        runs = [one_launch(n) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        fl = statistics.median(floor(n) for _ in range(args.repeats))
        print(
            f"{n:>5} {med['launch_to_ready']:>13.2f}s {med['ready']:>13.2f}s "
            f"{med['discovery'] * 1000:>8.1f}ms {med['allgather'] * 1000:>8.1f}ms "
            f"{med['teardown']:>8.2f}s {fl:>13.2f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
