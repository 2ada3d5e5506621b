"""The teardown's sweep step: a killed server's node is checked by this job, not the next.

Two nodes are simulated on this machine (``WARPSTORE_SIMULATE_NODES=1``: MPI
rank r is node ``sim<r>``), each with its own segment directory and
small-object area under ``/dev/shm``; the launcher itself is neither (its node
is this host's name), so what it removes on ``sim1`` it can only remove
through the sweep step that runs on ``sim1``. Every process the tests start is
checked by pid (and the ``job`` fixture checks the job's tag).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.launching import all_gone, job_dir, launch, report
from warpstore.server import shm
from warpstore.server.runtime import pid_alive

pytestmark = pytest.mark.timeout(180)

# The rank on node VICTIM (argv[2]; not the launcher's) puts a 2 MiB object (a
# segment) and a small one (its node's small-object area), records what its node
# holds, then SIGKILLs its node's server: that server can neither check its node
# nor report. (Also the workflow of the Slurm test in tests/test_schedulers.py.)
WORKFLOW = """
import json, os, signal, sys, time
from pathlib import Path
import warpstore
from warpstore.server import shm
from warpstore.server.runtime import node_name, pid_alive

out, victim = Path(sys.argv[1]), sys.argv[2]
if node_name() == victim:
    store = warpstore.task_store()
    store.put(b"x" * (2 << 20))
    store.put(b"small")
    manifest = json.loads(Path(os.environ["WARPSTORE_MANIFEST"]).read_text())
    (server,) = [s for s in manifest["servers"] if s["node"] == victim]
    held = [str(p) for p in shm.leftover_segments(manifest["job_id"], node=victim)]
    os.kill(server["pid"], signal.SIGKILL)
    while pid_alive(server["pid"]):
        time.sleep(0.02)
    out.write_text(json.dumps({"pid": os.getpid(), "server": server["pid"], "held": held}))
else:
    (out.parent / "other.pid").write_text(str(os.getpid()))
"""


def _shm_of(job_id: str, node: str) -> list[Path]:
    """Every directory (segments, small-object area) of ``node`` in the job's /dev/shm."""
    base = Path("/dev/shm") / f"warpstore-{os.getuid()}" / job_id
    return sorted(base.glob(f"{node}-*")) if base.is_dir() else []


def test_killed_server_on_another_node_is_swept_at_teardown(job: dict[str, Any]) -> None:
    """(The transport only names the directories: see the node-filter test below.)"""
    transport = "zmq"
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    job["env"].pop("WARPSTORE_SHM_DIR", None)
    script = job["dir"] / "wf.py"
    script.write_text(WORKFLOW)
    info = job["dir"] / "sim1.json"
    try:
        _killed_server_run(job, script, info, transport)
    finally:  # a failed check must not leave the job's shared memory to the next test
        for manifest in job["dir"].glob("warpstore-*/manifest.json"):
            job_id = json.loads(manifest.read_text())["job_id"]
            shm.cleanup_job(job_id, root=manifest.parent / "runtime", everything=True)


def _killed_server_run(job: dict[str, Any], script: Path, info: Path, transport: str) -> None:
    proc = launch(
        job, "--site", "local", "--nodes", "2", "--connector", transport, "--",
        "mpiexec", "-n", "2", sys.executable, str(script), str(info), "sim1",
    )
    # the sweep never changes the job's result: the workflow's 0 stands
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wf = json.loads(info.read_text())
    names = [Path(p).name for p in wf["held"]]
    # what the killed server held: its segment (s-<its pid>-...) and its area's object
    assert any(n.startswith(f"s-{wf['server']}-") for n in names), names
    assert any(n.startswith("k-") for n in names), names

    jd = job_dir(job)
    manifest = json.loads((jd / "manifest.json").read_text())
    job_id = manifest["job_id"]
    # after the launch: nothing of the job left on sim1, segments nor area
    assert shm.leftover_segments(job_id, root=jd / "runtime", node="sim1") == []
    assert _shm_of(job_id, "sim1") == [], _shm_of(job_id, "sim1")

    rep = report(job)
    assert rep["exit_code"] == 0
    # removed by the sweep step on sim1 and reported there
    assert rep["segments"]["sim1"]["removed"] >= 2 and rep["segments"]["sim1"]["left"] == 0
    assert "unchecked" not in rep["segments"]["sim1"]
    assert "sim1" in rep["sweep"]["unreported"] and rep["sweep"]["unchecked"] == []
    assert rep["timings_s"]["sweep"] > 0
    assert "teardown removed" in proc.stderr and "left on node sim1" in proc.stderr
    assert "Teardown removed leftover shared-memory segments:" in proc.stdout
    assert "sim1 " in proc.stdout.split("Teardown removed leftover")[1]

    # every process the test started is gone: servers, ranks, the sweep step's ranks
    results = [json.loads(p.read_text()) for p in (jd / "sweep").glob("*.json")]
    assert "sim1" in {r["node"] for r in results}
    pids = [s["pid"] for s in manifest["servers"]] + [r["pid"] for r in results]
    pids += [wf["pid"], int((job["dir"] / "other.pid").read_text())]
    assert all_gone(pids), [p for p in pids if pid_alive(p)]


