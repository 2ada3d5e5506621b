"""The node server and ZMQConnector: real ZeroMQ, real processes, several 'nodes'.

"Nodes" are distinct loopback addresses (127.0.0.2, 127.0.0.3, ...) with the
test-only host name override ``WARPSTORE_HOSTNAME``.
"""

from __future__ import annotations

import os
import pickle
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.procs import kill_all, processes_matching, run_python, server_infos
from tests.wire import RawZMQ
from warpstore.connectors.zmq import ZMQConnector, ZMQKey
from warpstore.exceptions import (
    AuthenticationError,
    ConnectorConnectionError,
    StoreFullError,
)
from warpstore.proxy import is_resolved
from warpstore.server.auth import ClientSession
from warpstore.server.protocol import BODY_SIZE, HEADER_SIZE, TAG_SIZE, Kind, Op, Status
from warpstore.server.runtime import pid_alive, read_json
from warpstore.store import Store, unregister_store


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime root and job; every process started under it is ended after."""
    root = tmp_path / "rt"
    root.mkdir()
    marker = str(root)
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", marker)
    monkeypatch.setenv("WARPSTORE_JOB_ID", f"test-{secrets.token_hex(4)}")
    monkeypatch.setenv("WARPSTORE_HOSTNAME", "node-a")
    monkeypatch.setenv("WARPSTORE_ADDRESS", "127.0.0.2")
    for var in ("WARPSTORE_TOKEN", "WARPSTORE_TOKEN_FILE", "WARPSTORE_INTERFACE"):
        monkeypatch.delenv(var, raising=False)
    yield root
    leftovers = kill_all(marker)
    assert not processes_matching(marker)
    assert not leftovers, f"test left server processes running: {leftovers}"


def node_env(node: str, address: str) -> dict[str, str]:
    return {"WARPSTORE_HOSTNAME": node, "WARPSTORE_ADDRESS": address}


def stop_all(runtime: Path) -> None:
    for info in server_infos(runtime):
        c = ZMQConnector(token_file=info["token_file"], timeout=5, spawn=False)
        try:
            c._client.request(info["address"], Op.SHUTDOWN)
        finally:
            c.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(info["pid"]):
            time.sleep(0.02)


# -- the basics ----------------------------------------------------------------------


def test_put_get_evict_through_spawned_server(runtime: Path) -> None:
    c = ZMQConnector(timeout=10)
    try:
        key = c.put(b"hello")
        assert isinstance(key, ZMQKey)
        assert key.address.startswith("tcp://127.0.0.2:") and key.node == "node-a"
        assert c.exists(key)
        assert bytes(c.get(key)) == b"hello"
        empty = c.put(b"")
        assert bytes(c.get(empty)) == b""
        c.evict(key)
        assert not c.exists(key) and c.get(key) is None
        info = c.local_server()
        assert info["pid"] != os.getpid()
        assert (runtime / os.environ["WARPSTORE_JOB_ID"] / "token").stat().st_mode & 0o777 == 0o600
        server_json = runtime.glob("*/nodes/node-a/zmq/server.json")
        assert [p.stat().st_mode & 0o777 for p in server_json] == [0o600]
    finally:
        stop_all(runtime)
        c.close()


def test_store_proxies_and_zero_copy_numpy(runtime: Path) -> None:
    store = Store("zmq-store", ZMQConnector(timeout=10, copy=True), populate_target=False)
    try:
        arr = np.random.default_rng(1).random((256, 256))
        p = store.proxy(arr)
        q = pickle.loads(pickle.dumps(p))
        assert not is_resolved(q)
        np.testing.assert_array_equal(q, arr)
        q[0, 0] = -1.0  # writable, and private to this process
        assert store.get(store.put(arr))[0, 0] == arr[0, 0]
    finally:
        stop_all(runtime)
        store.close()
        unregister_store("zmq-store")


def test_config_carries_no_address_and_no_secret(runtime: Path) -> None:
    c = ZMQConnector(timeout=10)
    try:
        c.put(b"x")
        config = c.config()
        assert "address" not in config
        token = (runtime / os.environ["WARPSTORE_JOB_ID"] / "token").read_text().strip()
        assert token not in repr(config)
        assert config["token_file"].endswith("token")
    finally:
        stop_all(runtime)
        c.close()


def test_batches_and_concurrent_threads(runtime: Path) -> None:
    c = ZMQConnector(timeout=20)
    try:
        objs = [os.urandom(n) for n in (1, 1000, 100_000, 2_000_000)]
        keys = c.put_batch(objs)
        assert [bytes(b) for b in c.get_batch(keys)] == objs  # type: ignore[arg-type]
        c.evict(keys[0])
        assert c.get_batch(keys)[0] is None
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            try:
                for i in range(40):
                    data = f"{seed}-{i}".encode() * (i + 1)
                    k = c.put(data)
                    assert bytes(c.get(k)) == data
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        requests = c.server_status()["requests"]  # same node: puts go through shared memory
        assert requests.get("PUT", 0) + requests.get("PUT_SHM", 0) >= 8 * 40
    finally:
        stop_all(runtime)
        c.close()


def test_a_reader_that_falls_behind_still_gets_every_reply(runtime: Path) -> None:
    """A pipeline's replies are never dropped, however far its reader falls behind.

    A ROUTER socket drops, without a word, what a peer's queue cannot take
    beyond its high-water mark (1000 messages by default): 3000 GETs of 64
    KiB sent at once and read only later overflow the client's queue, the
    kernel's buffers and the server's queue together, and every later reply
    was lost (the request timed out).
    """
    c = ZMQConnector(timeout=20, shared_memory=False)
    raw = None
    try:
        data = os.urandom(64 << 10)
        oid = c.put(data).object_id.encode()
        raw = RawZMQ(c.local_server()["address"], c._token, timeout_ms=10_000)
        session = raw.hello()
        count = 3000
        for _ in range(count):
            _, header = session.request(Op.GET, oid, None)
            raw.send([header, oid])
        time.sleep(2)  # the server answers all of them meanwhile; nobody reads
        for i in range(count):
            kind, status, body, _ = raw.reply()  # RCVTIMEO: zmq.Again if one was dropped
            assert (kind, status, body) == (Kind.REPLY, Status.OK, data), i
    finally:
        if raw is not None:
            raw.close()
        stop_all(runtime)
        c.close()


# -- several nodes ---------------------------------------------------------------------

PRODUCER = """
import pickle, sys, numpy as np
from warpstore.connectors.zmq import ZMQConnector
from warpstore.store import Store
store = Store("multi-node", ZMQConnector(timeout=20), populate_target=False)
proxy = store.proxy({"array": np.arange(100_000, dtype=np.int64), "node": "A"})
open(sys.argv[-1] if len(sys.argv) > 1 else "PROXY", "wb").write(pickle.dumps(proxy))
print(store.connector.local_server()["address"])
"""

CONSUMER = """
import pickle, numpy as np
from warpstore.proxy import is_resolved, get_factory
proxy = pickle.loads(open("PROXY", "rb").read())
assert not is_resolved(proxy)
assert proxy["node"] == "A"
assert int(np.sum(proxy["array"])) == sum(range(100_000))
store = get_factory(proxy).get_store()
key = store.put("made on B")
print(key.address, key.node)
"""


def test_proxy_put_on_node_a_resolves_on_node_b(runtime: Path, tmp_path: Path) -> None:
    path = tmp_path / "proxy.pkl"
    try:
        addr_a = run_python(
            PRODUCER.replace('"PROXY"', repr(str(path))), node_env("node-a", "127.0.0.2")
        ).strip()
        assert addr_a.startswith("tcp://127.0.0.2:")
        out = run_python(
            CONSUMER.replace('"PROXY"', repr(str(path))), node_env("node-b", "127.0.0.3")
        ).split()
        # node B spawned its own server on its own address, not node A's
        assert out[0].startswith("tcp://127.0.0.3:") and out[1] == "node-b"
        nodes = sorted(info["node"] for info in server_infos(runtime))
        assert nodes == ["node-a", "node-b"]
    finally:
        stop_all(runtime)


def test_server_outlives_the_task_that_spawned_it(runtime: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.pkl"
    try:
        run_python(PRODUCER.replace('"PROXY"', repr(str(path))), node_env("node-a", "127.0.0.2"))
        # the producer has exited; its data is still served
        proxy = pickle.loads(path.read_bytes())
        assert proxy["node"] == "A"
    finally:
        stop_all(runtime)


RACER = """
import sys, time
from warpstore.connectors.zmq import ZMQConnector
go = float(sys.argv[1])
while time.time() < go:
    time.sleep(0.001)
