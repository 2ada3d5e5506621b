"""The UCX transport for real: ucxx (PyPI ucxx-cu12) over TCP/shared memory on this CPU.

"Nodes" differ by host name (``WARPSTORE_HOSTNAME``) and port; UCX's TCP
wire-up is unreliable between secondary loopback addresses, so every server
here listens on 127.0.0.1 (see ``default_address``).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.procs import kill_all, processes_matching, run_python, server_infos
from tests.wire import check_reply
from warpstore.connectors.ucx import UCXConnector, UCXKey
from warpstore.exceptions import AuthenticationError, ConnectorConnectionError, StoreFullError
from warpstore.proxy import is_resolved
from warpstore.server.auth import ClientSession
from warpstore.server.protocol import (
    BODY_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    HelloSealer,
    Kind,
    Op,
    Status,
    pack_header,
    parse_header,
)
from warpstore.server.runtime import pid_alive
from warpstore.store import Store, unregister_store

pytest.importorskip("ucxx")  # the [ucx] extra; installed by tests/run.sh and CI
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "rt"
    root.mkdir()
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", str(root))
    monkeypatch.setenv("WARPSTORE_JOB_ID", f"ucx-{secrets.token_hex(4)}")
    monkeypatch.setenv("WARPSTORE_HOSTNAME", "node-a")
    monkeypatch.setenv("WARPSTORE_ADDRESS", "127.0.0.1")
    for var in ("WARPSTORE_TOKEN", "WARPSTORE_TOKEN_FILE", "WARPSTORE_INTERFACE"):
        monkeypatch.delenv(var, raising=False)
    yield root
    stop_all(root)
    leftovers = kill_all(str(root))
    assert not leftovers, f"test left server processes running: {leftovers}"


def stop_all(runtime: Path) -> None:
    for info in server_infos(runtime):
        c = UCXConnector(token_file=info["token_file"], timeout=5, spawn=False)
        try:
            c._client.request(info["address"], Op.SHUTDOWN)
        except Exception:
            os.kill(info["pid"], signal.SIGTERM)
        finally:
            c.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(info["pid"]):
            time.sleep(0.02)


def test_put_get_evict_and_zero_copy_numpy(runtime: Path) -> None:
    store = Store("ucx-store", UCXConnector(timeout=20, copy=True), populate_target=False)
    try:
        key = store.connector.put(b"hello")
        assert isinstance(key, UCXKey) and key.address.startswith("ucx://127.0.0.1:")
        assert key.node == "node-a"
        assert bytes(store.connector.get(key)) == b"hello"
        assert bytes(store.connector.get(store.connector.put(b""))) == b""
        store.connector.evict(key)
        assert not store.connector.exists(key) and store.connector.get(key) is None
        arr = np.random.default_rng(2).random((512, 512))  # 2 MiB: the two-step PUT
        p = pickle.loads(pickle.dumps(store.proxy(arr)))
        assert not is_resolved(p)
        np.testing.assert_array_equal(p, arr)
        p[0, 0] = -1.0  # received into a private, writable buffer
        info = store.connector.local_server()
        assert info["transport"] == "ucx" and info["pid"] != os.getpid()
        assert store.connector.server_status()["transport"] == "ucx"
    finally:
        store.close()
        unregister_store("ucx-store")


PRODUCER = """
import pickle, sys, numpy as np
from warpstore.connectors.ucx import UCXConnector
from warpstore.store import Store
store = Store("ucx-multi", UCXConnector(timeout=20), populate_target=False)
proxy = store.proxy({"array": np.arange(300_000, dtype=np.int64), "node": "A"})
open(sys.argv[-1] if len(sys.argv) > 1 else "PROXY", "wb").write(pickle.dumps(proxy))
print(store.connector.local_server()["address"])
"""

CONSUMER = """
import pickle, numpy as np
from warpstore.proxy import is_resolved, get_factory
proxy = pickle.loads(open("PROXY", "rb").read())
assert not is_resolved(proxy)
assert int(np.sum(proxy["array"])) == sum(range(300_000))
store = get_factory(proxy).get_store()
key = store.put("made on B")
print(key.address, key.node)
"""


def test_proxy_made_on_node_a_resolves_on_node_b(runtime: Path, tmp_path: Path) -> None:
    path = tmp_path / "proxy.pkl"
    addr_a = run_python(
        PRODUCER.replace('"PROXY"', repr(str(path))), {"WARPSTORE_HOSTNAME": "node-a"}
    ).strip()
    out = run_python(
        CONSUMER.replace('"PROXY"', repr(str(path))), {"WARPSTORE_HOSTNAME": "node-b"}
    ).split()
    assert out[1] == "node-b" and out[0] != addr_a and out[0].startswith("ucx://")
    assert sorted(i["node"] for i in server_infos(runtime)) == ["node-a", "node-b"]


RACER = """
import sys, time
from warpstore.connectors.ucx import UCXConnector
go = float(sys.argv[1])
while time.time() < go:
    time.sleep(0.001)
