"""The Python environment a job script activates, so that warpstore is found in the job.

A batch script starts in a fresh login shell (``#!/bin/bash -l`` resets PATH
through /etc/profile), so whatever ran ``warpstore render`` is gone there. As
ALCF and OLCF tell users, the job must activate the venv or conda env itself,
after the site's modules; and as dask-jobqueue does, it then calls the
interpreter by its absolute path, which works even when activation is partial.

``spec`` (``--python-env`` or the site key ``python_env``):

- ``auto`` (default): the environment running this command: a venv
  (``sys.prefix != sys.base_prefix``), a conda env (``conda-meta`` in the
  prefix), or a plain interpreter (called by its path, nothing activated);
- ``none``: activate nothing, call ``python3`` from the job's PATH (the site's
  modules or ``worker_init`` provide it);
- a path: a venv (``<path>/bin/activate``) or a conda env prefix;
- ``conda:NAME`` or ``conda:/prefix``: ``conda activate`` it.

Anything that would fail in the job (a missing venv, an interpreter without
warpstore) fails here, before the queue wait.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PythonEnv", "PythonEnvError", "resolve_python_env"]

# Where compute nodes usually cannot see files written on the login node.
_NODE_LOCAL = ("/tmp", "/dev/shm", "/var/tmp", "/run")


class PythonEnvError(ValueError):
    """A Python environment the job could not use."""


@dataclass(frozen=True)
class PythonEnv:
    kind: str  # venv, conda, interpreter or none
    location: str | None  # venv/conda prefix, conda env name, or interpreter path
    python: str  # what the job script runs as `<python> -m warpstore`
    activate: list[str] = field(default_factory=list)  # shell lines, after the modules
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "none":
            return "none (the job's own PATH provides python3)"
        return f"{self.kind} {self.location}"


def _has_warpstore(python: str) -> bool:
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('warpstore') is None)"
    try:
        # cwd=/: a checkout in the current directory must not count as installed
        proc = subprocess.run([python, "-c", code], capture_output=True, timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _node_local_warning(path: str, what: str) -> list[str]:
    real = os.path.realpath(path)
    for prefix in _NODE_LOCAL:
        if real == prefix or real.startswith(prefix + "/"):
            return [
                f"the job's Python environment ({what} {path}) is under {prefix}, which compute "
                "nodes usually cannot see: create it on a shared file system (home or project)"
            ]
    return []


def _python_in(prefix: Path) -> Path | None:
    for name in ("python", "python3"):
        candidate = prefix / "bin" / name
        if candidate.exists():
            return candidate
    return None


def _venv(prefix: Path, python: str | None, source: str, check: bool) -> PythonEnv:
    activate = prefix / "bin" / "activate"
    if not activate.is_file():
        raise PythonEnvError(f"{source}: {prefix} is not a virtual environment (no bin/activate)")
    interp = python or str(_python_in(prefix) or "")
    if not interp:
        raise PythonEnvError(f"{source}: {prefix} has no bin/python")
    if check and not _has_warpstore(interp):
        raise PythonEnvError(
            f"{source}: warpstore is not installed in {prefix}: "
            f"`{prefix}/bin/python -m pip install warpstore` first"
        )
    return PythonEnv(
        "venv",
        str(prefix),
        interp,
        [f"source {shlex.quote(str(activate))}"],
        _node_local_warning(str(prefix), "virtual environment"),
    )


def _conda(target: str, python: str | None, source: str, check: bool) -> PythonEnv:
    if not target:
        raise PythonEnvError(f"{source}: conda: needs an env name or prefix, e.g. conda:myenv")
    lines = [f"conda activate {shlex.quote(target)}"]
    if "/" in target:
        prefix = Path(target)
        if not (prefix / "conda-meta").is_dir():
            raise PythonEnvError(f"{source}: {prefix} is not a conda environment (no conda-meta)")
        interp = python or str(_python_in(prefix) or "")
        if not interp:
            raise PythonEnvError(f"{source}: {prefix} has no bin/python")
        if check and not _has_warpstore(interp):
            raise PythonEnvError(f"{source}: warpstore is not installed in conda env {prefix}")
        return PythonEnv(
            "conda", str(prefix), interp, lines, _node_local_warning(target, "conda env")
        )
    conda = os.environ.get("CONDA_EXE") or shutil.which("conda")
    if conda:  # a name: check it exists where we can; on a laptop rendering for a site we cannot
        try:
            out = subprocess.run(
                [conda, "env", "list"], capture_output=True, text=True, timeout=60
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        names = {line.split()[0] for line in out.splitlines() if line and not line.startswith("#")}
        if out and target not in names:
            raise PythonEnvError(
                f"{source}: no conda env named {target!r} (`conda env list` shows: "
                f"{', '.join(sorted(names)) or 'none'})"
            )
    return PythonEnv("conda", target, "python", lines, [])


def resolve_python_env(
    spec: str | None, source: str = "--python-env", check: bool = True
) -> PythonEnv:
    """The environment ``spec`` names (see the module docstring); ``source`` names the option
    or site key in errors. ``check=False`` skips running the interpreter (tests, speed)."""
    spec = (spec or "auto").strip()
    if spec == "none":
        return PythonEnv("none", None, "python3")
    if spec.startswith("conda:"):
        return _conda(spec[len("conda:") :], None, source, check)
    if spec == "auto":
        prefix = Path(sys.prefix)
        if sys.prefix != sys.base_prefix and (prefix / "bin" / "activate").is_file():
            return _venv(prefix, sys.executable, "the running environment", check=False)
        if (prefix / "conda-meta").is_dir():
            env = _conda(sys.prefix, sys.executable, "the running environment", check=False)
            return env
        python = sys.executable
        return PythonEnv(
            "interpreter", python, python, [], _node_local_warning(python, "interpreter")
        )
    path = Path(os.path.expanduser(spec))
    if not path.exists():
        raise PythonEnvError(
            f"{source}: {spec} does not exist (give a venv directory, conda:NAME, auto or none)"
        )
    path = path.absolute()
    if path.is_file() and os.access(path, os.X_OK):  # an interpreter
        if check and not _has_warpstore(str(path)):
            raise PythonEnvError(f"{source}: warpstore is not installed for {path}")
        return PythonEnv(
            "interpreter", str(path), str(path), [], _node_local_warning(str(path), "interpreter")
        )
    if (path / "conda-meta").is_dir():
        return _conda(str(path), None, source, check)
    return _venv(path, None, source, check)
