#!/usr/bin/env python3
"""A small PBS stand-in (qsub, qstat -x -f -F json, qdel) for machines without PBS.

PBS Pro cannot be installed here, so the rendered PBS scripts are run through
this: ``qsub`` reads the script's ``#PBS`` directives the way PBS does (options
before the first command; unknown options and a missing walltime or select are
refused with PBS-like messages on stderr), gives the job an id ``N.standin``,
writes ``$PBS_NODEFILE`` (this host, once per node) and runs the script in the
background with ``PBS_JOBID``, ``PBS_NODEFILE``, ``PBS_O_WORKDIR``,
``PBS_JOBNAME`` set, its output joined into ``<name>.o<N>`` as ``-j oe`` asks.
``qstat -x -f -F json`` and ``qdel`` read and act on the job records.

State lives in ``$PBS_STANDIN_DIR``. ``$PBS_STANDIN_SYSTEM`` (polaris, aurora,
generic) picks the rule book in ``facts.py``, written from each system's own
documentation and not from warpstore's site configs: ``qsub`` refuses unknown
``-l`` resources (job-wide and inside ``select``), a missing ``-A`` where the
system requires one, file systems the system does not have, unknown queues and
jobs outside a queue's node range or walltime limit, as the real one does.

The job runs as a login shell would start it: its PATH is
``$PBS_STANDIN_LOGIN_PATH`` (what /etc/profile gives, without the submitter's
virtual environment) with the site's commands (``site-bin``) in front.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from facts import SYSTEMS

STATE = Path(os.environ.get("PBS_STANDIN_DIR", "/tmp/pbs-standin"))
KNOWN = {"-N", "-A", "-q", "-l", "-j", "-o", "-e", "-m", "-M", "-V", "-W", "-r", "-k"}
FLAGS = {"-V"}


def _directives(script: str) -> list[str]:
    out: list[str] = []
    for line in Path(script).read_text().splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#PBS"):
            out.extend(shlex.split(stripped[4:]))
        elif stripped and not stripped.startswith("#"):
            break  # PBS stops reading directives at the first command
    return out


def _parse(args: list[str]) -> dict[str, list[str]]:
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        opt = args[i]
        if opt not in KNOWN:
            raise SystemExit(f"qsub: invalid option -- '{opt.lstrip('-')}'")
        if opt in FLAGS:
            opts.setdefault(opt, []).append("")
            i += 1
            continue
        if i + 1 >= len(args):
            raise SystemExit(f"qsub: option requires an argument -- '{opt.lstrip('-')}'")
        opts.setdefault(opt, []).append(args[i + 1])
        i += 2
    return opts


def _resources(opts: dict[str, list[str]]) -> dict[str, str]:
    res: dict[str, str] = {}
    for item in opts.get("-l", []):
        for part in item.split(","):
            key, _, value = part.partition("=")
            res[key] = value
    return res


def _nodes(select: str, chunk_resources: set[str]) -> int:
    total = 0
    for chunk in select.split("+"):
        parts = chunk.split(":")
        if not parts[0].isdigit():
            raise SystemExit(
                f"qsub: illegal attribute or resource value Resource_List.select={select}"
            )
        total += int(parts[0])
        for part in parts[1:]:
            name, sep, value = part.partition("=")
            if not sep or not value:
                raise SystemExit(f"qsub: illegal attribute or resource value {part}")
            if name not in chunk_resources:
                raise SystemExit(f"qsub: Unknown resource {name}")
    return total


def _walltime(text: str) -> int:
    """PBS reads [[hours:]minutes:]seconds[.ms]."""
    parts = text.split(".")[0].split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"qsub: illegal attribute or resource value Resource_List.walltime={text}")
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return seconds


def _check(opts: dict[str, list[str]], res: dict[str, str], system: dict[str, Any]) -> int:
    """Nodes of the job, or SystemExit with the real qsub's refusal."""
    job_resources = system["job_resources"]
    for name in res:
        if name not in job_resources:
            raise SystemExit(f"qsub: Unknown resource Resource_List.{name}")
    if system["require_account"] and not opts.get("-A"):
        raise SystemExit("qsub: Account_Name is required: give -A <project>")
    for need in system["require"]:
        if need not in res:
            raise SystemExit(f"qsub: Resource_List.{need} is required")
    chunk = system["chunk_resources"]
    nodes = _nodes(res["select"], chunk)
    valid_fs = system["filesystems"]
    if "filesystems" in res:
        asked = [f for f in res["filesystems"].split(":") if f]
        bad = [f for f in asked if valid_fs is None or f not in valid_fs]
        if bad or not asked:
            valid = ", ".join(sorted(valid_fs)) if valid_fs else "none"
            raise SystemExit(
                f"qsub: invalid filesystem(s) {':'.join(bad) or '(none)'}; "
                f"valid_filesystems: {valid}"
            )
    for keep in opts.get("-k", []):
        if not keep or set(keep) - set("oedn") or ("n" in keep and len(keep) > 1):
            raise SystemExit(f"qsub: illegal -k value {keep}")
    queues = system["queues"]
    queue = opts.get("-q", [system["default_queue"]])[-1]
    if queue is None:
        raise SystemExit("qsub: no queue given (-q) and this server has no default queue")
    if queue not in queues:
        raise SystemExit(f"qsub: Unknown queue {queue}")
    rules = queues[queue]
    seconds = _walltime(res["walltime"]) if "walltime" in res else 0
    low, high = rules["nodes"]
    limit = rules["walltime"]
    for (r_low, r_high), r_limit in rules.get("route", []):
        if r_low <= nodes <= r_high:
            limit = r_limit
    if not low <= nodes <= high:
        raise SystemExit(
            f"qsub: Job violates queue and/or server resource limits "
            f"(queue {queue}: {low}-{high} nodes, job: {nodes})"
        )
    min_walltime = system["min_walltime"]
    if seconds and not min_walltime <= seconds <= limit:
        raise SystemExit(
            f"qsub: Job violates queue and/or server resource limits "
            f"(queue {queue}: walltime {min_walltime}-{limit} s for {nodes} nodes, "
            f"job: {seconds} s)"
        )
    return nodes


