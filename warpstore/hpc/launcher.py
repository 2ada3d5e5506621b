"""``warpstore launch``: servers on every node, the workflow, teardown and a report.

Run once per job, from the batch script. It starts one storage server per
node through the site's launcher line (``mpiexec``/``srun``, one rank per
node), waits for rank 0 to write the manifest, runs the user's command with
``WARPSTORE_MANIFEST`` set, and when that command ends (or the scheduler sends
SIGTERM near the walltime) stops every server, writes ``report.json`` next to
the manifest, prints a one-paragraph summary and exits with the command's
status.

Faults end the same way, never with servers left behind: a workflow command
that cannot start exits 127 (not found) or 126 (not executable) like a shell,
after the teardown and with a report; a stop signal (SIGTERM, SIGUSR1, SIGINT)
at any point tears down what is up; if the launcher itself is killed, the
servers notice through its lease (:mod:`warpstore.server.watchdog`) and stop
themselves; a server killed during the job cannot check its node for
leftover shared memory, so a short sweep step through the same launcher line
does (:func:`_sweep_nodes`, only then). Programs (the site's
``mpiexec``/``srun``, the workflow's) are looked for on PATH, then beside the
running interpreter, and a missing one is a one-line error naming the site's
launcher line and the fix.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from warpstore.exceptions import UserError, WarpstoreError
from warpstore.hpc.connectors import NODE_SERVER_TRANSPORTS, node_server_settings
from warpstore.hpc.environment import detect_environment
from warpstore.hpc.manifest import read_manifest
from warpstore.hpc.siteconfig import SiteConfig
from warpstore.server.runtime import create_token_file, read_json, write_json_atomic
from warpstore.units import format_size, plural

__all__ = ["LaunchError", "find_program", "launch"]

logger = logging.getLogger("warpstore.launch")

# The scheduler's early walltime warning (Slurm `--signal=B:TERM@120`, or USR1 where
# a site prefers it) and Ctrl-C: each ends the workflow and tears down in order.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

# The teardown's sweep step (only after a server was killed) gets this long, in
# seconds, before a node that has not answered is reported unchecked;
# $WARPSTORE_SWEEP_TIMEOUT overrides it.
SWEEP_TIMEOUT = 30.0


class LaunchError(UserError, RuntimeError):
    """The servers could not be started; the message says on which node and why."""


def _interpreter_dirs() -> list[str]:
    """Where programs installed with this Python live (a venv's bin: the mpich wheel's mpiexec)."""
    dirs = [os.path.dirname(sys.executable), sysconfig.get_path("scripts")]
    return [d for i, d in enumerate(dirs) if d and d not in dirs[:i]]


def find_program(name: str) -> str | None:
    """``name`` on PATH, else beside the running interpreter, else ``None``.

    A job's shell often has not activated the environment that holds
    warpstore (``bash -l`` resets PATH), but the launcher runs with its
    interpreter, and ``pip install mpich`` puts ``mpiexec`` right beside it.
    """
    if os.sep in name:
        return name if os.path.exists(name) else None
    found = shutil.which(name)
    if found:
        return found
    for directory in _interpreter_dirs():
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _program_index(argv: Sequence[str]) -> int:
    """Index of the program in a line such as ``env PALS_LOCAL_LAUNCH=0 mpiexec -n 2``."""
    i = 0
    if argv[:1] == ["env"]:
        i = 1
        while i < len(argv) and ("=" in argv[i] and not argv[i].startswith("-")):
            i += 1
    return i


def _missing_program_hint(program: str) -> str:
    if program == "srun":
        return (
            "run `warpstore launch` inside a Slurm allocation (the script `sbatch` runs, or "
            "`salloc`) on a node with Slurm's commands"
        )
    if program in ("mpiexec", "mpirun", "aprun"):
        return (
            "load the site's MPI (e.g. `module load` it in the site config's `modules`), or on "
            "a laptop/CI `pip install 'warpstore[mpich]'` into this environment"
        )
    return "install it, or activate the environment that holds it"


def _resolve_server_line(site: SiteConfig, line: str) -> list[str]:
    """The site's server launcher line as argv, its program made absolute, or a one-line error."""
    argv = shlex.split(line)
    i = _program_index(argv)
    if i >= len(argv):
        raise LaunchError(f"site {site.name!r}: the launcher line `{line}` names no program")
    found = find_program(argv[i])
    if found is None:
        raise LaunchError(
            f"`{argv[i]}` (in the server launcher line of site {site.name!r}: `{line}`) is not "
            f"on PATH nor beside {sys.executable}: {_missing_program_hint(argv[i])}; or give "
            "another line with --set launcher.servers='...'"
        )
    argv[i] = found
    return argv