c = ZMQConnector(timeout=30)
key = c.put(b"x")
print(c.local_server()["pid"], key.address)
"""


def test_eight_processes_at_once_spawn_exactly_one_server(runtime: Path) -> None:
    go = time.time() + 2.0
    env = {**os.environ, **node_env("node-a", "127.0.0.2")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
        answers = {o[0].strip() for o in outs}
        assert len(answers) == 1, answers  # same server pid and address for all eight
        servers = [
            pid
            for pid in processes_matching(str(runtime))
            if b"server" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(servers) == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        stop_all(runtime)


# -- bad input -------------------------------------------------------------------------


@pytest.fixture
def raw_server(runtime: Path) -> Iterator[tuple[ZMQConnector, RawZMQ, bytes]]:
    """A running server, a connector to it and a raw session for hand-made messages."""
    c = ZMQConnector(timeout=5)
    info = c.local_server()
    token = c._token
    raw = RawZMQ(info["address"], token)
    raw.hello()
    yield c, raw, token
    raw.close()
    stop_all(runtime)
    c.close()


def _still_serves(c: ZMQConnector) -> None:
    key = c.put(b"after the bad message")
    assert bytes(c.get(key)) == b"after the bad message"


def test_wrong_token_is_refused(raw_server: Any) -> None:
    c, raw, _token = raw_server
    c.put(b"secret data")
    intruder = ClientSession(b"not the token", raw.session.address)
    raw.send([intruder.hello_request(), b""])
    kind, status, message, _ = raw.reply()
    assert kind == Kind.REFUSAL and status == Status.AUTH_FAILED and b"authentication" in message
    # a request in our session with a tag made without the token
    _, header = raw.session.request(Op.SHUTDOWN, b"", None)
    raw.send([header[:BODY_SIZE] + bytes(TAG_SIZE), b""])
    kind, status, _, _ = raw.reply()
    assert kind == Kind.REFUSAL and status == Status.AUTH_FAILED
    _still_serves(c)
    log = Path(c.local_server()["log"]).read_text()
    assert "authentication failed" in log


def test_client_with_wrong_token_gets_clear_error(raw_server: Any, tmp_path: Path) -> None:
    c, _, _ = raw_server
    key = c.put(b"x")
    other = ZMQConnector(token="a-different-token", timeout=5, spawn=False)
    try:
        with pytest.raises(AuthenticationError, match="refused our token"):
            other.get(key)
    finally:
        other.close()


@pytest.mark.parametrize(
    "frames",
    [
        [b"\x00" * 10, b""],  # truncated header
        [os.urandom(200)],  # random bytes, one frame
        [os.urandom(HEADER_SIZE), b"k"],  # random header of the right size
        [b"a", b"b", b"c", b"d"],  # too many frames
    ],
    ids=["truncated", "random", "random-header", "frames"],
)
def test_malformed_messages_get_bad_request(raw_server: Any, frames: list[bytes]) -> None:
    c, raw, _token = raw_server
    raw.send(frames)
    kind, status, _, _ = raw.reply()
    assert kind == Kind.REFUSAL and status == Status.BAD_REQUEST
    _still_serves(c)


def test_declared_length_must_match(raw_server: Any) -> None:
    c, raw, _token = raw_server
    _, header = raw.session.request(Op.PUT, b"k1", b"x" * 100)
    raw.send([header, b"k1", b"small"])
    _kind, status, message, _ = raw.reply()
    assert status == Status.BAD_REQUEST and b"declares" in message
    assert c.server_status()["objects"] == 0
    _still_serves(c)


def test_unknown_operation(raw_server: Any) -> None:
    c, raw, _token = raw_server
    _, header = raw.session.request(99, b"k", None)
    raw.send([header, b"k"])
    kind, status, message, _ = raw.reply()
    assert kind == Kind.REPLY and status == Status.BAD_REQUEST and b"unknown operation" in message
    _still_serves(c)


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_server_never_unpickles(raw_server: Any, tmp_path: Path) -> None:
    c, raw, _token = raw_server
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)))
    # as stored data (authenticated), as a key, and as a header
    key = c.put(payload)
    assert bytes(c.get(key)) == payload
    _, header = raw.session.request(Op.GET, payload[:1000], None)
    raw.send([header, payload[:1000]])
    raw.reply()
    raw.send([payload, payload])
    raw.reply()
    status = c.server_status()
    assert status["objects"] == 1
    assert not marker.exists()


def test_store_full_keeps_what_is_stored(runtime: Path) -> None:
    c = ZMQConnector(timeout=10, memory_limit=1_000_000)
    try:
        first = c.put(b"a" * 600_000)
        with pytest.raises(StoreFullError) as info:
            c.put(b"b" * 600_000)
        message = str(info.value)
        assert c.local_server()["address"] in message
        assert "600000" in message and "1000000" in message and "node-a" in message
        assert bytes(c.get(first)) == b"a" * 600_000
        c.evict(first)
        assert c.put(b"b" * 600_000)  # room again
    finally:
        stop_all(runtime)
        c.close()


def test_killed_server_is_a_clear_error_not_a_hang(runtime: Path) -> None:
    c = ZMQConnector(timeout=1.0)
    try:
        key = c.put(b"x")
        old_pid = c.local_server()["pid"]
        os.kill(old_pid, signal.SIGKILL)
        start = time.monotonic()
        area = c._area(key.address)  # same-node small objects: gone once its lock is
        while time.monotonic() - start < 10 and (  # kill(2) does not wait, and the files
            pid_alive(old_pid) or (area is not None and area.server_alive())  # close last
        ):
            time.sleep(0.01)
        with pytest.raises(ConnectorConnectionError, match=key.address.replace(".", r"\.")):
            c.get(key)
        assert time.monotonic() - start < 10
        # a new connector spawns a replacement (stale server.json is ignored)
        d = ZMQConnector(timeout=10)
        assert bytes(d.get(d.put(b"y"))) == b"y"
        assert d.local_server()["pid"] != old_pid
        d.close()
    finally:
        stop_all(runtime)
        c.close()


# -- stopping ----------------------------------------------------------------------------


def test_sigterm_stops_gracefully_with_report(runtime: Path) -> None:
    c = ZMQConnector(timeout=10)
    try:
        c.put(b"z" * 1000)
        info = c.local_server()
        os.kill(info["pid"], signal.SIGTERM)
        directory = Path(info["log"]).parent
        deadline = time.monotonic() + 15
        while (directory / "server.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        report = read_json(directory / "report.json")
        assert report is not None
        assert report["final"]["objects"] == 1 and report["final"]["bytes"] == 1000
        assert report["final"]["requests"]["PUT"] == 1
        deadline = time.monotonic() + 15  # server.json goes first; the process exits after
        while pid_alive(info["pid"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pid_alive(info["pid"])
        assert "stopped" in Path(info["log"]).read_text()
    finally:
        stop_all(runtime)
        c.close()


def test_cli_start_status_stop(runtime: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "warpstore", "server", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("status").returncode == 1
    started = cli("start", "--memory-limit", "64MiB")
    assert started.returncode == 0, started.stderr
    assert "tcp://127.0.0.2:" in started.stdout
    again = cli("start", "--foreground")  # a second server on the node is refused
    assert again.returncode == 1 and "already running" in again.stderr
    # the refused server left nothing in the node's shared memory (no area of its own)
    from warpstore.server.direct import is_area
    from warpstore.server.shm import job_segment_dirs

    areas = [d.name for d in job_segment_dirs() if is_area(d)]
    first_pid = server_infos(runtime)[0]["pid"]
    assert areas == [f"node-a-zmq.small-{first_pid}"], areas
    c = ZMQConnector(timeout=10)
    c.put(b"q" * 2048)
    c.close()
    status = cli("status")
    assert status.returncode == 0, status.stderr
    assert "objects:   1" in status.stdout and "2048" in status.stdout
    assert "64.0 MiB" in status.stdout
    stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert cli("status").returncode == 1
    assert list(job_segment_dirs()) == []  # the stopped server took its directories along
    bad = cli("start", "--memory-limit", "lots")
    assert bad.returncode == 2 and "cannot read size" in bad.stderr
