"""Peer-to-peer endpoints for real: a relay and two endpoint daemons on loopback.

Real websockets (the relay), real aiortc data channels (ICE restricted to
127.0.0.1 with ``--address``), real daemons started by the CLI. Every process
is tagged and proved gone at the end.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.procs import kill_all, processes_matching

pytest.importorskip("aiortc")
pytestmark = pytest.mark.timeout(240)


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warpstore", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    tag = f"wstest-{uuid.uuid4().hex[:12]}"
    home = tmp_path / "endpoints"
    token = tmp_path / "relay-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "WARPSTORE_ENDPOINT_HOME": str(home), "WARPSTORE_TEST_TAG": tag}
    monkeypatch.setenv("WARPSTORE_ENDPOINT_HOME", str(home))
    port = free_port()
    relay = subprocess.Popen(
        [sys.executable, "-m", "warpstore", "relay", "--port", str(port),
         "--token-file", str(token)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"ws://127.0.0.1:{port}"
    for name, extra in (("a", ["--persist"]), ("b", [])):
        done = cli(env, "endpoint", "configure", name, "--relay-server", url,
                   "--relay-token-file", str(token), "--address", "127.0.0.1", *extra)
        assert done.returncode == 0, done.stderr
    time.sleep(0.3)
    for name in ("a", "b"):
        started = cli(env, "endpoint", "start", name)
        assert started.returncode == 0, started.stderr
    from warpstore.endpoint.config import load_config

    info = {"env": env, "url": url, "token": token, "tmp": tmp_path,
            "a": load_config("a"), "b": load_config("b")}
    try:
        yield info
    finally:
        for name in ("a", "b", "c"):
            cli(env, "endpoint", "stop", name)
        relay.terminate()
        relay.wait(10)
        time.sleep(0.2)
        left = processes_matching(tag)
        kill_all(tag)
        assert not left, f"processes left behind: {left}"


def connectors(mesh: dict[str, Any]) -> tuple[Any, Any]:
    from warpstore.connectors.endpoint import EndpointConnector

    return EndpointConnector([mesh["a"].uuid]), EndpointConnector([mesh["b"].uuid])


@pytest.mark.parametrize("size", [1024, 1 << 20, 64 << 20], ids=["1KiB", "1MiB", "64MiB"])
def test_objects_move_between_endpoints_both_ways(mesh: dict[str, Any], size: int) -> None:
    a, b = connectors(mesh)
    try:
        data = os.urandom(size)
        key = a.put(data)
        assert key.endpoint_id == mesh["a"].uuid
        assert bytes(b.get(key)) == data and b.exists(key)
        back = b.put(data[::-1])
        assert bytes(a.get(back)) == data[::-1]
        a.evict(key)
        assert b.get(key) is None and not b.exists(key)
        with pytest.raises(Exception, match="evict it there"):
            a.evict(back)
    finally:
        a.close()
        b.close()


def test_persisted_objects_survive_a_restart(mesh: dict[str, Any]) -> None:
    a, b = connectors(mesh)
    key = a.put(b"kept on disk")
    a.close()
    assert cli(mesh["env"], "endpoint", "stop", "a").returncode == 0
    assert cli(mesh["env"], "endpoint", "start", "a").returncode == 0
    a, _ = connectors(mesh)
    try:
        assert bytes(a.get(key)) == b"kept on disk"
        assert bytes(b.get(key)) == b"kept on disk"  # a new peer connection after the restart
    finally:
        a.close()
        b.close()


def test_a_vanished_peer_is_a_clear_error(mesh: dict[str, Any]) -> None:
    a, b = connectors(mesh)
    key = b.put(b"on b")
    b.close()
    assert cli(mesh["env"], "endpoint", "stop", "b").returncode == 0
    time.sleep(0.3)
    start = time.monotonic()
    with pytest.raises(Exception, match=mesh["b"].uuid):
        a.get(key)
    assert time.monotonic() - start < 60
    a.close()


def test_wrong_relay_token_is_refused(mesh: dict[str, Any]) -> None:
    bad = mesh["tmp"] / "bad-token"
    bad.write_text("not-the-token")
    bad.chmod(0o600)  # a private file with the wrong token (a 0644 one is refused earlier)
    env = mesh["env"]
    assert cli(env, "endpoint", "configure", "c", "--relay-server", mesh["url"],
               "--relay-token-file", str(bad), "--address", "127.0.0.1").returncode == 0
    started = cli(env, "endpoint", "start", "c")
    assert started.returncode == 1 and "refused" in started.stderr


def test_list_and_check(mesh: dict[str, Any]) -> None:
    listed = cli(mesh["env"], "endpoint", "list").stdout
    assert mesh["a"].uuid in listed and "running" in listed
    checked = cli(mesh["env"], "endpoint", "check", "b")
    assert checked.returncode == 0 and f"connected to {mesh['url']}" in checked.stdout
    missing = cli(mesh["env"], "endpoint", "check", "nope")
    assert missing.returncode != 0 and "configure nope" in (missing.stderr + missing.stdout)


def test_bad_input_to_relay_and_daemon_hurts_nobody(mesh: dict[str, Any]) -> None:
    import asyncio
    import socket

    from websockets.asyncio.client import connect

    async def junk_to_relay() -> str:
        async with connect(mesh["url"]) as ws:
            await ws.recv()  # the challenge
            await ws.send("this is not JSON")
            try:
                return str(await asyncio.wait_for(ws.recv(), 5))
            except Exception as e:  # closed by the relay
                return type(e).__name__

    asyncio.run(junk_to_relay())
    with socket.socket(socket.AF_UNIX) as s:  # garbage on the daemon's local socket
        s.connect(str(mesh["a"].directory / "endpoint.sock"))
        s.sendall(b"\xff\xff\xff\xffgarbage")
    a, b = connectors(mesh)
    try:
        key = a.put(b"after the junk")
        assert bytes(b.get(key)) == b"after the junk"
    finally:
        a.close()
        b.close()


def test_peer_and_client_timeouts_are_settable_and_stated(mesh: dict[str, Any]) -> None:
    """A hung (SIGSTOPped) peer endpoint: the error comes at the timeout asked for, and says
    which timeout it was and where it is set (it was a fixed 60 s, for every request)."""
    import signal

    from warpstore.connectors.endpoint import EndpointConnector
    from warpstore.exceptions import ConnectorConnectionError, ConnectorError

    with pytest.raises(ValueError, match="less than timeout"):
        EndpointConnector([mesh["a"].uuid], timeout=10, peer_timeout=20)
    a, b = connectors(mesh)
    quick = EndpointConnector([mesh["a"].uuid], peer_timeout=2)
    impatient = EndpointConnector([mesh["a"].uuid], timeout=1.5)
    assert EndpointConnector.from_config(quick.config()).peer_timeout == 2
    b_pid = int((mesh["b"].directory / "endpoint.pid").read_text())
    stopped = False
    try:
        key = b.put(b"on b")
        assert bytes(a.get(key)) == b"on b"  # the peer connection is open
        os.kill(b_pid, signal.SIGSTOP)
        stopped = True
        start = time.monotonic()
        late = r"did not answer get .* within 2 s \(peer_timeout"
        with pytest.raises(ConnectorError, match=late):
            quick.get(key)
        # ... and once the connection is given up, a new one is not opened in time either
        with pytest.raises(ConnectorError, match=r"no peer connection within 2 s"):
            quick.exists(key)
        assert time.monotonic() - start < 30  # not the endpoint's 60 s
        with pytest.raises(ConnectorConnectionError, match=r"within 1.5 s \(the client's timeout"):
            impatient.get(key)
    finally:
        if stopped:
            os.kill(b_pid, signal.SIGCONT)
        for c in (a, b, quick, impatient):
            c.close()


def test_peer_timeout_in_a_site_config_and_the_endpoint_config(
    mesh: dict[str, Any], tmp_path: Path
) -> None:
    from warpstore.endpoint.config import load_config
    from warpstore.hpc.connectors import routing_config
    from warpstore.hpc.siteconfig import load_site

    site = load_site(
        "local",
        ["connector.routing.remote_endpoints=[u-1]", "connector.routing.remote_peer_timeout=300"],
    )
    node = {"port": None, "interface": None, "token_file": None, "timeout": 5.0,
            "memory_limit": None, "runtime_dir": str(tmp_path), "spawn": False}
    remote = routing_config(site, "zmq", node, str(tmp_path))["remote"]["config"]
    assert remote["peer_timeout"] == 300 and remote["timeout"] > 300
    env = mesh["env"]
    done = cli(env, "endpoint", "configure", "c", "--peer-timeout", "7.5")
    assert done.returncode == 0, done.stderr
    assert load_config("c").peer_timeout == 7.5
    bad = cli(env, "endpoint", "configure", "c", "--peer-timeout", "0")
    assert bad.returncode != 0 and "--peer-timeout" in bad.stderr