c = UCXConnector(timeout=60)
key = c.put(b"x")
print(c.local_server()["pid"], key.address)
"""


def test_six_processes_at_once_spawn_exactly_one_server(runtime: Path) -> None:
    go = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(6)
    ]
    try:
        outs = [p.communicate(timeout=150) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
        assert len({o[0].strip() for o in outs}) == 1
        servers = [
            pid for pid in processes_matching(str(runtime))
            if b"server" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(servers) == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_wrong_token_is_refused_and_server_carries_on(runtime: Path) -> None:
    c = UCXConnector(timeout=10)
    other = UCXConnector(token="not-the-token", timeout=10, spawn=False)
    try:
        key = c.put(b"secret")
        with pytest.raises(AuthenticationError, match="refused our token"):
            other.get(key)
        with pytest.raises(AuthenticationError):
            other._client.request(key.address, Op.SHUTDOWN)
        assert bytes(c.get(key)) == b"secret"
        log = Path(c.local_server()["log"]).read_text()
        assert "authentication failed" in log
    finally:
        other.close()
        c.close()


def _raw_exchange(
    address: str, make: Callable[[ClientSession], list[bytes]], token: bytes
) -> list[tuple[int, int, bytes]]:
    """Open a session, send hand-made UCX messages; each reply's (kind, status, body).

    Every reply's tag is checked (refusals too). The server closes the
    endpoint after a refusal, so the exchange stops at the first one.
    """
    from warpstore.server.ucx_client import _Loop
    from warpstore.server.ucx_env import import_ucxx
    from warpstore.server.ucx_server import FIRST_MESSAGE_MAX, TRAILER, parse_ucx_address

    ucxx = import_ucxx()
    host, port = parse_ucx_address(address)
    session = ClientSession(token, address)

    async def recv(ep: Any) -> tuple[int, int, bytes]:
        reply = bytearray(FIRST_MESSAGE_MAX)
        await asyncio.wait_for(ep.recv(reply), 10)
        h = parse_header(reply[:HEADER_SIZE])
        end = HEADER_SIZE + h.key_len
        frames = [bytes(reply[:HEADER_SIZE]), bytes(reply[HEADER_SIZE:end])]
        frames.append(bytes(reply[end : end + h.data_len]))
        assert reply[end + h.data_len : end + h.data_len + 4] == TRAILER
        return check_reply(session, frames)

    async def go() -> list[tuple[int, int, bytes]]:
        ep = await ucxx.create_endpoint(host, port)
        try:
            await ep.send(bytearray(session.hello_request() + TRAILER))
            reply = bytearray(FIRST_MESSAGE_MAX)
            await asyncio.wait_for(ep.recv(reply), 10)
            session.accept_hello(
                bytes(reply[:HEADER_SIZE]), b"", bytes(reply[HEADER_SIZE : HEADER_SIZE + 40])
            )
            replies = []
            for m in make(session):
                await ep.send(bytearray(m))
                replies.append(await recv(ep))
                if replies[-1][0] == Kind.REFUSAL:
                    break
            return replies
        finally:
            ep.abort()

    return asyncio.run_coroutine_threadsafe(go(), _Loop.get()).result(30)


def _msg(header: bytes, key: bytes = b"", data: bytes = b"") -> bytes:
    return header + key + data + b"WSv2"


def _short_put(s: ClientSession) -> list[bytes]:
    data = b"x" * 500 + bytes(500)  # the tag is right for 1000 bytes; only 500 are sent
    _, header = s.request(Op.PUT, b"k", data)
    return [header + b"k" + data[:500]]


def _replayed_put(s: ClientSession) -> list[bytes]:
    _, header = s.request(Op.PUT, b"k", b"v1")
    return [_msg(header, b"k", b"v1"), _msg(header, b"k", b"v1")]


def _reply_as_request(s: ClientSession) -> list[bytes]:
    _, header = s.request(Op.EXISTS, b"k", None)
    forged = bytearray(header)
    forged[6] = Kind.REPLY
    return [_msg(bytes(forged), b"k")]


def _status_byte(s: ClientSession) -> list[bytes]:
    assert s.sealer is not None
    header = pack_header(s.sealer, Op.EXISTS, session=s.sealer.session, counter=99, status=3)
    return [_msg(header)]


MALFORMED: dict[str, tuple[Callable[[ClientSession], list[bytes]], int]] = {
    "random": (lambda s: [os.urandom(HEADER_SIZE) + b"WSv2"], Status.BAD_REQUEST),
    "unsigned": (
        lambda s: [_msg(s.request(Op.GET, b"", None)[1][:BODY_SIZE] + bytes(TAG_SIZE))],
        Status.AUTH_FAILED,
    ),
    "unknown-op": (lambda s: [_msg(s.request(99, b"", None)[1])], Status.BAD_REQUEST),
    "get-with-data": (
        lambda s: [_msg(s.request(Op.GET, b"", b"0123456789")[1], b"", b"0123456789")],
        Status.BAD_REQUEST,
    ),
    "key-too-long": (
        lambda s: [_msg(pack_header(HelloSealer(b"t"), Op.GET, key=b"k" * 2000), b"k" * 2000)],
        Status.BAD_REQUEST,
    ),
    "short-eager-put": (_short_put, Status.BAD_REQUEST),
    "replayed-put": (_replayed_put, Status.REPLAYED),
    "reply-as-request": (_reply_as_request, Status.BAD_REQUEST),
    "status-byte-in-request": (_status_byte, Status.BAD_REQUEST),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_are_refused(runtime: Path, case: str) -> None:
    make, expected = MALFORMED[case]
    c = UCXConnector(timeout=10)
    try:
        info = c.local_server()
        replies = _raw_exchange(info["address"], make, c._token)
        assert replies[-1][1] == expected, replies
        assert c.server_status()["objects"] == (1 if case == "replayed-put" else 0)
        assert bytes(c.get(c.put(b"still here"))) == b"still here"
    finally:
        c.close()


def test_store_full_small_and_large_keeps_what_is_stored(runtime: Path) -> None:
    c = UCXConnector(timeout=20, memory_limit=1_000_000)
    try:
        first = c.put(b"a" * 600_000)  # two-step PUT
        with pytest.raises(StoreFullError) as info:
            c.put(b"b" * 600_000)
        assert "node-a" in str(info.value) and c.local_server()["address"] in str(info.value)
        keep = c.put(b"c" * 60_000)  # eager PUT
        with pytest.raises(StoreFullError):
            c.put(b"d" * 60_000 * 6)
        with pytest.raises(StoreFullError):
            c.put(b"e" * 50_000_000)  # refused before the 50 MB are sent
        status = c.server_status()
        assert status["bytes_in"] == 660_000 and status["objects"] == 2
        assert bytes(c.get(first)) == b"a" * 600_000 and bytes(c.get(keep)) == b"c" * 60_000
    finally:
        c.close()


def test_killed_server_is_a_clear_error_not_a_hang(runtime: Path) -> None:
    c = UCXConnector(timeout=3.0)
    try:
        key = c.put(b"x")
        os.kill(c.local_server()["pid"], signal.SIGKILL)
        time.sleep(0.2)
        start = time.monotonic()
        with pytest.raises(ConnectorConnectionError, match=key.address):
            c.get(key)
        assert time.monotonic() - start < 15
    finally:
        c.close()


def test_cli_start_status_stop(runtime: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "warpstore", "server", *args, "--transport", "ucx"],
            capture_output=True, text=True, timeout=120,
        )

    started = cli("start")
    assert started.returncode == 0, started.stderr
    assert "ucx server ucx://127.0.0.1:" in started.stdout
    status = cli("status")
    assert status.returncode == 0 and "objects:   0" in status.stdout, status.stderr
    stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped ucx server" in stopped.stdout
    assert server_infos(runtime) == []


def test_oversized_first_message_closes_only_that_endpoint(runtime: Path) -> None:
    from warpstore.server.ucx_client import _Loop
    from warpstore.server.ucx_env import import_ucxx
    from warpstore.server.ucx_server import FIRST_MESSAGE_MAX, parse_ucx_address

    c = UCXConnector(timeout=10)
    try:
        info = c.local_server()
        host, port = parse_ucx_address(info["address"])
        ucxx = import_ucxx()

        async def flood() -> None:
            ep = await ucxx.create_endpoint(host, port)
            try:
                await asyncio.wait_for(ep.send(bytearray(FIRST_MESSAGE_MAX + 4096)), 10)
            except Exception:
                pass  # the server may drop the endpoint while this is in flight
            finally:
                ep.abort()

        asyncio.run_coroutine_threadsafe(flood(), _Loop.get()).result(30)
        assert bytes(c.get(c.put(b"still serving"))) == b"still serving"
        assert pid_alive(info["pid"])
    finally:
        c.close()
