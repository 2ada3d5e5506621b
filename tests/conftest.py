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


@pytest.fixture(autouse=True)
def _no_empty_shm_job_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove what dead processes left in the test's job directory under
    /dev/shm/warpstore-<uid>/, then the directory if it is empty.

    A server killed by a test (SIGKILL) cannot remove its segment directory or
    small-object area; a stopped server removes its own. Only dead processes'
    files go, so a test that leaks segments from a live process still shows them. (Depends on
    ``monkeypatch`` so that it runs while the test's WARPSTORE_JOB_ID is set.)
    """
    yield
    from warpstore.server.shm import cleanup_job, remove_empty_job_dirs

    job = os.environ.get("WARPSTORE_JOB_ID")
    if job:
        # what killed servers leave (their segments and small-object areas): gone
        # only because their processes are dead; a live process's leak stays
        cleanup_job(job)
        remove_empty_job_dirs(job)


def _mapped_shm_files() -> set[str]:
    """Paths under /dev/shm that some live process maps or holds open."""
    held: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
            held.update(line.split(None, 5)[-1].strip() for line in f if "/dev/shm/" in line)
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return held


@pytest.fixture(scope="session", autouse=True)
def _no_mpich_shm_leftovers() -> Iterator[None]:
    """Remove the ``/dev/shm/mpich_shm_*`` files that MPI jobs killed by our tests left.

    MPICH removes its shared-memory files when its ranks finalize; the tests that
    kill a server rank (a crashed node, a launcher killed mid-job) end its job
    without that, as a real crash does (a site's epilog cleans it there). Only files
    that appeared during this session and that no live process maps or holds go.
    """
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield
    if not os.path.isdir("/dev/shm"):
        return
    new = [n for n in os.listdir("/dev/shm") if n.startswith("mpich_shm_") and n not in before]
    if not new:
        return
    held = _mapped_shm_files()
    for name in new:
        path = os.path.join("/dev/shm", name)
        if path not in held:
            with contextlib.suppress(OSError):
                os.unlink(path)


ConnectorMaker = Callable[[], Any]


def _node_server_connector(
    cls: Any, name: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A node-server connector whose server runs in a private runtime dir, ended after."""
    from tests.procs import kill_all

    root = tmp_path / f"{name}-rt"
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", str(root))
    monkeypatch.setenv("WARPSTORE_JOB_ID", f"conn-{os.getpid()}-{time.monotonic_ns()}")
    monkeypatch.setenv("WARPSTORE_ADDRESS", "127.0.0.1")
    monkeypatch.delenv("WARPSTORE_TOKEN", raising=False)
    monkeypatch.delenv("WARPSTORE_TOKEN_FILE", raising=False)
    c = cls(timeout=30)
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            if c._server is not None:
                c.stop_server()
        c.close()
        kill_all(str(root))


@pytest.fixture
def zmq_connector(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from warpstore.connectors.zmq import ZMQConnector

    yield from _node_server_connector(ZMQConnector, "zmq", tmp_path, monkeypatch)


@pytest.fixture
def ucx_connector(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pytest.importorskip("ucxx")
    from warpstore.connectors.ucx import UCXConnector

    yield from _node_server_connector(UCXConnector, "ucx", tmp_path, monkeypatch)


@pytest.fixture
def margo_server(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Margo node server in this process, on the adapter double (no pymargo here)."""
    import threading

    import warpstore.server.margo_adapter as adapter
    from tests.margo_double import DoubleEngine
    from warpstore.server.main import RunningServer

    monkeypatch.setattr(adapter, "ENGINE_FACTORY", DoubleEngine)
    root = tmp_path / "margo-rt"
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", str(root))
    monkeypatch.setenv("WARPSTORE_JOB_ID", f"margo-{os.getpid()}-{time.monotonic_ns()}")
    monkeypatch.delenv("WARPSTORE_TOKEN", raising=False)
    monkeypatch.delenv("WARPSTORE_TOKEN_FILE", raising=False)
    running = RunningServer(
        "margo", address="127.0.0.1", protocol="ofi+tcp", memory_limit=2**30
    )
    thread = threading.Thread(target=running.server.serve, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.server.stop()
        thread.join(10)
        running.finish()


@pytest.fixture
def margo_connector(margo_server: Any) -> Iterator[Any]:
    from warpstore.connectors.margo import MargoConnector

    c = MargoConnector(protocol="ofi+tcp", timeout=20, spawn=False)
    yield c
    c.close()


@pytest.fixture
def pydaos_double(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The pydaos double as ``pydaos``, with pool ``tank`` and PYTHON container ``objs``."""
    import sys

    from tests import pydaos_double as double

    double.reset()
    double.create_container("tank", "objs")
    monkeypatch.setitem(sys.modules, "pydaos", double)
    yield double
    double.reset()


@pytest.fixture
def daos_connector(pydaos_double: Any) -> Iterator[Any]:
    from warpstore.connectors.daos import DAOSConnector

    c = DAOSConnector("tank", "objs", namespace=f"ns-{time.monotonic_ns()}")
    yield c
    c.close()


def _local(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    return LocalConnector()


def _file(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    return FileConnector(tmp_path / "store")


def _redis(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    host, port = request.getfixturevalue("redis_server")
    return RedisConnector(host, port, prefix=f"test-{os.getpid()}-{time.monotonic_ns()}:")


def _multi(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    from warpstore.connectors.multi import MultiConnector, Policy

    return MultiConnector(
        {
            "small": (LocalConnector(), Policy(priority=2, max_size_bytes=64 * 1024)),
            "large": (FileConnector(tmp_path / "large"), Policy(priority=1)),
        }
    )


# Every connector the conformance suite (tests/test_conformance.py) runs against.
# A new connector joins by adding one entry: a fixture name, or a maker.
CONNECTORS: dict[str, str | Callable[[pytest.FixtureRequest, Any], Any]] = {
    "local": _local,
    "file": _file,
    "redis": _redis,
    "zmq": "zmq_connector",
    "ucx": "ucx_connector",
    "margo-double": "margo_connector",
    "daos-double": "daos_connector",
    "multi": _multi,
}


@pytest.fixture(params=sorted(CONNECTORS))
def connector(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """Each connector, ready to use."""
    how = CONNECTORS[request.param]
    if isinstance(how, str):
        yield request.getfixturevalue(how)
        return
    c = how(request, tmp_path)
    yield c
    c.close()


@pytest.fixture
def job(tmp_path: Any) -> Iterator[dict[str, Any]]:
    """An environment for one `warpstore launch` in ``tmp_path``; fails if it left anything.

    Every process started with ``job["env"]`` carries a unique tag in its environment,
    so the check finds servers, mpiexec and workflows however they were started.
    Helpers that run launches in it are in tests/launching.py.
    """
    import uuid

    from tests.procs import kill_all, processes_matching

    tag = f"wstest-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "WARPSTORE_TEST_TAG": tag,
        "WARPSTORE_RUNTIME_DIR": str(tmp_path / "runtime"),
        "TMPDIR": "/tmp",
    }
    for var in ("WARPSTORE_MANIFEST", "WARPSTORE_JOB_ID", "WARPSTORE_TOKEN_FILE"):
        env.pop(var, None)
    yield {"env": env, "dir": tmp_path, "tag": tag}
    time.sleep(0.2)
    leftover = processes_matching(tag)
    kill_all(tag)
    assert not leftover, f"processes left behind: {leftover}"
