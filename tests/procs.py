"""Helpers for tests that start real processes: find them, end them, prove they are gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from warpstore.server.runtime import pid_alive, read_json


def processes_matching(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line or environment mentions ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().decode(errors="replace")
        except OSError:
            continue
        if (marker in cmdline or marker in environ) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def kill_all(marker: str, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process mentioning ``marker``; return what was found."""
    pids = processes_matching(marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.02)
    return pids


def server_infos(runtime_dir: Path) -> list[dict[str, Any]]:
    return [
        info
        for path in sorted(runtime_dir.glob("*/nodes/*/*/server.json"))
        if (info := read_json(path)) is not None
    ]


def run_python(code: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` added; return stdout, fail loudly."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout
