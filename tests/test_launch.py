"""`warpstore launch` and `launch/warpstore-run` under real MPI (the mpich wheel's mpiexec).

"Nodes" are simulated on this one machine: with ``WARPSTORE_SIMULATE_NODES=<ranks
per node>`` rank r acts as node ``sim<r // ranks per node>`` bound to 127.0.0.<2+node>,
so discovery, the manifest, cross-node fetches and per-node teardown run as they
would on several hosts. Every test tags its processes and proves none is left.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.launching import (
    EXAMPLE,
    LAUNCH,
    RUN,
    job_dir,
    launch,
    mode,
    report,
    running,
    sleeper,
    written,
)

pytestmark = pytest.mark.timeout(180)


def test_launch_four_simulated_nodes_runs_the_example(job: dict[str, Any]) -> None:
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    proc = launch(
        job, "--site", "local", "--nodes", "4", "--",
        "mpiexec", "-n", "4", sys.executable, str(EXAMPLE), "--size-mib", "2",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "workflow OK: 4 ranks" in proc.stdout
    # the producers' arrays came from their own nodes' servers
    assert "from node sim0 (tcp://127.0.0.2:" in proc.stdout
    assert "from node sim2 (tcp://127.0.0.4:" in proc.stdout

    jd = job_dir(job)
    manifest = json.loads((jd / "manifest.json").read_text())
    assert mode(jd / "manifest.json") == 0o600 and mode(jd / "token") == 0o600
    assert manifest["token_file"] == str(jd / "token")
    servers = manifest["servers"]
    assert [s["node"] for s in servers] == ["sim0", "sim1", "sim2", "sim3"]
    assert [s["address"].split(":")[1] for s in servers] == [
        "//127.0.0.2", "//127.0.0.3", "//127.0.0.4", "//127.0.0.5"
    ]
    assert manifest["connector"]["type"] == "zmq"

    rep = report(job)
    assert rep["exit_code"] == 0 and rep["servers_reported"] == 4
    by_node = {n["node"]: n for n in rep["nodes"]}
    assert by_node["sim0"]["puts"] == 3 and by_node["sim2"]["puts"] == 3
    assert by_node["sim1"]["puts"] == 0
    assert by_node["sim0"]["bytes_put"] >= 3 * 2 * 2**20
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("warpstore: job ") and "ran 4 servers (" in summary
    assert "put 6 objects" in summary and str(jd) in summary


def test_launch_ucx_four_simulated_nodes(job: dict[str, Any]) -> None:
    pytest.importorskip("ucxx")
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    proc = launch(
        job, "--site", "local", "--nodes", "4", "--connector", "ucx", "--",
        "mpiexec", "-n", "4", sys.executable, str(EXAMPLE), "--size-mib", "2",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "workflow OK: 4 ranks" in proc.stdout
    assert "from node sim0 (ucx://127.0.0.1:" in proc.stdout
    manifest = json.loads((job_dir(job) / "manifest.json").read_text())
    assert manifest["connector"]["type"] == "ucx"
    assert [s["node"] for s in manifest["servers"]] == ["sim0", "sim1", "sim2", "sim3"]
    rep = report(job)
    assert rep["servers_reported"] == 4
    assert sum(n["puts"] for n in rep["nodes"]) == 6


ROUTED = (
    "import numpy as np, warpstore\n"
    "from mpi4py import MPI\n"
    "from warpstore.proxy import get_factory\n"
    "c = MPI.COMM_WORLD; s = warpstore.task_store()\n"
    "small = s.proxy(np.arange(10) + c.rank)\n"
    "large = s.proxy(np.ones(3_000_000) * c.rank)\n"
    "got = c.allgather((small, large))\n"
    "assert all(int(a[0]) == r and float(b[5]) == r for r, (a, b) in enumerate(got))\n"
    "names = c.gather([get_factory(p).key.connector_name for p in (small, large)])\n"
    "if c.rank == 0: print('routes', names, flush=True)\n"
)


def test_launch_routes_small_to_node_servers_large_to_files(job: dict[str, Any]) -> None:
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    proc = launch(
        job, "--site", "local", "--nodes", "2", "--connector", "multi",
        "--set", "connector.routing.large_threshold=16MiB", "--",
        "mpiexec", "-n", "2", sys.executable, "-c", ROUTED,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "routes [['node', 'file'], ['node', 'file']]" in proc.stdout
    jd = job_dir(job)
    manifest = json.loads((jd / "manifest.json").read_text())
    assert manifest["connector"]["type"] == "multi"
    assert manifest["connector"]["config"]["file"]["config"]["store_dir"] == str(jd / "objects")
    assert len(manifest["servers"]) == 2


def test_exit_status_of_the_command_is_the_launchers(job: dict[str, Any]) -> None:
    proc = launch(job, "--site", "local", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert proc.returncode == 7, proc.stderr
    rep = report(job)
    assert rep["exit_code"] == 7 and rep["servers_reported"] == 1


def test_task_store_elastic_server_joins_and_is_stopped(job: dict[str, Any]) -> None:
    """One server launched (sim0); a rank on sim1 starts one elastically and registers it."""
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    code = (
        "import os, warpstore, numpy as np\n"
        "from mpi4py import MPI\n"
        "c = MPI.COMM_WORLD; s = warpstore.task_store()\n"
        "p = s.proxy(np.full(1000, c.rank, dtype='i8'))\n"
        "got = c.allgather(p)\n"
        "assert [int(x[0]) for x in got] == list(range(c.size)), got\n"
        "nodes = c.gather(s.connector.local_server()['node'])\n"
        "if c.rank == 0: print('nodes', *nodes, flush=True)\n"
        "c.Barrier()\n"
    )
    proc = launch(
        job, "--site", "local", "--nodes", "1", "--",
        "mpiexec", "-n", "2", sys.executable, "-c", code,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nodes sim0 sim1\n" in proc.stdout
    assert "had no server: started" in proc.stderr and "uses TCP" in proc.stderr
    jd = job_dir(job)
    manifest = json.loads((jd / "manifest.json").read_text())
    assert [s["node"] for s in manifest["servers"]] == ["sim0", "sim1"]
    assert manifest["servers"][1].get("elastic") is True
    rep = report(job)
    assert {n["node"]: n["elastic"] for n in rep["nodes"]} == {"sim0": False, "sim1": True}


def test_one_server_failing_fails_fast_naming_the_node(job: dict[str, Any]) -> None:
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    with socket.socket() as s:  # node sim1's address:port is taken
        s.bind(("127.0.0.3", 0))
        port = s.getsockname()[1]
        s.listen()
        marker = job["dir"] / "workflow-ran"
        t0 = time.monotonic()
        proc = launch(
            job, "--site", "local", "--nodes", "3", "--set", f"connector.port={port}", "--",
            sys.executable, "-c", f"open({str(marker)!r}, 'w')",
        )
        elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    assert "node sim1" in proc.stderr and "Address already in use" in proc.stderr
    assert "sim0" not in proc.stderr.split("failed to start on")[-1]
    assert not marker.exists(), "the workflow must not run without its servers"
    assert elapsed < 60
    assert not (job_dir(job) / "manifest.json").exists()


def test_bad_interface_names_node_and_interfaces(job: dict[str, Any]) -> None:
    proc = launch(job, "--site", "local", "--set", "interface=nosuch0", "--", "true")
    assert proc.returncode != 0
    assert "nosuch0" in proc.stderr and "interfaces here" in proc.stderr
    assert "Traceback" not in proc.stderr.split("warpstore:")[-1]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT],
                         ids=lambda s: s.name)
def test_stop_signal_ends_workflow_and_servers_in_order_with_a_report(
    job: dict[str, Any], stop: signal.Signals
) -> None:
    """SIGTERM (a scheduler near the walltime), SIGUSR1 (a requested early signal), SIGINT."""
    started = job["dir"] / "started"
    code = sleeper(started, put=1000)
    with running(job, [*LAUNCH, "--site", "local", "--", sys.executable, "-c", code],
                 written(started)) as proc:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + stop, err
    assert f"stopped early by {stop.name}" in err
    rep = report(job)
    assert rep["servers_reported"] == 1 and rep["exit_code"] == 128 + stop
    assert sum(n["puts"] for n in rep["nodes"]) == 1
    assert "warpstore: job" in out


SHARE = (
    "import warpstore, numpy as np\n"
    "from mpi4py import MPI\n"
    "c = MPI.COMM_WORLD; s = warpstore.task_store()\n"
    "got = c.allgather(s.proxy(np.full(100, c.rank)))\n"
    "assert [int(x[0]) for x in got] == list(range(c.size))\n"
    "if c.rank == 0: print('shared via', type(s.connector).__name__, flush=True)\n"
)


@pytest.mark.parametrize("kind", ["redis", "file"])
def test_launch_with_serverless_connectors(
    job: dict[str, Any], kind: str, redis_server: tuple[str, int]
) -> None:
    host, port = redis_server
    sets = {
        "redis": [f"connector.redis.host={host}", f"connector.redis.port={port}"],
        "file": [f"connector.file.store_dir={job['dir'] / 'objects'}"],
    }[kind]
    args = [a for item in sets for a in ("--set", item)]
    proc = launch(
        job, "--site", "local", "--connector", kind, *args, "--",
        "mpiexec", "-n", "2", sys.executable, "-c", SHARE,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = {"redis": "RedisConnector", "file": "FileConnector"}[kind]
    assert f"shared via {name}" in proc.stdout
    jd = job_dir(job)
    manifest = json.loads((jd / "manifest.json").read_text())
    assert manifest["connector"]["type"] == kind and manifest["servers"] == []
    assert mode(jd / "manifest.json") == 0o600
    rep = report(job)
    assert rep["exit_code"] == 0 and rep["connector"] == kind
    assert f"used the {kind} connector" in proc.stdout


def test_launch_margo_without_pymargo_fails_fast_naming_node(job: dict[str, Any]) -> None:
    import importlib.util

    if importlib.util.find_spec("pymargo") is not None:
        pytest.skip("pymargo is installed: this checks the error without it")
    proc = launch(job, "--site", "local", "--connector", "margo", "--", "true")
    assert proc.returncode != 0
    assert "failed to start on node" in proc.stderr and "pymargo" in proc.stderr
    assert "spack install" in proc.stderr


def test_launch_daos_needs_pool_and_container(job: dict[str, Any]) -> None:
    proc = launch(job, "--site", "local", "--connector", "daos", "--", "true")
    assert proc.returncode != 0
    assert "connector.daos.pool" in proc.stderr and "--type PYTHON" in proc.stderr
    assert "Traceback" not in proc.stderr


APP = (
    "import os, sys, warpstore\n"
    "s = warpstore.task_store()\n"
    "key = s.put(f'rank {os.environ[\"PMI_RANK\"]}'.encode())\n"
    "assert s.get(key) == f'rank {os.environ[\"PMI_RANK\"]}'.encode()\n"
    "info = s.connector.local_server()\n"
    # one file per rank: ranks' stdout lines interleave under mpiexec
    "open(f'rank-{os.environ[\"PMI_RANK\"]}.txt', 'w').write(f'{info[\"node\"]} {info[\"pid\"]}')\n"
)


def ranks(work: Path) -> dict[str, tuple[str, str]]:
    seen = {}
    for path in work.glob("rank-*.txt"):
        node, pid = path.read_text().split()
        seen[path.stem.split("-")[1]] = (node, pid)
    return seen


def test_warpstore_run_standalone_one_server_per_node(job: dict[str, Any]) -> None:
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "2"  # 4 ranks: 2 "nodes" of 2 ranks
    job["env"]["WARPSTORE_PYTHON"] = sys.executable  # what a rendered job script exports
    proc = subprocess.run(
        ["mpiexec", "-n", "4", str(RUN), sys.executable, "-c", APP],
        cwd=job["dir"], env=job["env"], capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = ranks(job["dir"])
    assert set(seen) == {"0", "1", "2", "3"}
    assert seen["0"][0] == seen["1"][0] == "sim0" and seen["2"][0] == seen["3"][0] == "sim1"
    assert seen["0"][1] == seen["1"][1] != seen["2"][1] == seen["3"][1]  # one server per node
    # the fixture proves the leaders stopped their servers


def test_warpstore_run_inside_launch_uses_the_launched_servers(job: dict[str, Any]) -> None:
    proc = launch(job, "--site", "local", "--", "mpiexec", "-n", "3", str(RUN),
                  sys.executable, "-c", APP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = ranks(job["dir"])
    manifest = json.loads((job_dir(job) / "manifest.json").read_text())
    (server,) = manifest["servers"]
    assert {pid for _, pid in seen.values()} == {str(server["pid"])}
    assert len(seen) == 3


def test_warpstore_run_passes_the_exit_status(job: dict[str, Any]) -> None:
    job["env"]["WARPSTORE_PYTHON"] = sys.executable
    proc = subprocess.run(
        ["mpiexec", "-n", "2", str(RUN), sys.executable, "-c",
         "import os, sys; sys.exit(5 if os.environ['PMI_RANK'] == '1' else 0)"],
        cwd=job["dir"], env=job["env"], capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 5, proc.stderr


def test_task_store_outside_a_job_says_so(job: dict[str, Any]) -> None:
    code = (  # no logging set up: the notice is a warning, which Python shows anyway
        "import warpstore\n"
        "s = warpstore.task_store()\n"
        "assert s is warpstore.task_store()\n"
        "print(type(s.connector).__name__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**job["env"], "WARPSTORE_SITE": "local"},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ZMQConnector"
    assert "not inside a `warpstore launch` job" in proc.stderr and "'local'" in proc.stderr
