"""`warpstore launch` when things go wrong: nothing left running, one line, a report.

Each test uses the ``job`` fixture (tests/conftest.py), which tags every process
the launch starts and fails the test if any is left afterwards; the stop signals
(SIGTERM, SIGUSR1, SIGINT) are tested in tests/test_launch.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.launching import (
    LAUNCH,
    REPO,
    RUN,
    all_gone,
    assert_one_line,
    error_lines,
    job_dir,
    launch,
    report,
    running,
    sleeper,
    written,
)
from warpstore.server.runtime import pid_alive

pytestmark = pytest.mark.timeout(180)


def test_mistyped_command_fails_like_a_shell(job: dict[str, Any]) -> None:
    proc = launch(job, "--site", "local", "--", "pyhton", "x.py")
    assert proc.returncode == 127
    assert_one_line(proc, "pyhton: command not found", "not on PATH")
    rep = report(job)
    assert rep["exit_code"] == 127 and "pyhton" in rep["error"]
    # the fixture proves no server (or mpiexec) was left behind


def test_not_executable_is_126(job: dict[str, Any]) -> None:
    script = job["dir"] / "wf.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    proc = launch(job, "--site", "local", "--", str(script))
    assert proc.returncode == 126
    assert_one_line(proc, "wf.sh: cannot execute: Permission denied", "chmod +x")


def test_workflow_that_fails_to_exec_tears_servers_down(job: dict[str, Any]) -> None:
    """Executable, but not a program (no #! line): found, servers up, exec fails."""
    bogus = job["dir"] / "bogus"
    bogus.write_bytes(b"\x00\x01\x02 not a program\n")
    bogus.chmod(0o755)
    proc = launch(job, "--site", "local", "--", str(bogus))
    assert proc.returncode == 126, proc.stderr
    assert_one_line(proc, "bogus: cannot run: Exec format error")
    rep = report(job)
    # the server ran and was stopped in order: it reported
    assert rep["exit_code"] == 126 and rep["servers_reported"] == 1
    assert "Exec format error" in rep["error"]
    assert "warpstore: job" in proc.stdout


def test_sigkill_of_the_launcher_stops_its_servers(job: dict[str, Any]) -> None:
    started = job["dir"] / "workflow.pid"
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    argv = [*LAUNCH, "--site", "local", "--nodes", "2", "--",
            sys.executable, "-c", sleeper(started)]
    workflow_pid = None
    try:
        with running(job, argv, written(started), capture=False) as launcher:
            workflow_pid = int(started.read_text())
            servers = [int(s["pid"]) for s in json.loads(
                (job_dir(job) / "manifest.json").read_text())["servers"]]
            assert len(servers) == 2 and all(pid_alive(p) for p in servers)
            launcher.kill()
            launcher.wait()
        assert all_gone(servers), "servers outlived their launcher"
        # they stopped in order: each wrote its report and removed its server.json
        runtime = job_dir(job) / "runtime"
        assert len(list(runtime.glob("*/nodes/*/zmq/report.json"))) == 2
        assert not list(runtime.glob("*/nodes/*/zmq/server.json"))
        logs = "".join(p.read_text() for p in runtime.glob("*/nodes/*/zmq/*.log"))
        logs += (job_dir(job) / "servers.log").read_text()
        assert "launcher pid" in logs and "has exited" in logs
    finally:
        if workflow_pid is not None:  # the workflow is the test's to end (the job's, really)
            with contextlib.suppress(ProcessLookupError):
                os.kill(workflow_pid, signal.SIGKILL)


def _venv_without_mpiexec(
    tmp: Path, system_site_packages: bool = True
) -> tuple[Path, dict[str, str]]:
    """A Python whose directory holds no mpiexec, and an environment whose PATH has none.

    The venv reuses this interpreter's packages (--system-site-packages) and
    finds this checkout of warpstore through PYTHONPATH; without system site
    packages it has nothing at all, even where the base interpreter has warpstore.
    """
    venv = tmp / "venv"
    site = ["--system-site-packages"] if system_site_packages else []
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", *site, str(venv)],
        check=True, timeout=60,
    )
    empty = tmp / "empty-bin"
    empty.mkdir()
    return venv / "bin" / "python", {"PATH": str(empty), "PYTHONPATH": str(REPO)}


