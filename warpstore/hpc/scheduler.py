"""Submit, poll and cancel jobs with the site's scheduler commands.

Lessons from peers' trackers: read the job id robustly (``sbatch --parsable``
may print ``id;cluster``; PBS ids are ``NNN.server``), show the scheduler's
stderr when a submit fails, and never read "the scheduler no longer knows this
job" as success: a finished job's state comes from ``sacct`` (falling back to
``squeue``) or ``qstat -x``.

Which scheduler a job belongs to comes from the job, never from which client
commands happen to be installed: ``submit`` records each job it submits
(``$XDG_STATE_HOME/warpstore/jobs.jsonl``), and an unrecorded id is read by its
form (PBS: ``NNN.server``; Slurm: digits, ``NNN_K`` array tasks, ``NNN+K``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "JobState",
    "SchedulerError",
    "cancel",
    "job_state",
    "record_job",
    "scheduler_for_job",
    "submit",
]

_PBS_ID = re.compile(r"^\d+(\[\d*\])?\.[\w.-]+$")
_SLURM_ID = re.compile(r"^\d+([_+]\d+)?$")

_COMMANDS = {
    "pbs": {"submit": "qsub", "status": "qstat", "cancel": "qdel"},
    "slurm": {"submit": "sbatch", "status": "squeue", "cancel": "scancel"},
}


class SchedulerError(RuntimeError):
    """A scheduler command is missing or failed; the message carries its stderr."""


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # the scheduler's own word (RUNNING, COMPLETED, F, R, ...) or UNKNOWN
    exit_code: int | None
    source: str  # which command answered


def _jobs_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "warpstore" / "jobs.jsonl"


def record_job(job_id: str, scheduler: str, site: str, script: str) -> None:
    """Remember which scheduler took ``job_id`` (best effort: a read-only home is no error)."""
    path = _jobs_file()
    line = json.dumps(
        {"job_id": job_id, "scheduler": scheduler, "site": site, "script": script,
         "submitted": time.time()}
    )  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def _recorded(job_id: str) -> str | None:
    try:
        lines = _jobs_file().read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        recorded = str(entry.get("job_id", ""))
        if recorded == job_id or (
            "." in recorded and recorded.split(".")[0] == job_id and job_id.isdigit()
        ):
            scheduler = entry.get("scheduler")
            if scheduler in _COMMANDS:
                return str(scheduler)
    return None


def scheduler_for_job(job_id: str) -> str:
    """pbs or slurm for ``job_id``: as recorded by ``submit``, else from the id's form."""
    recorded = _recorded(job_id)
    if recorded:
        return recorded
    if _PBS_ID.match(job_id):
        return "pbs"
    if _SLURM_ID.match(job_id):
        return "slurm"
    raise SchedulerError(
        f"cannot tell the scheduler of job {job_id!r} (not submitted from here, and not of "
        "the form NNN.server (PBS) or NNN (Slurm)): give --scheduler pbs or --scheduler slurm"
    )


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(cmd[0]) is None:
        raise SchedulerError(
            f"`{cmd[0]}` is not on PATH: {what} needs the scheduler's client commands "
            "(are you on a login node of the site?)"
        )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _scheduler(scheduler: str) -> dict[str, str]:
    if scheduler not in _COMMANDS:
        raise SchedulerError(f"site scheduler {scheduler!r} cannot submit jobs (pbs or slurm)")
    return _COMMANDS[scheduler]


def submit(scheduler: str, script: str, extra_args: list[str] | None = None) -> str:
    """Submit ``script`` and return the job id."""
    cmds = _scheduler(scheduler)
    cmd = [cmds["submit"]]
    if scheduler == "slurm":
        cmd.append("--parsable")
    cmd += [*(extra_args or []), script]
    proc = _run(cmd, "submitting")
    if proc.returncode != 0:
        raise SchedulerError(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    out = proc.stdout.strip().splitlines()
    if not out:
        raise SchedulerError(f"`{' '.join(cmd)}` printed no job id (stderr: {proc.stderr.strip()})")
    line = out[-1].strip()
    if scheduler == "slurm":
        job_id = line.split(";")[0]
        if not job_id.isdigit():
            raise SchedulerError(f"cannot read a Slurm job id from {line!r}")
        return job_id
    if not re.match(r"^\d+(\[\])?(\.[\w.-]+)?$", line):
        raise SchedulerError(f"cannot read a PBS job id from {line!r}")
    return line


def _slurm_state(job_id: str) -> JobState:
    if shutil.which("sacct"):
        proc = _run(
            [
                "sacct",
                "-j",
                job_id,
                "-X",
                "--noheader",
                "--parsable2",
                "--format=JobID,State,ExitCode",
            ],
            "sacct",
        )
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 3 and parts[0] == job_id:
                code = parts[2].split(":")[0]
                return JobState(
                    job_id, parts[1].split()[0], int(code) if code.isdigit() else None, "sacct"
                )
    # Without accounting (sacct fails), slurmctld still remembers a finished job
    # for MinJobAge seconds: scontrol gives its state and exit code.
    if shutil.which("scontrol"):
        proc = _run(["scontrol", "show", "job", "-o", job_id], "scontrol")
        fields = dict(
            item.split("=", 1) for item in proc.stdout.split() if "=" in item
        )
        if proc.returncode == 0 and "JobState" in fields:
            code = fields.get("ExitCode", "").split(":")[0]
            return JobState(
                job_id, fields["JobState"], int(code) if code.isdigit() else None, "scontrol"
            )
    proc = _run(["squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T"], "squeue")
    state = proc.stdout.strip()
    if proc.returncode == 0 and state:
        return JobState(job_id, state.splitlines()[0], None, "squeue")
    return JobState(job_id, "UNKNOWN", None, "squeue (job not listed: finished or never existed)")


def _pbs_state(job_id: str) -> JobState:
    proc = _run(["qstat", "-x", "-f", "-F", "json", job_id], "qstat")
    if proc.returncode != 0:
        return JobState(job_id, "UNKNOWN", None, f"qstat: {proc.stderr.strip()}")
    try:
        jobs = json.loads(proc.stdout).get("Jobs", {})
    except json.JSONDecodeError:
        return JobState(job_id, "UNKNOWN", None, "qstat printed no JSON")
    for jid, info in jobs.items():
        if jid == job_id or jid.split(".")[0] == job_id.split(".")[0]:
            code = info.get("Exit_status")
            return JobState(
                jid,
                str(info.get("job_state", "UNKNOWN")),
                int(code) if code is not None else None,
                "qstat -x",
            )
    return JobState(job_id, "UNKNOWN", None, "qstat -x (not listed)")


def job_state(scheduler: str, job_id: str) -> JobState:
    _scheduler(scheduler)
    return _slurm_state(job_id) if scheduler == "slurm" else _pbs_state(job_id)


def cancel(scheduler: str, job_id: str) -> None:
    cmd = [_scheduler(scheduler)["cancel"], job_id]
    proc = _run(cmd, "cancelling")
    if proc.returncode != 0:
        raise SchedulerError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
