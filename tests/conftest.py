"""Shared fixtures: a real redis-server, and connectors to run tests against."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from warpstore.connectors.file import FileConnector
from warpstore.connectors.local import LocalConnector
from warpstore.connectors.redis import RedisConnector


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_server() -> Iterator[tuple[str, int]]:
    """A real redis-server on a free loopback port for the whole session."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `bash tests/run.sh` (it installs it)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="warpstore-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}")
            time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


ConnectorMaker = Callable[[], Any]


@pytest.fixture
def zmq_connector(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A ZMQConnector whose node server runs in a private runtime dir, stopped after."""
    from tests.procs import kill_all
    from warpstore.connectors.zmq import ZMQConnector

    root = tmp_path / "zmq-rt"
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", str(root))
    monkeypatch.setenv("WARPSTORE_JOB_ID", f"conn-{os.getpid()}-{time.monotonic_ns()}")
    monkeypatch.setenv("WARPSTORE_ADDRESS", "127.0.0.1")
    monkeypatch.delenv("WARPSTORE_TOKEN", raising=False)
    monkeypatch.delenv("WARPSTORE_TOKEN_FILE", raising=False)
    c = ZMQConnector(timeout=20)
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            if c._server is not None:
                c.stop_server()
        c.close()
        kill_all(str(root))


@pytest.fixture(params=["local", "file", "redis", "zmq"])
def connector(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """Each connector, ready to use."""
    if request.param == "zmq":
        yield request.getfixturevalue("zmq_connector")
        return
    if request.param == "local":
        c: Any = LocalConnector()
    elif request.param == "file":
        c = FileConnector(tmp_path / "store")
    else:
        host, port = request.getfixturevalue("redis_server")
        c = RedisConnector(host, port, prefix=f"test-{os.getpid()}-{time.monotonic_ns()}:")
    yield c
    c.close()