def _real_mpi_bin() -> Path:
    """The directory of the mpich wheel's programs (not a pyenv shim)."""
    for candidate in (Path(os.path.realpath(sys.executable)).parent, Path(sys.executable).parent):
        if (candidate / "hydra_pmi_proxy").exists():
            return candidate
    found = shutil.which("hydra_pmi_proxy")
    if not found:
        pytest.skip("the mpich wheel's programs are not installed")
    return Path(found).parent


def test_missing_mpiexec_names_the_launcher_line_and_the_fix(job: dict[str, Any]) -> None:
    python, extra = _venv_without_mpiexec(job["dir"])
    proc = subprocess.run(
        [str(python), "-m", "warpstore", "launch", "--site", "local", "--", str(python), "-V"],
        cwd=job["dir"], env={**job["env"], **extra}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert_one_line(
        proc,
        "`mpiexec`",
        "server launcher line of site 'local': `mpiexec -n 1`",
        f"nor beside {python}",
        "pip install 'warpstore[mpich]'",
        "--set launcher.servers",
    )
    assert "mpiexec" in report(job)["error"]


def test_mpiexec_beside_the_interpreter_is_used(job: dict[str, Any]) -> None:
    """What `pip install mpich` into a venv gives: mpiexec in the venv's bin, not on PATH."""
    python, extra = _venv_without_mpiexec(job["dir"])
    mpi_bin = _real_mpi_bin()
    for name in ("mpiexec", "mpiexec.hydra", "hydra_pmi_proxy"):
        (python.parent / name).symlink_to(mpi_bin / name)
    proc = subprocess.run(
        [str(python), "-m", "warpstore", "launch", "--site", "local", "--",
         "mpiexec", "-n", "2", str(python), "-c",
         # one write(2) per rank: print() may write in pieces that interleave between ranks
         "import os; from mpi4py import MPI; "
         "os.write(1, b'sum %d\\n' % MPI.COMM_WORLD.allreduce(1))"],
        cwd=job["dir"], env={**job["env"], **extra}, capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("sum 2") == 2
    assert report(job)["servers_reported"] == 1


def test_missing_srun_says_run_inside_slurm(job: dict[str, Any]) -> None:
    python, extra = _venv_without_mpiexec(job["dir"])
    proc = subprocess.run(
        [str(python), "-m", "warpstore", "launch", "--site", "local",
         "--set", "launcher.servers=srun --nodes={nodes} --ntasks-per-node=1 --overlap",
         "--", str(python), "-V"],
        cwd=job["dir"], env={**job["env"], **extra}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert_one_line(proc, "`srun`", "inside a Slurm allocation")


def test_redis_down_fails_before_the_workflow(job: dict[str, Any]) -> None:
    port = free_port()  # nothing listens there
    marker = job["dir"] / "workflow-ran"
    proc = launch(
        job, "--site", "local", "--connector", "redis",
        "--set", "connector.redis.host=127.0.0.1", "--set", f"connector.redis.port={port}",
        "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
    )
    assert proc.returncode == 1
    assert_one_line(proc, f"Redis at 127.0.0.1:{port} does not answer", "connector.redis.port")
    assert not marker.exists()
    assert "does not answer" in report(job)["error"]


def test_local_site_refuses_more_nodes_than_this_machine(job: dict[str, Any]) -> None:
    proc = launch(job, "--site", "local", "--nodes", "2", "--", "true")
    assert proc.returncode == 1
    assert_one_line(proc, "--nodes 2", "one node", "--nodes 1")


def test_debug_shows_the_traceback(job: dict[str, Any]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "warpstore", "--debug", "launch", "--", "pyhton"],
        cwd=job["dir"], env=job["env"], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "UserError: pyhton: command not found" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "warpstore", "launch", "--", "pyhton"],
        cwd=job["dir"], env={**job["env"], "WARPSTORE_DEBUG": "1"},
        capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" in proc.stderr


# --- the launch/ wrappers ---------------------------------------------------------------

MPI_APP = (
    "import os\n"
    "from mpi4py import MPI\n"
    "import warpstore\n"
    "c = MPI.COMM_WORLD\n"
    "s = warpstore.task_store()\n"
    "key = s.put(c.rank * 10)\n"
    "keys = c.allgather(key)\n"
    "total = c.allreduce(sum(s.get(k) for k in keys))\n"
    "print(f'rank {c.rank} of {c.size}: allreduce {total}', flush=True)\n"
)


def test_warpstore_run_mpi_app_initialises_mpi_standalone(job: dict[str, Any]) -> None:
    """An app that calls MPI needs the rank's inherited PMI descriptor (PMI_FD)."""
    job["env"]["WARPSTORE_PYTHON"] = sys.executable  # what a rendered job script exports
    (job["dir"] / "app.py").write_text(MPI_APP)
    proc = subprocess.run(
        ["mpiexec", "-n", "2", str(RUN), sys.executable, "app.py"],
        cwd=job["dir"], env=job["env"], capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 of 2: allreduce 20" in proc.stdout
    assert "rank 1 of 2: allreduce 20" in proc.stdout


def test_warpstore_run_mpi_app_inside_launch(job: dict[str, Any]) -> None:
    (job["dir"] / "app.py").write_text(MPI_APP)
    proc = launch(job, "--site", "local", "--", "mpiexec", "-n", "2", str(RUN),
                  sys.executable, "app.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 of 2: allreduce 20" in proc.stdout
    assert "rank 1 of 2: allreduce 20" in proc.stdout
    assert sum(n["puts"] for n in report(job)["nodes"]) == 2


def test_wrappers_say_which_python_to_use(job: dict[str, Any]) -> None:
    """A Python without warpstore (python3 on a job's PATH): one line naming the fix."""
    python, extra = _venv_without_mpiexec(job["dir"], system_site_packages=False)
    path = extra["PATH"] + ":/usr/bin:/bin"
    env = {**job["env"], "WARPSTORE_PYTHON": str(python), "PATH": path}
    env.pop("PYTHONPATH", None)  # that Python must not find this checkout
    for wrapper in (RUN, RUN.parent / "warpstore-launch"):
        proc = subprocess.run(
            [str(wrapper), "true"], env=env, capture_output=True, text=True, timeout=60,
            cwd=job["dir"],  # not the checkout: `python -c` would import warpstore from there
        )
        assert proc.returncode != 0
        (line,) = proc.stderr.strip().splitlines()
        assert f"{wrapper.name}: {python}: cannot import warpstore" in line
        assert "WARPSTORE_PYTHON=" in line
    proc = subprocess.run(
        [str(RUN), "true"], env={**env, "WARPSTORE_PYTHON": "/nonexistent/python"},
        capture_output=True, text=True, timeout=60, cwd=job["dir"],
    )
    assert proc.returncode == 127 and "WARPSTORE_PYTHON=/nonexistent/python" in proc.stderr


def test_warpstore_launch_wrapper_uses_warpstore_python(job: dict[str, Any]) -> None:
    _, extra = _venv_without_mpiexec(job["dir"])
    env = {**job["env"], "WARPSTORE_PYTHON": sys.executable, "PATH": extra["PATH"]}
    env["PATH"] += os.pathsep.join(["", str(_real_mpi_bin()), "/usr/bin", "/bin"])
    proc = subprocess.run(
        [str(RUN.parent / "warpstore-launch"), "--site", "local", "--",
         sys.executable, "-c", "import os; print('manifest', os.environ['WARPSTORE_MANIFEST'])"],
        cwd=job["dir"], env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "manifest " + str(job_dir(job) / "manifest.json") in proc.stdout


# --- the servers' watchdog, in process ---------------------------------------------------


def test_lease_not_renewed_stops_a_server_on_another_host(tmp_path: Path) -> None:
    from warpstore.server.watchdog import watch_launcher

    lease = tmp_path / "launcher.lease"
    lease.write_text(json.dumps({"pid": 1, "host": "not-this-host", "beat": 1, "expires_s": 0.5}))
    lost: list[str] = []
    done = threading.Event()
    thread = watch_launcher(lambda r: (lost.append(r), done.set()), str(lease), poll_s=0.05)
    assert thread is not None
    assert done.wait(10)
    assert "was not renewed for 0.5 s" in lost[0]
    thread.join(5)


def test_renewed_lease_and_live_launcher_keep_the_server(tmp_path: Path) -> None:
    from warpstore.server.watchdog import Lease, watch_launcher

    lease = Lease(tmp_path / "launcher.lease", renew_s=0.05, expires_s=0.5).start()
    lost: list[str] = []
    stop = threading.Event()
    thread = watch_launcher(lost.append, str(lease.path), poll_s=0.05, stop=stop)
    assert thread is not None
    time.sleep(1.5)  # three expiry periods: only renewal keeps it alive
    stop.set()
    lease.stop()
    thread.join(5)
    assert lost == []


def test_reused_pid_is_not_the_launcher(tmp_path: Path) -> None:
    from warpstore.server.watchdog import launcher_gone, pid_start_time

    me = os.getpid()
    start = pid_start_time(me)
    assert start is not None
    import socket

    here = socket.gethostname()
    assert launcher_gone({"pid": me, "host": here, "pid_start": start}) is None
    reused = {"pid": me, "host": here, "pid_start": start - 1}
    assert "another process" in str(launcher_gone(reused))
    assert launcher_gone({"pid": me, "host": "elsewhere", "pid_start": start - 1}) is None


def test_sigkill_of_a_standalone_warpstore_run_leader_stops_its_server(
    job: dict[str, Any],
) -> None:
    """Run standalone, the node leader spawned the server; killed, it cannot stop it."""
    from tests.procs import server_infos

    job["env"]["WARPSTORE_PYTHON"] = sys.executable
    job["env"]["WARPSTORE_SITE"] = "local"
    started = job["dir"] / "app.pid"
    app_pid = None
    try:
        with running(job, [str(RUN), sys.executable, "-c", sleeper(started)], written(started),
                     capture=False) as wrapper:
            app_pid = int(started.read_text())
            (info,) = server_infos(Path(job["env"]["WARPSTORE_RUNTIME_DIR"]))
            server = int(info["pid"])
            assert pid_alive(server)
            wrapper.kill()
            wrapper.wait()
        assert all_gone([server]), "the server outlived the wrapper that started it"
    finally:
        if app_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(app_pid, signal.SIGKILL)


def test_sigterm_while_servers_start_ends_them_and_reports(job: dict[str, Any]) -> None:
    """The walltime signal can come before the workflow starts (a slow server launch)."""
    marker = job["dir"] / "workflow-ran"
    argv = [*LAUNCH, "--site", "local", "--set", "launcher.servers=sh -c 'sleep 60' never-ready",
            "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    with running(job, argv, lambda: bool(list(job["dir"].glob("warpstore-*/servers.log"))),
                 timeout=30) as proc:
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert "stopped by SIGTERM before the workflow started" in line
    assert not marker.exists()
    assert report(job)["exit_code"] == 128 + signal.SIGTERM
    # the fixture proves the `sh -c 'sleep 60'` server launch was ended


def test_example_help_exits_zero_without_mpi_abort() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mpi_workflow.py"), "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mpi_workflow.py") and "--size-mib" in proc.stdout
    assert "Abort" not in proc.stderr and "Traceback" not in proc.stderr


def test_request_stop_through_the_lease(tmp_path: Path) -> None:
    """How the launcher stops its servers without their network (cxi from the batch shell)."""
    from warpstore.server.watchdog import Lease, watch_launcher

    lease = Lease(tmp_path / "launcher.lease", renew_s=0.05).start()
    lost: list[str] = []
    done = threading.Event()
    thread = watch_launcher(lambda r: (lost.append(r), done.set()), str(lease.path), poll_s=0.05)
    assert thread is not None
    time.sleep(0.3)
    assert not done.is_set()
    lease.request_stop()
    assert done.wait(5)
    assert "asked its servers to stop" in lost[0]
    thread.join(5)


def test_warpstore_run_with_a_serverless_connector_just_runs_the_app(
    job: dict[str, Any],
) -> None:
    """The same job line works with --connector file: nothing to start, the app runs."""
    (job["dir"] / "app.py").write_text(MPI_APP)
    proc = launch(
        job, "--site", "local", "--connector", "file",
        "--set", f"connector.file.store_dir={job['dir'] / 'objects'}", "--",
        "mpiexec", "-n", "2", str(RUN), sys.executable, "app.py",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 1 of 2: allreduce 20" in proc.stdout
    assert "used the file connector" in proc.stdout


def test_launcher_pid_not_visible_from_the_start_falls_back_to_the_lease(
    tmp_path: Path,
) -> None:
    """Same host name, another pid namespace (a container): no false alarm from the pid."""
    import socket

    from warpstore.server.watchdog import watch_launcher

    lease = tmp_path / "launcher.lease"
    gone_pid = 2**22 + 12345  # above pid_max's default: no such process here
    lease.write_text(json.dumps(
        {"pid": gone_pid, "host": socket.gethostname(), "beat": 1, "expires_s": 1.0}
    ))
    lost: list[str] = []
    done = threading.Event()
    thread = watch_launcher(lambda r: (lost.append(r), done.set()), str(lease), poll_s=0.05)
    assert thread is not None
    time.sleep(0.5)
    assert not done.is_set(), lost  # the pid alone is not believed
    assert done.wait(10)  # but a lease that is never renewed still expires
    assert "was not renewed" in lost[0]
    thread.join(5)