def _resolve_workflow(command: Sequence[str]) -> str:
    """The workflow's program, found as :func:`find_program` does (its argv stays as typed).

    Fails like a shell: 127 for a command that is not found, 126 for one that
    cannot be executed.
    """
    program = command[0]
    found = find_program(program)
    if found is None:
        where = "" if os.sep in program else f" (not on PATH nor beside {sys.executable})"
        hint = "" if os.sep in program else f"; {_missing_program_hint(program)}"
        raise UserError(f"{program}: command not found{where}{hint}", exit_code=127)
    if os.path.isdir(found) or not os.access(found, os.X_OK):
        why = "Is a directory" if os.path.isdir(found) else "Permission denied"
        raise UserError(
            f"{program}: cannot execute: {why} (chmod +x {found}, or run it through its "
            "interpreter)",
            exit_code=126,
        )
    return found


def _job_dir(site: SiteConfig, job_id: str) -> Path:
    base = Path(os.path.expandvars(site.get("job_dir") or os.getcwd()))
    path = base / f"warpstore-{job_id}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _token_file(job_dir: Path) -> Path:
    path = job_dir / "token"
    if not path.exists():
        create_token_file(path)
    return path


def _job(site: SiteConfig) -> tuple[Any, str, Path]:
    """This job's scheduler environment, id (as the scheduler gave it) and directory."""
    env_info = detect_environment()
    job_id = env_info.job_id or f"local-{os.getpid()}-{int(time.time())}"
    return env_info, job_id, _job_dir(site, job_id.replace("/", "_"))