def test_no_sweep_step_when_every_server_reported(job: dict[str, Any]) -> None:
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    proc = launch(
        job, "--site", "local", "--nodes", "2", "--",
        "mpiexec", "-n", "2", sys.executable, "-c",
        "import warpstore; warpstore.task_store().put(b'x' * (2 << 20))",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = report(job)
    assert rep["servers_reported"] == 2
    assert "sweep" not in rep and "sweep" not in rep["timings_s"]
    assert not (job_dir(job) / "sweep").exists() and not (job_dir(job) / "sweep.log").exists()
    assert "did not report" not in proc.stderr


HUNG_LAUNCHER = """
import os, subprocess, sys, time
# a launcher line's stand-in: rank 0 (node sim0) sweeps, rank 1 (node sim1) hangs
cmd = sys.argv[1:]
env = dict(os.environ, PMI_RANK="0")
subprocess.run(cmd, env=env)
hung = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(os.environ["HUNG_PID"], "w").write(f"{os.getpid()} {hung.pid}")
hung.wait()
"""


def test_a_hung_node_is_reported_unchecked_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warpstore.hpc.launcher import _collect_report, _summary, _sweep_nodes

    job_id = f"hung-{os.getpid()}-{time.monotonic_ns()}"
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    script = tmp_path / "launcher.py"
    script.write_text(HUNG_LAUNCHER)
    pids = tmp_path / "pids"
    env = {
        **os.environ,
        "WARPSTORE_SIMULATE_NODES": "1",
        "WARPSTORE_JOB_ID": job_id,
        "HUNG_PID": str(pids),
    }
    monkeypatch.delenv("WARPSTORE_SHM_DIR", raising=False)
    # a killed server's segment on sim0, which does answer
    seg_dir = shm.ensure_private_dir(
        Path("/dev/shm") / f"warpstore-{os.getuid()}" / job_id / "sim0-zmq"
    )
    (seg_dir / f"s-999999-{'0' * 32}").touch(mode=0o600)
    t0 = time.monotonic()
    try:
        swept = _sweep_nodes(
            [sys.executable, str(script)], env, tmp_path, job_id, runtime, ["sim0", "sim1"], 5
        )
    finally:
        taken = time.monotonic() - t0
        ids = [int(p) for p in pids.read_text().split()] if pids.exists() else []
        for pid in ids:  # the step ended its stand-in and the hung rank (its session)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert all_gone(ids, timeout=5), "the hung rank outlived the sweep step"
        assert len(ids) == 2
    assert 5 <= taken < 15  # bounded: the timeout, then a short grace to end it
    assert swept["timed_out"] and swept["unchecked"] == ["sim1"]
    assert [Path(p).name for p in swept["checked"]["sim0"]["removed"]] == [f"s-999999-{'0' * 32}"]
    assert not seg_dir.exists()  # swept, and its emptied directory removed
    rep = _collect_report(tmp_path, runtime, {"job_id": job_id, "servers": []}, 0, {}, {}, swept)
    assert rep["segments"] == {
        "sim0": {"removed": 1, "left": 0},
        "sim1": {"removed": 0, "left": 0, "unchecked": True},
    }
    assert rep["sweep"]["unchecked"] == ["sim1"] and rep["sweep"]["timed_out"]
    assert "could not check for leftover shared memory" in _summary(rep, tmp_path)
    assert "sim1." in _summary(rep, tmp_path)
    # a node the launcher checked itself (its own) is not reported unchecked
    here = {"node": "sim1", "removed": [], "left": []}
    rep = _collect_report(tmp_path, runtime, {"job_id": job_id, "servers": []}, 0, {}, here, swept)
    assert rep["segments"]["sim1"] == {"removed": 0, "left": 0}


def test_a_sweep_step_that_cannot_start_never_fails_the_teardown(tmp_path: Path) -> None:
    from warpstore.hpc.launcher import _sweep_killed

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    manifest = {"job_id": "gone", "servers": [{"node": "n1", "pid": 1, "host": "elsewhere"}]}
    swept = _sweep_killed(manifest, [str(tmp_path / "no-such-mpiexec")], {}, tmp_path, runtime)
    assert swept is not None and swept["unchecked"] == ["n1"]
    # a server that reported: nothing to sweep, nothing runs
    report_dir = runtime / "gone" / "nodes" / "n1" / "zmq"
    report_dir.mkdir(parents=True)
    (report_dir / "report.json").write_text(json.dumps({"node": "n1", "pid": 1}))
    assert _sweep_killed(manifest, ["no-such-mpiexec"], {}, tmp_path, runtime) is None


def test_a_killed_server_does_not_hold_the_teardown_for_its_launch(tmp_path: Path) -> None:
    """Under srun the surviving ranks may never exit (MPI's finalization waits on the
    dead one): once every other server reported, the launch is ended in seconds."""
    from warpstore.hpc.launcher import _wait_server_launch

    runtime = tmp_path / "runtime"
    report_dir = runtime / "job" / "nodes" / "n1" / "zmq"
    report_dir.mkdir(parents=True)
    (report_dir / "report.json").write_text(json.dumps({"node": "n1", "pid": 11}))
    manifest = {"servers": [{"node": "n1", "pid": 11}, {"node": "n2", "pid": 22}]}
    step = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        t0 = time.monotonic()
        _wait_server_launch(step, manifest, runtime, [{"node": "n2", "pid": 22}], timeout=60)
        assert time.monotonic() - t0 < 30  # not the 60 s timeout: a short grace, then ended
        assert step.poll() is not None
    finally:
        step.kill()
        step.wait()


def test_each_node_checks_only_its_own_directories_on_a_shared_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several nodes on one host (several slurmd, simulated nodes) share /dev/shm: each
    node's check takes its own segment directories and areas, of every transport, and
    node names with dashes are not confused (``nid-1`` is not ``nid``)."""
    from warpstore.server import direct

    job_id = f"nf-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.delenv("WARPSTORE_SHM_DIR", raising=False)
    base = Path("/dev/shm") / f"warpstore-{os.getuid()}" / job_id
    runtime = tmp_path / "runtime"
    dead = f"s-999999-{'0' * 32}"
    made = {}
    try:
        for node in ("nid", "nid-1", "x1000c0s0b0n0"):
            for transport in ("zmq", "ucx", "margo"):
                d = shm.ensure_private_dir(base / f"{node}-{transport}")
                (d / dead).touch(mode=0o600)
                made[(node, transport)] = d
            # a runtime directory on a RAM file system keeps segments beside the server
            d = shm.ensure_private_dir(runtime / job_id / "nodes" / node / "zmq" / "shm")
            (d / dead).touch(mode=0o600)
        # a killed server's small-object area beside nid-1's zmq directory
        area = base / "nid-1-zmq.small-999999"
        (area / "0").mkdir(parents=True)
        (area / "0" / f"k-{'1' * 32}").write_bytes(b"x")
        assert direct.is_area(area)
        left = shm.leftover_segments(job_id, root=runtime, node="nid-1")
        assert sorted(str(p.relative_to(tmp_path if runtime in p.parents else base))
                      for p in left) == sorted(
            ["nid-1-margo/" + dead, "nid-1-ucx/" + dead, "nid-1-zmq/" + dead,
             f"nid-1-zmq.small-999999/0/k-{'1' * 32}",
             f"runtime/{job_id}/nodes/nid-1/zmq/shm/{dead}"]
        )  # fmt: skip
        removed = shm.cleanup_job(job_id, root=runtime, node="nid-1")
        assert sorted(removed) == sorted(left) and not area.exists()
        assert shm.leftover_segments(job_id, root=runtime, node="nid-1") == []
        # the other nodes' files are all still there
        for node in ("nid", "x1000c0s0b0n0"):
            assert len(shm.leftover_segments(job_id, root=runtime, node=node)) == 4
    finally:
        shm.cleanup_job(job_id, root=runtime, everything=True)
