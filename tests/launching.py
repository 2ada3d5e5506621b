"""Helpers for tests that run `warpstore launch` or the launch/ wrappers for real.

The ``job`` fixture (tests/conftest.py) gives each test an environment whose
processes carry a tag, and fails the test if any tagged process is left; these
helpers run launches in that environment and read what they wrote.
"""

from __future__ import annotations

import contextlib
import json
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "mpi_workflow.py"
RUN = REPO / "launch" / "warpstore-run"
LAUNCH = [sys.executable, "-m", "warpstore", "launch"]


def launch(
    job: dict[str, Any], *args: str, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    """``warpstore launch ARGS`` in the job's directory and environment, to the end."""
    return subprocess.run(
        [*LAUNCH, *args],
        cwd=job["dir"],
        env=job["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def running(
    job: dict[str, Any],
    argv: Sequence[str],
    ready: Callable[[], bool],
    *,
    capture: bool = True,
    timeout: float = 60,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``argv`` in the job, wait until ``ready()``, and always end it afterwards.

    While waiting the process must stay alive (its output is in the failure);
    on leaving, it is killed if it still runs and reaped either way.
    """
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen(
        list(argv), cwd=job["dir"], env=job["env"], stdout=out, stderr=out, text=True
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"{argv[0]} ended early: {proc.communicate()}")
            assert time.monotonic() < deadline, f"not ready after {timeout} s: {argv}"
            time.sleep(0.05)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()


def sleeper(marker: Path, put: int = 0) -> str:
    """Workflow code: put ``put`` bytes into the task store (if any), write its pid, sleep."""
    lines = ["import os, time, pathlib"]
    if put:
        lines += ["import warpstore", f"warpstore.task_store().put(b'x' * {put})"]
    lines += [f"pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))", "time.sleep(120)"]
    return "\n".join(lines) + "\n"


def written(path: Path) -> Callable[[], bool]:
    """A ``ready`` test: ``path`` exists and is not empty."""
    return lambda: path.exists() and bool(path.read_text())


def all_gone(pids: Sequence[int], timeout: float = 20) -> bool:
    """Wait up to ``timeout`` seconds for every process in ``pids`` to end (zombies count)."""
    from warpstore.server.runtime import pid_alive

    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def job_dir(job: dict[str, Any]) -> Path:
    (found,) = job["dir"].glob("warpstore-*/")
    return Path(found)


def report(job: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((job_dir(job) / "report.json").read_text())
    return data


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warpstore: error:")]


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A user mistake: exactly one ``warpstore: error:`` line naming each needle, no trace."""
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = error_lines(proc.stderr)
    for needle in needles:
        assert needle in line, line
    return line