def _job_env(site: SiteConfig, job_id: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of everything the launcher starts: the site's, then the job's."""
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in site.get("environment", {}).items()})
    env.update({"WARPSTORE_JOB_ID": job_id.replace("/", "_"), "WARPSTORE_SITE": site.name})
    # launch/warpstore-run (and any task) finds the Python that runs warpstore, and
    # programs installed beside it (mpiexec), even where the job's PATH lacks them
    env.setdefault("WARPSTORE_PYTHON", sys.executable)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join(path + [d for d in _interpreter_dirs() if d not in path])
    env.update(extra)
    return env


def _manifest_head(site: SiteConfig, env_info: Any, job_id: str, job_dir: Path) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "site": site.name,
        "scheduler": env_info.scheduler,
        "nodes": env_info.nodes if env_info.scheduler != "none" else [],
        "job_dir": str(job_dir),
    }


def _stop_servers(
    manifest: dict[str, Any],
    token_file: str,
    runtime_dir: Path,
    lease: Any,
    grace: float = 10.0,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Stop every server of the manifest (elastic ones too); return those that did
    not answer SHUTDOWN (killed or hung on another host).

    First through the lease: the servers watch it and stop themselves, so the
    batch shell needs no access to their network (on Slingshot, cxi is not
    usable from the batch step). A server that has not reported within
    ``grace`` seconds (a job directory whose file system is slow to show the
    change) gets an authenticated SHUTDOWN, then SIGTERM if it runs here.
    """
    from warpstore.server.clients import client_for, transport_of
    from warpstore.server.protocol import Op
    from warpstore.server.runtime import load_token

    lease.request_stop()
    pending = list(manifest.get("servers", []))
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        pending = [s for s in pending if not _has_stopped(s, runtime_dir)]
        if pending:
            time.sleep(0.05)
    if not pending:
        return []
    token, _ = load_token(token_file=token_file)
    clients: dict[str, Any] = {}
    failed: list[dict[str, Any]] = []
    try:
        for server in pending:
            try:
                transport = transport_of(server["address"])
                if transport not in clients:
                    clients[transport] = client_for(transport, token, timeout)
                clients[transport].request(server["address"], Op.SHUTDOWN, timeout=timeout)
            except Exception as e:
                logger.warning(
                    "could not stop server %s of node %s: %s",
                    server["address"],
                    server.get("node"),
                    e,
                )
                _terminate_if_here(server)
                failed.append(server)
    finally:
        for client in clients.values():
            client.close()
    return failed


def _wait_server_launch(
    proc: subprocess.Popen[bytes],
    manifest: dict[str, Any],
    runtime_dir: Path,
    gone: list[dict[str, Any]],
    timeout: float = 30,
) -> None:
    """Wait for the server launch (``mpiexec``/``srun``) to end, then end it.

    When a server was killed (``gone``), its peers may never finish exiting
    (``srun`` keeps the step while MPI's finalization waits on the dead rank),
    so once every other server has reported, the launch gets a few seconds,
    not ``timeout``, before it is ended: the sweep step checks the nodes next.
    """
    if not gone:
        _end_process(proc, timeout)
        return
    dead = {(s.get("node"), s.get("pid")) for s in gone}
    others = [s for s in manifest.get("servers", []) if (s.get("node"), s.get("pid")) not in dead]
    deadline = time.monotonic() + timeout
    while (
        proc.poll() is None
        and time.monotonic() < deadline
        and not all(_reported(s, runtime_dir) for s in others)
    ):
        time.sleep(0.05)
    _end_process(proc, max(0.0, min(3.0, deadline - time.monotonic())))


def _has_stopped(server: dict[str, Any], runtime_dir: Path) -> bool:
    """The server wrote its final report, or (on this host) its process has exited."""
    return _gone_from_here(server) or _reported(server, runtime_dir)


def _reported(server: dict[str, Any], runtime_dir: Path) -> bool:
    """The server wrote its final report (and with it checked its node's segments)."""
    for path in runtime_dir.glob(f"*/nodes/{server.get('node')}/*/report.json"):
        if (read_json(path) or {}).get("pid") == server.get("pid"):
            return True
    return False


def _gone_from_here(server: dict[str, Any]) -> bool:
    """True if ``server`` ran on this host and its process has exited."""
    import socket

    from warpstore.server.runtime import pid_alive

    pid = int(server.get("pid") or 0)
    return bool(pid) and server.get("host") == socket.gethostname() and not pid_alive(pid)


def _terminate_if_here(server: dict[str, Any]) -> None:
    """SIGTERM a server that did not answer SHUTDOWN, if it runs on this host.

    Servers on other hosts end with the job's allocation; one on the launcher's
    own host (the local site, a single-node job) must not outlive the launch.
    """
    import socket

    from warpstore.server.runtime import pid_alive

    pid = server.get("pid")
    if not pid or server.get("host") != socket.gethostname() or not pid_alive(int(pid)):
        return
    try:
        os.kill(int(pid), signal.SIGTERM)
        logger.warning("sent SIGTERM to server pid %s of node %s", pid, server.get("node"))
    except ProcessLookupError:
        pass


def _start_logged(
    cmd: Sequence[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a job step (servers, sweep) in its own session, output appended to ``log_path``.

    Its own session, so that ending it (:func:`_end_process`) reaches every process
    the site's launcher started for it and nothing of the launcher itself.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(cmd),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _end_process(proc: subprocess.Popen[bytes], timeout: float, grace: float = 10) -> None:
    """Wait ``timeout`` s for ``proc``, then SIGTERM its group, then SIGKILL (``grace`` s each)."""
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _sweep_this_node(manifest: dict[str, Any], runtime_dir: Path) -> dict[str, Any]:
    """The teardown check of the launcher's own node, after every server stopped.

    Each server checks its node when it stops (its report's ``segments``); the
    nodes whose server was killed are checked by the sweep step
    (:func:`_sweep_nodes`). This last check, after both, removes what the
    job's dead processes left on the launcher's node since, and lists what
    live ones still hold.
    """
    from warpstore.server.runtime import node_name
    from warpstore.server.shm import cleanup_job, leftover_segments

    job = manifest.get("job_id")
    node = node_name()
    try:
        removed = cleanup_job(job, root=runtime_dir, node=node)
        left = leftover_segments(job, root=runtime_dir, node=node)
    except OSError as e:
        logger.warning("could not check this node's shared-memory segments: %s", e)
        return {}
    _log_removed(node, [str(p) for p in removed])
    return {
        "node": node,
        "removed": [str(p) for p in removed],
        "left": [str(p) for p in left],
    }


def _log_removed(node: str, removed: list[str]) -> None:
    """One warning per node for the leftovers the teardown removed there (if any)."""
    if removed:
        logger.warning(
            "teardown removed %s left on node %s: %s",
            plural(len(removed), "shared-memory segment"),
            node,
            ", ".join(Path(p).name for p in removed),
        )


def _unreported_nodes(manifest: dict[str, Any], runtime_dir: Path) -> list[str]:
    """The nodes of servers that wrote no final report (killed: their node is unchecked).

    One pass over the reports (the teardown reads them all anyway), so a normal
    teardown pays nothing per server for this check.
    """
    reported = set()
    for path in runtime_dir.glob("*/nodes/*/*/report.json"):
        data = read_json(path) or {}
        reported.add((str(data.get("node")), data.get("pid")))
    servers = manifest.get("servers", [])
    return sorted(
        {str(s.get("node")) for s in servers if (str(s.get("node")), s.get("pid")) not in reported}
    )


def _sweep_nodes(
    launch_argv: Sequence[str],
    env: dict[str, str],
    job_dir: Path,
    job_id: str,
    runtime_dir: Path,
    unreported: Sequence[str],
    timeout: float,
) -> dict[str, Any]:
    """The teardown's sweep step: check every node where a server was killed.

    An epilog of our own: a killed server could not check its node, so the
    launcher runs :mod:`warpstore.hpc.sweep_rank` through the same launcher
    line as the servers (one rank per node: MPI launchers and ``srun`` cannot
    aim at a chosen node portably; a rank on a node whose server did check it
    costs a process start and finds at most what dead processes left since,
    which is added to that node's figures). Bounded: after ``timeout`` s the step is
    ended, and a node that did not answer (hung, gone) is reported unchecked.
    It only runs when a server did not report, so a normal teardown costs
    nothing more.
    """
    out = job_dir / "sweep"
    shutil.rmtree(out, ignore_errors=True)  # an earlier launch's results
    out.mkdir(mode=0o700)
    cmd = [
        *launch_argv,
        sys.executable,
        "-m",
        "warpstore.hpc.sweep_rank",
        "--job",
        job_id,
        "--runtime-dir",
        str(runtime_dir),
        "--out",
        str(out),
    ]
    logger.warning(
        "%s did not report (killed?): checking %s for leftover shared memory",
        plural(len(unreported), "server"),
        ("node " if len(unreported) == 1 else "nodes ") + ", ".join(unreported),
    )
    t0 = time.monotonic()
    timed_out = False
    log_path = job_dir / "sweep.log"
    try:
        proc = _start_logged(cmd, env, log_path)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _end_process(proc, 0, grace=2)
    except OSError as e:
        logger.warning("could not run the teardown's sweep step `%s`: %s", shlex.join(cmd), e)
    checked: dict[str, dict[str, list[str]]] = {}
    errors: dict[str, str] = {}
    for path in sorted(out.glob("*.json")):
        data = read_json(path) or {}
        node = str(data.get("node"))
        if data.get("error"):
            errors[node] = str(data["error"])
            continue
        entry = checked.setdefault(node, {"removed": [], "left": []})
        entry["removed"] += [str(p) for p in data.get("removed", [])]
        entry["left"] = sorted(set(entry["left"]) | {str(p) for p in data.get("left", [])})
    for node, entry in sorted(checked.items()):
        _log_removed(node, entry["removed"])
    unchecked = [n for n in unreported if n not in checked]
    if unchecked:
        why = f"no answer within {timeout:.0f} s" if timed_out else "no result"
        logger.warning(
            "could not check node %s for leftover shared memory (%s; see %s)",
            ", ".join(unchecked),
            "; ".join([why, *(f"{n}: {errors[n]}" for n in unchecked if n in errors)]),
            log_path,
        )
    return {
        "unreported": list(unreported),
        "checked": checked,
        "unchecked": unchecked,
        "errors": errors,
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - t0, 4),
    }


def _segment_check(
    nodes: list[dict[str, Any]],
    reports: list[dict[str, Any]],
    here: dict[str, Any],
    swept: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per node: segments removed at teardown and segments still there (a live holder);
    ``unchecked`` where a killed server's node could not be checked."""
    out: dict[str, dict[str, Any]] = {}
    for node, data in zip(nodes, reports, strict=True):
        seg = data.get("segments") or {}
        entry = out.setdefault(str(node["node"]), {"removed": 0, "left": 0})
        entry["removed"] += len(seg.get("removed", []))
        entry["left"] = max(entry["left"], len(seg.get("left", [])))
    if swept:
        for name, found in swept["checked"].items():
            entry = out.setdefault(name, {"removed": 0, "left": 0})
            entry["removed"] += len(found["removed"])
            entry["left"] = len(found["left"])  # checked after every server stopped
        for name in swept["unchecked"]:
            out.setdefault(name, {"removed": 0, "left": 0})["unchecked"] = True
    if here:
        entry = out.setdefault(str(here["node"]), {"removed": 0, "left": 0})
        entry.pop("unchecked", None)  # the launcher's own check covered it
        entry["removed"] += len(here["removed"])
        entry["left"] = len(here["left"])  # checked last, after every server stopped
    return out


def _collect_report(
    job_dir: Path,
    runtime_dir: Path,
    manifest: dict[str, Any],
    rc: int,
    timings: dict[str, float],
    here: dict[str, Any] | None = None,
    swept: dict[str, Any] | None = None,
) -> dict[str, Any]:
    nodes = []
    reports = []
    for path in sorted(runtime_dir.glob("*/nodes/*/*/report.json")):
        data = read_json(path) or {}
        reports.append(data)
        final = data.get("final", {})
        nodes.append(
            {
                "node": data.get("node"),
                "address": data.get("address"),
                "objects_left": final.get("objects", 0),
                "bytes_left": final.get("bytes", 0),
                # same-node puts and gets go through shared memory (PUT_SHM, GET_SHM)
                "puts": sum(final.get("requests", {}).get(op, 0) for op in ("PUT", "PUT_SHM")),
                "gets": sum(final.get("requests", {}).get(op, 0) for op in ("GET", "GET_SHM")),
                "bytes_put": final.get("bytes_in", 0),
                "bytes_got": final.get("bytes_out", 0) + final.get("bytes_shared", 0),
                "bytes_shared": final.get("bytes_shared", 0),
                # node-local cache: fetched from other nodes vs served to this node's ranks
                "cache": final.get("cache", {}),
                "errors": final.get("errors", {}),
                "elastic": any(
                    s.get("elastic") and s["address"] == data.get("address")
                    for s in manifest.get("servers", [])
                ),
            }
        )
    report = {
        "job": manifest.get("job_id"),
        "site": manifest.get("site"),
        "exit_code": rc,
        "nodes": nodes,
        "timings_s": timings,
        "servers_expected": len(manifest.get("servers", [])),
        "servers_reported": len(nodes),
        # the teardown's shared-memory check, per node (see _sweep_this_node)
        "segments": _segment_check(nodes, reports, here or {}, swept),
    }
    if swept is not None:  # only when a server did not report (see _sweep_nodes)
        report["sweep"] = {k: v for k, v in swept.items() if k != "checked"}
    write_json_atomic(job_dir / "report.json", report)
    return report


def _summary(report: dict[str, Any], job_dir: Path) -> str:
    nodes = report["nodes"]
    puts = sum(n["puts"] for n in nodes)
    gets = sum(n["gets"] for n in nodes)
    put_bytes = sum(n["bytes_put"] for n in nodes)
    got_bytes = sum(n["bytes_got"] for n in nodes)
    errors = sum(sum(n["errors"].values()) for n in nodes)
    busiest = max(nodes, key=lambda n: n["bytes_put"] + n["bytes_got"], default=None)
    t = report["timings_s"]
    text = (
        f"warpstore: job {report['job']} on site {report['site']} ran "
        f"{plural(len(nodes), 'server')} ({report['servers_expected']} in the manifest); the "
        f"workflow exited with {report['exit_code']}. Tasks put {plural(puts, 'object')} "
        f"({format_size(put_bytes)}) and got {gets} ({format_size(got_bytes)}); "
        f"{plural(errors, 'server error')}. "
        f"Servers ready in {t.get('ready', 0):.2f} s, workflow {t.get('workflow', 0):.2f} s, "
        f"teardown {t.get('teardown', 0):.2f} s."
    )
    if busiest is not None and (busiest["bytes_put"] or busiest["bytes_got"]):
        text += (
            f" Busiest node: {busiest['node']} "
            f"({format_size(busiest['bytes_put'] + busiest['bytes_got'])} moved)."
        )
    segments = report.get("segments", {})
    for what, key in (("removed leftover", "removed"), ("found still held", "left")):
        counts = {node: c[key] for node, c in segments.items() if c.get(key)}
        if counts:
            text += f" Teardown {what} shared-memory segments: " + ", ".join(
                f"{node} {n}" for node, n in sorted(counts.items())
            ) + "."
    unchecked = sorted(node for node, c in segments.items() if c.get("unchecked"))
    if unchecked:
        text += (
            " Teardown could not check for leftover shared memory (server killed, node did not "
            f"answer): {', '.join(unchecked)}."
        )
    return text + f" Manifest and report: {job_dir}."


class _Stopped(UserError):
    """A stop signal arrived before the workflow started: tear down what is up."""

    def __init__(self, signum: int) -> None:
        super().__init__(
            f"stopped by {signal.Signals(signum).name} before the workflow started",
            exit_code=128 + signum,
        )
        self.signum = signum


class _SignalRelay:
    """The launcher's handler for :data:`STOP_SIGNALS`, for the whole launch.

    While servers start, a signal aborts the start (teardown follows); while
    the workflow runs, it is forwarded to the workflow, whose end starts the
    teardown; afterwards it is only recorded, so teardown and report finish.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.workflow: subprocess.Popen[bytes] | None = None
        self.starting = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.workflow is not None:
            if self.workflow.poll() is None:
                self.workflow.send_signal(signum)
        elif self.starting:
            raise _Stopped(signum)

    def note(self) -> None:
        if self.received:
            logger.warning(
                "stopped early by %s", ", ".join(signal.Signals(s).name for s in self.received)
            )


@contextmanager
def _stop_signals() -> Iterator[_SignalRelay]:
    relay = _SignalRelay()
    old = {s: signal.signal(s, relay) for s in STOP_SIGNALS}
    try:
        yield relay
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _run_workflow(
    command: Sequence[str], program: str, env: dict[str, str], relay: _SignalRelay
) -> int:
    """Run CMD (signals are forwarded to it by ``relay``); its status, 128+N if killed by N."""
    relay.starting = False  # from here a signal is the workflow's, never lost
    try:
        workflow = subprocess.Popen(list(command), executable=program, env=env)
    except OSError as e:  # vanished since we looked, or not a valid executable
        raise UserError(
            f"{command[0]}: cannot run: {e.strerror or e}",
            exit_code=127 if isinstance(e, FileNotFoundError) else 126,
        ) from e
    relay.workflow = workflow
    if relay.received:  # arrived while it was being started
        workflow.send_signal(relay.received[-1])
    rc = workflow.wait()
    return rc if rc >= 0 else 128 - rc


def _check_redis(conn: Any, timeout: float = 3.0) -> None:
    """Fail before the workflow starts if the Redis server does not answer PING."""
    import redis

    address = getattr(conn, "address", "?")
    try:
        if "://" in str(conn.hostname):
            client = redis.Redis.from_url(
                conn.hostname, socket_connect_timeout=timeout, socket_timeout=timeout
            )
        else:
            client = redis.Redis(
                host=conn.hostname,
                port=conn.port or 6379,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
            )
        try:
            client.ping()
        finally:
            client.close()
    except redis.exceptions.RedisError as e:
        raise LaunchError(
            f"Redis at {address} does not answer ({e}): start redis-server there, or point "
            "the job at one with --set connector.redis.host=HOST --set connector.redis.port=PORT"
        ) from e


def _fail_report(job_dir: Path, head: dict[str, Any], error: WarpstoreError) -> None:
    """The report of a launch that ended before or as the workflow started."""
    write_json_atomic(
        job_dir / "report.json",
        {
            "job": head.get("job_id"),
            "site": head.get("site"),
            "exit_code": getattr(error, "exit_code", 1),
            "error": str(error),
            "nodes": [],
            "servers_expected": 0,
            "servers_reported": 0,
        },
    )


def _launch_serverless(site: SiteConfig, command: Sequence[str], kind: str) -> int:
    """Connectors with no node servers (redis, file): a manifest, the workflow, a report.

    Task code is the same as with node servers: ``task_store()`` reads the
    connector from the manifest. The report has no per-node rows, since no
    server of ours saw the traffic.
    """
    from warpstore.hpc.connectors import connector_from_site
    from warpstore.hpc.manifest import write_manifest

    env_info, raw_id, job_dir = _job(site)
    job_id = raw_id.replace("/", "_")
    head = _manifest_head(site, env_info, job_id, job_dir)
    try:
        program = _resolve_workflow(command)
        try:
            conn = connector_from_site(site, kind, job_dir)
        except (NotImplementedError, ValueError) as e:
            raise LaunchError(str(e)) from e
        try:
            if kind == "redis":
                _check_redis(conn)
            config = conn.config()
        finally:
            conn.close()
    except WarpstoreError as e:  # UserError, or a connector's own (DAOS without pydaos)
        _fail_report(job_dir, head, e)
        raise
    manifest_path = job_dir / "manifest.json"
    manifest: dict[str, Any] = {
        **head,
        "servers": [],
        "connector": {"type": kind, "config": config},
        "created": time.time(),
    }
    write_manifest(manifest_path, manifest)
    env = _job_env(site, job_id, {"WARPSTORE_MANIFEST": str(manifest_path)})
    logger.info("connector %s needs no node servers: %s", kind, manifest["connector"]["config"])
    t1 = time.monotonic()
    with _stop_signals() as relay:
        relay.starting = False  # nothing to abort: the workflow is all there is
        try:
            rc = _run_workflow(command, program, env, relay)
        except UserError as e:
            _fail_report(job_dir, head, e)
            raise
    timings = {"ready": 0.0, "workflow": time.monotonic() - t1, "teardown": 0.0}
    report = {
        "job": job_id,
        "site": site.name,
        "connector": kind,
        "exit_code": rc,
        "nodes": [],
        "timings_s": timings,
        "servers_expected": 0,
        "servers_reported": 0,
    }
    write_json_atomic(job_dir / "report.json", report)
    print(
        f"warpstore: job {job_id} on site {site.name} used the {kind} connector (no node "
        f"servers); the workflow exited with {rc} after {timings['workflow']:.2f} s. "
        f"Manifest and report: {job_dir}.",
        flush=True,
    )
    relay.note()
    return rc


def _check_nodes(site: SiteConfig, env_info: Any, nodes: int | None) -> int:
    """How many nodes get a server; refuse a count the allocation (or machine) lacks."""
    simulated = bool(os.environ.get("WARPSTORE_SIMULATE_NODES"))  # test-only, one host
    if env_info.scheduler == "none":
        count = nodes or int(site.get("nodes") or 1)
        if count > 1 and not simulated:
            raise LaunchError(
                f"--nodes {count}: outside a batch job (site {site.name!r}, no scheduler) "
                "there is one node, this machine, so only one server would run; use --nodes 1, "
                "or `warpstore submit` the job to a cluster site"
            )
        return count
    have = env_info.num_nodes
    if nodes and nodes > have and not simulated:
        raise LaunchError(
            f"--nodes {nodes}: this {env_info.scheduler} job has "
            f"{plural(have, 'node')} ({', '.join(env_info.nodes[:4])}"
            f"{', ...' if have > 4 else ''}); ask for more nodes when submitting, or use "
            f"--nodes {have} or fewer"
        )
    return nodes or have


def launch(
    site: SiteConfig,
    command: Sequence[str],
    *,
    connector: str | None = None,
    nodes: int | None = None,
    ready_timeout: float = 120.0,
) -> int:
    """Run ``command`` with a server on every node; return its exit status.

    Whatever happens after the first server starts (the workflow cannot be
    run, a stop signal, an error), the servers are stopped and a report is
    written; if this process is killed outright, the servers notice through
    the lease (:mod:`warpstore.server.watchdog`) and stop themselves.
    """
    if not command:
        raise LaunchError("no command to run: give it after --")
    kind = connector or site["connector"]["type"]
    routed = kind == "multi"  # node servers for small objects, a shared store for large
    if routed:
        kind = site["connector"].get("routing", {}).get("node", "zmq")
    if kind not in NODE_SERVER_TRANSPORTS:
        return _launch_serverless(site, command, kind)
    env_info, job_id, job_dir = _job(site)
    head = _manifest_head(site, env_info, job_id, job_dir)
    try:
        num_nodes = _check_nodes(site, env_info, nodes)
        program = _resolve_workflow(command)
        line = site["launcher"]["servers"].format(nodes=num_nodes)
        launch_argv = _resolve_server_line(site, line)
    except UserError as e:
        _fail_report(job_dir, head, e)
        raise
    runtime_dir = job_dir / "runtime"
    runtime_dir.mkdir(exist_ok=True, mode=0o700)
    token_file = _token_file(job_dir)
    manifest_path = job_dir / "manifest.json"
    for stale in (manifest_path, Path(str(manifest_path) + ".failed")):
        stale.unlink(missing_ok=True)
    settings = node_server_settings(site, kind)
    ucx_env = settings.pop("ucx_env", None)
    protocol = settings.pop("protocol", None)

    from warpstore.server.watchdog import LEASE_ENV, Lease

    lease = Lease(job_dir / "launcher.lease").start()
    child_env = _job_env(
        site,
        job_id,
        {
            "WARPSTORE_RUNTIME_DIR": str(runtime_dir),
            "WARPSTORE_TOKEN_FILE": str(token_file),
            LEASE_ENV: str(lease.path),
        },
    )
    if ucx_env:  # the servers and every task use the site's UCX settings
        child_env.update({str(k): str(v) for k, v in ucx_env.items()})
    plain_preload = child_env.get("LD_PRELOAD")  # what the sweep step gets (it needs no UCX)
    if kind == "ucx":
        from warpstore.server.ucx_env import HOST_MEMORY_DEFAULTS, wheel_ucx_preload

        for key, value in HOST_MEMORY_DEFAULTS.items():
            child_env.setdefault(key, value)
        preload = wheel_ucx_preload()
        if preload:
            old = child_env.get("LD_PRELOAD")
            child_env["LD_PRELOAD"] = preload + (":" + old if old else "")
            logger.info(
                "UCX job with PyPI's mpich wheel: preloading the libucx wheel's UCX so that "
                "MPI and ucxx share it"
            )
    base: dict[str, Any] = {
        **head,
        "token_file": str(token_file),
        "runtime_dir": str(runtime_dir),
        "connector": {
            "type": kind,
            "config": {
                **{k: v for k, v in settings.items()},
                **({"ucx_env": ucx_env} if ucx_env else {}),
                **({"protocol": protocol} if protocol else {}),
                "token_file": str(token_file),
                "runtime_dir": str(runtime_dir),
            },
        },
    }
    if routed:
        from warpstore.hpc.connectors import routing_config

        try:
            base["connector"] = {
                "type": "multi",
                "config": routing_config(site, kind, base["connector"]["config"], str(job_dir)),
            }
        except (NotImplementedError, ValueError) as e:
            lease.stop()
            raise LaunchError(str(e)) from e
    base_path = job_dir / "manifest-base.json"
    write_json_atomic(base_path, base)

    server_cmd = [
        *launch_argv,
        sys.executable,
        "-m",
        "warpstore.hpc.server_rank",
        "--manifest",
        str(manifest_path),
        "--base",
        str(base_path),
    ]
    server_cmd += ["--transport", kind]
    if protocol:
        server_cmd += ["--protocol", protocol]
    if settings["interface"]:
        server_cmd += ["--interface", settings["interface"]]
    if settings["port"]:
        server_cmd += ["--port", str(settings["port"])]
    if settings["memory_limit"] is not None:
        server_cmd += ["--memory-limit", str(settings["memory_limit"])]
    server_env = dict(child_env)
    if "WARPSTORE_SIMULATE_NODES" in server_env:
        server_env["WARPSTORE_SIMULATE_NODES"] = "1"  # one server rank per simulated node

    timings: dict[str, float] = {}
    failure: BaseException | None = None
    rc = 1
    with _stop_signals() as relay:
        t0 = t1 = time.monotonic()
        try:
            servers = _start_servers(
                server_cmd, server_env, job_dir, manifest_path, line, ready_timeout
            )
        except BaseException as e:
            lease.stop()
            relay.starting = False
            relay.note()
            if isinstance(e, UserError):
                _fail_report(job_dir, head, e)
            raise
        try:
            t1 = time.monotonic()
            timings["ready"] = t1 - t0
            manifest = read_manifest(manifest_path)
            logger.info(
                "%s ready in %.2f s: %s",
                plural(len(manifest["servers"]), "server"),
                timings["ready"],
                ", ".join(f"{s['node']}={s['address']}" for s in manifest["servers"]),
            )
            child_env["WARPSTORE_MANIFEST"] = str(manifest_path)
            t1 = time.monotonic()
            rc = _run_workflow(command, program, child_env, relay)
        except _Stopped as e:  # between the servers' start and the workflow's
            rc = e.exit_code
        except UserError as e:
            rc, failure = e.exit_code, e
        except BaseException as e:
            failure = e
        finally:
            relay.starting = False
            timings["workflow"] = time.monotonic() - t1
            t2 = time.monotonic()
            manifest = read_manifest(manifest_path)  # elastic servers may have joined
            gone: list[dict[str, Any]] = []
            try:
                failed = _stop_servers(manifest, str(token_file), runtime_dir, lease)
                # killed: on this host gone without a report, elsewhere deaf to SHUTDOWN
                gone = failed + [
                    s
                    for s in manifest.get("servers", [])
                    if _gone_from_here(s) and not _reported(s, runtime_dir)
                ]
            finally:
                _wait_server_launch(servers, manifest, runtime_dir, gone)
                lease.stop()
            # without the UCX wheel's preload: loading it cost every process seconds
            sweep_env = {k: v for k, v in server_env.items() if k != "LD_PRELOAD"}
            if plain_preload:
                sweep_env["LD_PRELOAD"] = plain_preload
            swept = _sweep_killed(manifest, launch_argv, sweep_env, job_dir, runtime_dir)
            here = _sweep_this_node(manifest, runtime_dir)
            timings["teardown"] = time.monotonic() - t2
            if swept is not None:
                timings["sweep"] = swept["seconds"]
            report = _collect_report(job_dir, runtime_dir, manifest, rc, timings, here, swept)
            if failure is not None:
                report["error"] = f"{type(failure).__name__}: {failure}"
                write_json_atomic(job_dir / "report.json", report)
        print(_summary(report, job_dir), flush=True)
        relay.note()
    if failure is not None:
        raise failure
    return rc


def _sweep_killed(
    manifest: dict[str, Any],
    launch_argv: Sequence[str],
    env: dict[str, str],
    job_dir: Path,
    runtime_dir: Path,
) -> dict[str, Any] | None:
    """Run the sweep step if some server did not report; never fails the job."""
    unreported: list[str] = []
    try:
        unreported = _unreported_nodes(manifest, runtime_dir)
        if not unreported:
            return None
        timeout = float(os.environ.get("WARPSTORE_SWEEP_TIMEOUT") or SWEEP_TIMEOUT)
        job = str(manifest.get("job_id"))
        return _sweep_nodes(launch_argv, env, job_dir, job, runtime_dir, unreported, timeout)
    except Exception as e:  # the job's result stands; the report says what was not checked
        logger.warning("the teardown's sweep step failed: %s: %s", type(e).__name__, e)
        return {
            "unreported": unreported,
            "checked": {},
            "unchecked": unreported,
            "errors": {},
            "timed_out": False,
            "seconds": 0.0,
            "error": f"{type(e).__name__}: {e}",
        }


def _start_servers(
    server_cmd: list[str],
    server_env: dict[str, str],
    job_dir: Path,
    manifest_path: Path,
    line: str,
    ready_timeout: float,
) -> subprocess.Popen[bytes]:
    """Start the server launch and wait for rank 0's manifest; end it on any failure."""
    t0 = time.monotonic()
    log_path = job_dir / "servers.log"
    servers = _start_logged(server_cmd, server_env, log_path)
    failed_path = Path(str(manifest_path) + ".failed")
    try:
        while not manifest_path.exists():
            if failed_path.exists():
                failed = (read_json(failed_path) or {}).get("failed", [])
                where = "; ".join(f"node {f['node']} ({f['host']}): {f['error']}" for f in failed)
                raise LaunchError(f"storage server failed to start on {where}")
            if servers.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                raise LaunchError(
                    f"the server launch `{line}` exited with {servers.returncode} before the "
                    "servers were ready; last lines of " + str(log_path) + ":\n" + "\n".join(tail)
                )
            if time.monotonic() - t0 > ready_timeout:
                raise LaunchError(
                    f"servers not ready within {ready_timeout:.0f} s "
                    f"(launch line `{line}`; see {log_path})"
                )
            time.sleep(0.01)
    except BaseException as e:
        # failed servers exit by themselves (give them time to write their reports);
        # on a stop signal there is nothing to wait for
        _end_process(servers, 0.5 if isinstance(e, _Stopped) else 10)
        raise
    return servers
