"""A user's mistake ends as one line, `warpstore: error: ...`, never a traceback.

Each case is one the issue reproduced as a 35-75 line traceback. The
traceback is still there for a bug report with ``--debug`` or
``WARPSTORE_DEBUG=1``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import server_infos
from warpstore.cli_errors import error_line
from warpstore.exceptions import UserError
from warpstore.server.runtime import pid_alive

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    runtime = tmp_path / "runtime"
    environ = {**os.environ, "WARPSTORE_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    for var in ("WARPSTORE_MANIFEST", "WARPSTORE_JOB_ID", "WARPSTORE_TOKEN_FILE"):
        environ.pop(var, None)
    environ.pop("WARPSTORE_DEBUG", None)
    yield environ
    left = [info for info in server_infos(runtime) if pid_alive(int(info["pid"]))]
    for info in left:
        os.kill(int(info["pid"]), 9)
    assert not left, f"servers left running: {left}"


def warpstore(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warpstore", *args],
        env=env, capture_output=True, text=True, timeout=90, cwd=cwd,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("warpstore: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("foreground", [False, True], ids=["detached", "foreground"])
def test_server_start_on_a_busy_port(env: dict[str, str], foreground: bool) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["server", "start", "--address", "127.0.0.1", "--port", str(port)]
        line = one_line(warpstore(env, *args, *(["--foreground"] if foreground else [])))
        assert f"port {port} on 127.0.0.1 is already in use" in line and "--port" in line
        debug = warpstore(env, "--debug", *args)
        assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_server_status_with_a_wrong_token(env: dict[str, str], tmp_path: Path) -> None:
    started = warpstore(env, "server", "start", "--address", "127.0.0.1")
    assert started.returncode == 0, started.stderr
    try:
        wrong = tmp_path / "wrong-token"
        wrong.write_text(secrets.token_hex(32))
        wrong.chmod(0o600)
        line = one_line(warpstore(env, "server", "status", "--token-file", str(wrong)))
        assert "refused our token" in line and "different job tokens" in line
    finally:
        stopped = warpstore(env, "server", "stop")
        assert stopped.returncode == 0, stopped.stderr


def test_launch_daos_without_pydaos(env: dict[str, str], tmp_path: Path) -> None:
    if importlib.util.find_spec("pydaos") is not None:
        pytest.skip("pydaos is installed: this checks the error without it")
    proc = warpstore(
        env, "launch", "--site", "local", "--connector", "daos",
        "--set", "connector.daos.pool=p", "--set", "connector.daos.container=c", "--", "true",
        cwd=tmp_path,
    )
    line = one_line(proc)
    assert "needs pydaos" in line and "module load daos" in line
    (report,) = tmp_path.glob("warpstore-*/report.json")
    assert "needs pydaos" in json.loads(report.read_text())["error"]


def test_relay_without_its_extra_names_the_install(env: dict[str, str], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    code = (
        "import sys\n"
        "sys.modules['websockets'] = None  # as if `warpstore[endpoints]` were not installed\n"
        "from warpstore.cli import cli\n"
        f"cli(['relay', '--port', '0', '--token-file', {str(token)!r}], prog_name='warpstore')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    line = one_line(proc)
    assert "'websockets'" in line and "pip install 'warpstore[endpoints]'" in line


def test_endpoint_that_does_not_exist(env: dict[str, str]) -> None:
    line = one_line(warpstore(env, "endpoint", "check", "nosuch"))
    assert "no endpoint named 'nosuch'" in line and "warpstore endpoint configure nosuch" in line


def test_error_line_maps_errors_to_messages_and_codes() -> None:
    assert error_line(UserError("x: command not found", exit_code=127)) == (
        "x: command not found",
        127,
    )
    missing = ModuleNotFoundError("No module named 'ucxx'", name="ucxx")
    assert "pip install 'warpstore[ucx]'" in error_line(missing)[0]
    message, code = error_line(KeyError("oops"))  # a bug: still one line, with the way on
    assert code == 1 and message.startswith("KeyError: 'oops'") and "--debug" in message
    denied = PermissionError(13, "Permission denied", "/etc/shadow")
    assert "/etc/shadow" in error_line(denied)[0]


def test_server_start_on_an_unknown_interface(env: dict[str, str]) -> None:
    line = one_line(warpstore(env, "server", "start", "--interface", "nosuch0"))
    assert "'nosuch0'" in line and "interfaces here: lo" in line
