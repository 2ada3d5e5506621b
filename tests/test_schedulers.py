"""Rendered job scripts run end to end: PBS through the qsub stand-in, Slurm for real.

PBS Pro cannot be installed here, so each PBS site's script goes through
``tests/pbs_standin`` (qsub/qstat/qdel that read the directives as PBS does and
run the script with ``PBS_JOBID``/``PBS_NODEFILE``; ``site-bin`` stands in for
the site's ``module``, ``conda`` and PALS ``mpiexec``). Slurm is Debian's
slurm-wlm with two slurmd "nodes" on this host (tests/slurm_cluster.py); the
tests skip without it unless ``WARPSTORE_REQUIRE_SLURM=1`` (CI), where a
missing Slurm fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import kill_all, processes_matching
from tests.slurm_cluster import SlurmCluster, available

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "pbs_standin"
EXAMPLE = REPO / "examples" / "mpi_workflow.py"

pytestmark = pytest.mark.timeout(240)


def cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python or env.get("WARPSTORE_TEST_PYTHON", sys.executable), "-m", "warpstore", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def user_venv(where: Path) -> Path:
    """A user's virtual environment with this checkout of warpstore installed, on no PATH.

    ``--system-site-packages`` gives it the test machine's mpi4py, pyzmq and ucxx; a .pth
    file installs this checkout (what ``pip install -e`` leaves behind, without a build
    backend or the network). The venv's own site-packages come first, so this checkout
    wins over any other warpstore the base interpreter has.
    """
    venv = where / "user-venv"
    subprocess.run(
        [os.path.join(sys.base_prefix, "bin", "python3"), "-m", "venv", "--without-pip",
         "--system-site-packages", str(venv)],
        check=True, timeout=120,
    )  # fmt: skip
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    (site_packages / "warpstore-checkout.pth").write_text(str(REPO) + "\n")
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import warpstore; print(warpstore.__file__)"],
        capture_output=True, text=True, cwd="/", check=True,
    ).stdout  # fmt: skip
    assert found.startswith(str(REPO)), found
    return venv


def wait_state(
    env: dict[str, str], cwd: Path, job_id: str, done: set[str], timeout: float = 150
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = cli("status", job_id, env=env, cwd=cwd).stdout
        state = out.split()[1] if out.split() else ""
        if state in done:
            return out
        assert time.monotonic() < deadline, f"job {job_id} still {out!r}"
        time.sleep(0.5)


def no_leftovers(tag: str) -> None:
    time.sleep(0.3)
    left = processes_matching(tag)
    what = []
    for pid in left:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            what.append(f"{pid}: {cmdline[:120]!r}")
        except OSError:
            what.append(str(pid))
    kill_all(tag)
    assert not left, f"processes left behind: {what}"


# -- PBS through the stand-in ------------------------------------------------------------


def login_path() -> str:
    """PATH as a login shell in the job gets it: without the submitter's virtual env."""
    venv_bin = str(Path(sys.prefix) / "bin")
    return os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if p and os.path.abspath(p) != venv_bin
    )


@pytest.fixture(scope="module")
def uvenv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return user_venv(tmp_path_factory.mktemp("venv"))


@pytest.fixture
def pbs(tmp_path: Path, uvenv: Path) -> Iterator[dict[str, Any]]:
    tag = f"wstest-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "PATH": f"{STANDIN / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PBS_STANDIN_DIR": str(tmp_path / "pbs"),
        "PBS_STANDIN_SITE_BIN": str(STANDIN / "site-bin"),
        "PBS_STANDIN_LOGIN_PATH": login_path(),
        "PBS_STANDIN_SYSTEM": "generic",
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "WARPSTORE_TEST_TAG": tag,
        # as a user would: submit from a venv that is not activated, not on PATH
        "WARPSTORE_TEST_PYTHON": str(uvenv / "bin" / "python"),
    }
    env.pop("VIRTUAL_ENV", None)
    for var in ("WARPSTORE_MANIFEST", "WARPSTORE_RUNTIME_DIR", "SLURM_CONF"):
        env.pop(var, None)
    work = tmp_path / "work"
    work.mkdir()
    yield {"env": env, "dir": work, "tag": tag, "state": tmp_path / "pbs", "venv": uvenv}
    no_leftovers(tag)


PBS_SITES = {
    # site: (extra render args, the stand-in's rule book: tests/pbs_standin/facts.py)
    "polaris": (["-A", "MyProject", "--set", "interface=lo"], "polaris"),
    "aurora": (["-A", "MyProject", "--set", "interface=lo"], "aurora"),
    "generic-pbs": ([], "generic"),
}


@pytest.mark.parametrize("site", sorted(PBS_SITES))
def test_pbs_script_runs_end_to_end_through_qsub(pbs: dict[str, Any], site: str) -> None:
    extra, system = PBS_SITES[site]
    pbs["env"]["PBS_STANDIN_SYSTEM"] = system
    proc = cli(
        "submit", "--site", site, "--nodes", "1", "--walltime", "00:10:00", *extra,
        "-o", "job.pbs", "--", "mpiexec", "-n", "2", sys.executable, str(EXAMPLE),
        "--size-mib", "1", env=pbs["env"], cwd=pbs["dir"],
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert job_id.endswith(".standin") and job_id.split(".")[0].isdigit()
    final = wait_state(pbs["env"], pbs["dir"], job_id, {"F"})
    output = (pbs["dir"] / f"warpstore.o{job_id.split('.')[0]}").read_text()
    assert "exit 0" in final, output
    assert "workflow OK: 2 ranks" in output
    job_dir = pbs["dir"] / f"warpstore-{job_id}"
    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["scheduler"] == "pbs" and manifest["job_id"] == job_id
    assert len(manifest["servers"]) == 1
    report = json.loads((job_dir / "report.json").read_text())
    assert report["exit_code"] == 0 and report["nodes"][0]["puts"] == 3
    # the site's own commands were called the way its documentation says
    calls = (pbs["state"] / "site-commands.log").read_text()
    line = next(c for c in calls.splitlines() if "warpstore.hpc.server_rank" in c)
    if site == "polaris":
        assert "module use /soft/modulefiles" in calls and "conda activate base" in calls
        assert line.startswith("mpiexec -n 1 --ppn 1 --depth 32 --cpu-bind none --single-node-vni")
        assert line.endswith("PALS_LOCAL_LAUNCH=0")
    if site == "aurora":
        lines = calls.splitlines()
        assert lines.index("module use /soft/modulefiles") < lines.index("module load daos")
        assert "--no-vni" in line and "--single-node-vni" not in line
    # the job found warpstore through the environment the script activated, not the PATH
    assert f"source {pbs['venv'] / 'bin' / 'activate'}" in (pbs["dir"] / "job.pbs").read_text()


@pytest.mark.parametrize(
    ("system", "args", "refusal"),
    [
        # what the rendered scripts used to ask for, and real qsub refuses
        ("aurora", ["--site", "aurora", "-A", "P", "--directive", "-l daos=default"],
         "Unknown resource Resource_List.daos"),
        ("aurora", ["--site", "aurora", "-A", "P", "--set", "filesystems=flare:daos_user"],
         "invalid filesystem(s) daos_user"),
        ("polaris", ["--site", "polaris", "-A", "P", "--directive", "queue=-q debug",
                     "--nodes", "4"], "Job violates queue"),
        ("polaris", ["--site", "polaris", "-A", "P", "--directive", "account="],
         "Account_Name is required"),
        ("polaris", ["--site", "polaris", "-A", "P", "--directive", "walltime=-l walltime=2:00:00"],
         "walltime"),
    ],
)  # fmt: skip
def test_pbs_standin_refuses_what_qsub_refuses(
    pbs: dict[str, Any], system: str, args: list[str], refusal: str
) -> None:
    pbs["env"]["PBS_STANDIN_SYSTEM"] = system
    proc = cli("submit", *args, "-o", "job.pbs", "--", "true", env=pbs["env"], cwd=pbs["dir"])
    assert proc.returncode == 1, proc.stdout
    assert refusal in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pbs_qdel_stops_the_job_and_its_servers(pbs: dict[str, Any]) -> None:
    started = pbs["dir"] / "started"
    code = f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(120)"
    proc = cli(
        "submit", "--site", "generic-pbs", "-o", "job.pbs", "--", sys.executable, "-c", code,
        env=pbs["env"], cwd=pbs["dir"],
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    assert cli("cancel", job_id, env=pbs["env"], cwd=pbs["dir"]).returncode == 0
    final = wait_state(pbs["env"], pbs["dir"], job_id, {"F"})
    assert "exit 0" not in final
    report = json.loads((pbs["dir"] / f"warpstore-{job_id}" / "report.json").read_text())
    assert report["exit_code"] == 128 + 15 and report["servers_reported"] == 1


def test_pbs_walltime_signal_lets_the_launcher_write_its_report(pbs: dict[str, Any]) -> None:
    """PBS has no early-signal directive: the script's watcher sends SIGTERM before the
    walltime (here 10 s, so 2 s before), the launcher tears down and writes the report."""
    code = "import time; time.sleep(60)"
    proc = cli(
        "submit", "--site", "generic-pbs", "--walltime", "10s", "-o", "job.pbs", "--",
        sys.executable, "-c", code, env=pbs["env"], cwd=pbs["dir"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    started = time.monotonic()
    final = wait_state(pbs["env"], pbs["dir"], job_id, {"F"}, timeout=60)
    assert time.monotonic() - started < 30, final
    record = json.loads((pbs["state"] / f"{job_id}.json").read_text())
    assert "comment" not in record, record["comment"]  # ended before PBS's walltime kill
    report = json.loads((pbs["dir"] / f"warpstore-{job_id}" / "report.json").read_text())
    assert report["exit_code"] == 128 + 15 and report["servers_reported"] == 1


def test_pbs_standin_enforces_the_walltime(pbs: dict[str, Any]) -> None:
    """Without the early signal PBS's own SIGTERM at the limit is all the launcher gets."""
    proc = cli(
        "submit", "--site", "generic-pbs", "--walltime", "3s", "--set", "early_signal=0",
        "-o", "job.pbs", "--", "sleep", "60", env=pbs["env"], cwd=pbs["dir"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    wait_state(pbs["env"], pbs["dir"], job_id, {"F"}, timeout=60)
    record = json.loads((pbs["state"] / f"{job_id}.json").read_text())
    assert record["comment"] == "job killed: walltime exceeded limit 00:00:03"


def test_status_of_an_unknown_job_is_not_success(pbs: dict[str, Any]) -> None:
    proc = cli("status", "99999.standin", env=pbs["env"], cwd=pbs["dir"])
    assert proc.returncode == 3 and "UNKNOWN" in proc.stdout


# -- real Slurm --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    why = available()
    if why is not None:
        if os.environ.get("WARPSTORE_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required here (WARPSTORE_REQUIRE_SLURM=1) but {why}")
        pytest.skip(f"no Slurm: {why}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sjob(slurm: SlurmCluster, uvenv: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    tag = f"wstest-{uuid.uuid4().hex[:12]}"
    # as a user would: render and submit from a venv that is not activated, not on PATH
    env = {
        **slurm.env,
        "PATH": login_path(),
        "WARPSTORE_TEST_TAG": tag,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "WARPSTORE_TEST_PYTHON": str(uvenv / "bin" / "python"),
    }
    env.pop("VIRTUAL_ENV", None)
    for var in ("WARPSTORE_MANIFEST", "WARPSTORE_RUNTIME_DIR", "WARPSTORE_SIMULATE_NODES"):
        env.pop(var, None)
    yield {"env": env, "dir": tmp_path, "tag": tag}
    no_leftovers(tag)


@pytest.mark.parametrize("connector", ["zmq", "ucx"])
def test_slurm_two_node_job_with_sbatch_wait(sjob: dict[str, Any], connector: str) -> None:
    if connector == "ucx":
        pytest.importorskip("ucxx")
    env, work = sjob["env"], sjob["dir"]
    proc = cli(
        "render", "--site", "generic-slurm", "--nodes", "2", "--walltime", "00:05:00",
        "--connector", connector, "-o", "job.sh", "--",
        "srun", "--overlap", "--mpi=pmi2", "--ntasks-per-node=1", "-n", "2",
        "python", str(EXAMPLE), "--size-mib", "1",  # `python` of the env the script activates
        env=env, cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    script = (work / "job.sh").read_text()
    assert script.startswith("#!/bin/bash -l\n")  # /etc/profile resets PATH in the job
    assert f"source {env['WARPSTORE_TEST_PYTHON'].rsplit('/', 2)[0]}/bin/activate" in script
    sub = subprocess.run(
        ["sbatch", "--parsable", "--wait", "job.sh"],
        env=env, cwd=work, capture_output=True, text=True, timeout=200,
    )
    job_id = sub.stdout.strip().split(";")[0]
    output = (work / f"warpstore-{job_id}.out").read_text()
    assert sub.returncode == 0, sub.stderr + output
    assert "workflow OK: 2 ranks" in output
    manifest = json.loads((work / f"warpstore-{job_id}" / "manifest.json").read_text())
    assert manifest["scheduler"] == "slurm" and manifest["nodes"] == ["n1", "n2"]
    assert manifest["connector"]["type"] == connector
    assert sorted(s["node"] for s in manifest["servers"]) == ["n1", "n2"]
    assert len({s["address"] for s in manifest["servers"]}) == 2
    report = json.loads((work / f"warpstore-{job_id}" / "report.json").read_text())
    assert report["exit_code"] == 0 and report["servers_reported"] == 2
    assert sum(n["puts"] for n in report["nodes"]) == 3
    # the consumer on n2 fetched from the producer's server on n1
    assert "from node n1" in output
    final = cli("status", job_id, env=env, cwd=work)
    assert "COMPLETED" in final.stdout and "exit 0" in final.stdout


def test_slurm_killed_server_node_is_swept_by_this_jobs_teardown(sjob: dict[str, Any]) -> None:
    """The server on n2 (not the launcher's node, though on the same host: /dev/shm is
    shared, so only the node names keep them apart) is SIGKILLed after a 2 MiB put: the
    launcher's sweep step (`srun --overlap`, one task per node) removes its segment and
    small-object area in this job, and the report says so for n2."""
    from tests.test_launch_sweep import WORKFLOW
    from warpstore.server import shm
    from warpstore.server.runtime import pid_alive

    env, work = sjob["env"], sjob["dir"]
    (work / "wf.py").write_text(WORKFLOW)
    proc = cli(
        "render", "--site", "generic-slurm", "--nodes", "2", "--walltime", "00:05:00",
        "-o", "job.sh", "--", "srun", "--overlap", "--mpi=pmi2", "--ntasks-per-node=1", "-n",
        "2", "python", str(work / "wf.py"), str(work / "n2.json"), "n2", env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sub = subprocess.run(
        ["sbatch", "--parsable", "--wait", "job.sh"],
        env=env, cwd=work, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    job_id = sub.stdout.strip().split(";")[0]
    jd = work / f"warpstore-{job_id}"
    try:
        output = (work / f"warpstore-{job_id}.out").read_text()
        assert sub.returncode == 0, sub.stderr + output
        held = json.loads((work / "n2.json").read_text())["held"]
        assert any(Path(p).name.startswith("s-") for p in held), held
        assert shm.leftover_segments(job_id, root=jd / "runtime", node="n2") == []
        base = Path("/dev/shm") / f"warpstore-{os.getuid()}" / job_id
        assert not (base.is_dir() and list(base.glob("n2-*")))  # segments nor area
        report = json.loads((jd / "report.json").read_text())
        assert report["exit_code"] == 0
        assert "n2" in report["sweep"]["unreported"] and report["sweep"]["unchecked"] == []
        assert report["segments"]["n2"]["removed"] >= 2, report["segments"]
        assert "left on node n2" in output
        results = [json.loads(p.read_text()) for p in (jd / "sweep").glob("*.json")]
        assert sorted(r["node"] for r in results) == ["n1", "n2"]
        pids = [r["pid"] for r in results] + [s["pid"] for s in json.loads(
            (jd / "manifest.json").read_text())["servers"]]
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if pid_alive(p)]
    finally:
        shm.cleanup_job(job_id, root=jd / "runtime", everything=True)


def test_slurm_step_gets_every_rank_it_asks_for(sjob: dict[str, Any]) -> None:
    """No --ntasks-per-node in the header to cap later steps, and whole nodes (--exclusive)
    so a step may use every CPU: an mpi4py app with 2 ranks on each of 2 nodes gets 4."""
    env, work = sjob["env"], sjob["dir"]
    app = (
        "from mpi4py import MPI; import os, socket; c = MPI.COMM_WORLD; "
        "print('rank', c.rank, 'of', c.size, 'on', os.environ['SLURMD_NODENAME'], flush=True)"
    )
    proc = cli(
        "render", "--site", "generic-slurm", "--nodes", "2", "--walltime", "5m", "-o", "job.sh",
        "--", "srun", "--overlap", "--mpi=pmi2", "--nodes=2", "--ntasks-per-node=2",
        "python", "-c", app, env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sub = subprocess.run(
        ["sbatch", "--parsable", "--wait", "job.sh"],
        env=env, cwd=work, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    job_id = sub.stdout.strip().split(";")[0]
    output = (work / f"warpstore-{job_id}.out").read_text()
    assert sub.returncode == 0, sub.stderr + output
    ranks = sorted(line for line in output.splitlines() if line.startswith("rank "))
    assert [r.split()[1:4] for r in ranks] == [[str(i), "of", "4"] for i in range(4)], output
    assert sorted(r.split()[-1] for r in ranks) == ["n1", "n1", "n2", "n2"]


def test_slurm_early_signal_reaches_the_launcher_before_the_limit(sjob: dict[str, Any]) -> None:
    """`--signal=B:TERM@N` signals only the batch shell: the script must `exec` the launcher
    for the signal to reach it. A 1-minute job asking for SIGTERM 30 s early ends before
    its limit (not TIMEOUT), with the report written."""
    env, work = sjob["env"], sjob["dir"]
    proc = cli(
        "submit", "--site", "generic-slurm", "--walltime", "1", "--set", "early_signal=30",
        "-o", "job.sh", "--", "sleep", "300", env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert "#SBATCH --signal=B:TERM@30" in (work / "job.sh").read_text()
    final = wait_state(env, work, job_id, {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"}, 150)
    assert "TIMEOUT" not in final, final
    report = json.loads((work / f"warpstore-{job_id}" / "report.json").read_text())
    assert report["exit_code"] == 128 + 15 and report["servers_reported"] == 1


def test_slurm_submit_status_cancel(sjob: dict[str, Any]) -> None:
    env, work = sjob["env"], sjob["dir"]
    code = "import time; time.sleep(120)"
    proc = cli(
        "submit", "--site", "generic-slurm", "--nodes", "1", "-o", "job.sh", "--",
        sys.executable, "-c", code, env=env, cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert job_id.isdigit()
    wait_state(env, work, job_id, {"RUNNING"}, timeout=60)
    deadline = time.monotonic() + 60
    while not list(work.glob(f"warpstore-{job_id}/manifest.json")):
        assert time.monotonic() < deadline, "servers never became ready"
        time.sleep(0.2)
    assert cli("cancel", job_id, env=env, cwd=work).returncode == 0
    final = wait_state(env, work, job_id, {"CANCELLED", "COMPLETED", "FAILED"})
    assert "CANCELLED" in final
    deadline = time.monotonic() + 30  # slurm signals the batch step; the launcher tears down
    while not (work / f"warpstore-{job_id}" / "report.json").exists():
        assert time.monotonic() < deadline, "no report after scancel"
        time.sleep(0.2)


def test_slurm_submit_to_unknown_partition_shows_stderr(sjob: dict[str, Any]) -> None:
    proc = cli(
        "submit", "--site", "generic-slurm", "--queue", "nosuchpartition", "-o", "job.sh",
        "--", "true", env=sjob["env"], cwd=sjob["dir"],
    )
    assert proc.returncode == 1
    assert "invalid partition" in proc.stderr.lower() and "Traceback" not in proc.stderr