def qsub(argv: list[str]) -> int:
    if not argv:
        print("usage: qsub [options] script", file=sys.stderr)
        return 2
    script = argv[-1]
    system_name = os.environ.get("PBS_STANDIN_SYSTEM", "generic")
    if system_name not in SYSTEMS:
        print(f"qsub stand-in: unknown PBS_STANDIN_SYSTEM {system_name!r}", file=sys.stderr)
        return 2
    try:
        opts = _parse(_directives(script) + argv[:-1])  # command line wins, as in PBS
        res = _resources(opts)
        nodes = _check(opts, res, SYSTEMS[system_name])
    except SystemExit as e:
        print(e.code, file=sys.stderr)
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / "next_id"
    number = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(number + 1))
    job_id = f"{number}.standin"
    name = opts.get("-N", [Path(script).name])[-1]
    nodefile = STATE / f"{job_id}.nodes"
    nodefile.write_text((socket.gethostname().split(".")[0] + "\n") * nodes)
    record = {
        "job_state": "Q",
        "Job_Name": name,
        "Resource_List": res,
        "queue": opts.get("-q", [SYSTEMS[system_name]["default_queue"]])[-1],
        "Account_Name": opts.get("-A", [None])[-1],
        "script": os.path.abspath(script),
        "workdir": os.getcwd(),
        "output": os.path.join(os.getcwd(), opts.get("-o", [f"{name}.o{number}"])[-1]),
        "nodefile": str(nodefile),
        "kill_delay": SYSTEMS[system_name]["kill_delay"],
    }
    (STATE / f"{job_id}.json").write_text(json.dumps(record))
    subprocess.Popen(
        [sys.executable, __file__, "_run", job_id],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(job_id)
    return 0


def _signal_job(job_id: str, sig: int) -> None:
    """Signal every process of the job: those whose environment carries its PBS_JOBID."""
    marker = f"PBS_JOBID={job_id}\0".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker not in f.read():
                    continue
            os.kill(int(entry), sig)
        except OSError:
            continue


def _run(job_id: str) -> int:
    path = STATE / f"{job_id}.json"
    record = json.loads(path.read_text())
    env = {
        **os.environ,
        "PBS_JOBID": job_id,
        "PBS_JOBNAME": record["Job_Name"],
        "PBS_NODEFILE": record["nodefile"],
        "PBS_O_WORKDIR": record["workdir"],
        "PBS_QUEUE": record["queue"],
    }
    login_path = os.environ.get("PBS_STANDIN_LOGIN_PATH")
    if login_path is not None:  # the login shell's PATH, without the submitter's venv
        env["PATH"] = login_path
        env.pop("VIRTUAL_ENV", None)
    site_bin = os.environ.get("PBS_STANDIN_SITE_BIN")
    if site_bin:  # the site's own commands (module, conda, PALS mpiexec), see site-bin/
        env["PATH"] = site_bin + os.pathsep + env.get("PATH", "")
    with open(record["output"], "wb") as out:
        proc = subprocess.Popen(
            ["bash", record["script"]],
            cwd=os.path.expanduser("~"),  # PBS starts jobs in $HOME; scripts cd themselves
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the job's own process group, for qdel
        )
        record.update(job_state="R", pid=proc.pid, start=time.time())
        path.write_text(json.dumps(record))
        walltime = record["Resource_List"].get("walltime")
        try:
            rc = proc.wait(timeout=_walltime(walltime) if walltime else None)
        except subprocess.TimeoutExpired:
            # as PBS at the walltime: SIGTERM to every process of the job (PBS tracks them
            # all, not just one process group), SIGKILL to what is left after the server's
            # kill_delay, and a comment saying why
            record["comment"] = f"job killed: walltime exceeded limit {walltime}"
            _signal_job(job_id, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=record.get("kill_delay", 10))
            except subprocess.TimeoutExpired:
                rc = -signal.SIGKILL
            time.sleep(0.5)  # what the launcher still stops on its way out
            _signal_job(job_id, signal.SIGKILL)
            proc.wait()
    record.update(job_state="F", Exit_status=rc if rc >= 0 else 256 - rc, end=time.time())
    path.write_text(json.dumps(record))
    return 0


def qstat(argv: list[str]) -> int:
    if argv[:4] != ["-x", "-f", "-F", "json"] or len(argv) != 5:
        print("qstat stand-in: only `qstat -x -f -F json JOBID`", file=sys.stderr)
        return 2
    path = STATE / f"{argv[4]}.json"
    if not path.exists():
        print(f"qstat: Unknown Job Id {argv[4]}", file=sys.stderr)
        return 153
    record = json.loads(path.read_text())
    print(json.dumps({"pbs_version": "standin", "Jobs": {argv[4]: record}}))
    return 0


def qdel(argv: list[str]) -> int:
    path = STATE / f"{argv[0]}.json"
    if not path.exists():
        print(f"qdel: Unknown Job Id {argv[0]}", file=sys.stderr)
        return 153
    record = json.loads(path.read_text())
    if record.get("job_state") == "R":
        # PBS signals every process of the job with SIGTERM (SIGKILL comes later)
        os.killpg(record["pid"], signal.SIGTERM)
    return 0


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    handlers = {"qsub": qsub, "qstat": qstat, "qdel": qdel}
    sys.exit(_run(args[0]) if command == "_run" else handlers[command](args))
