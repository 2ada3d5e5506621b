"""Small same-node objects straight in the server's area, without a server round trip.

The unit half checks :mod:`warpstore.server.direct` on its own (publishing,
eviction, the byte count and limit, links, modes, the token check, sweeps);
the other half runs real node servers of each transport (ZeroMQ and UCX,
parametrized, with the fixtures of ``test_shm.py``: the area is created by
the server core and used by the client base) and checks what users see:
another process's put is there without the server having seen a message,
remote and server-side operations see these objects, the memory limit holds,
and the report counts them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import test_shm
from tests.procs import run_python
from warpstore.exceptions import ConnectorError, StoreFullError
from warpstore.server import direct, shm
from warpstore.server.core import ServerCore
from warpstore.server.protocol import Op, Status
from warpstore.server.runtime import pid_alive

pytestmark = pytest.mark.timeout(180)

TOKEN = b"t" * 32
# the node-server fixtures of test_shm.py: a private runtime and job, each transport
runtime, transport, _connect = test_shm.runtime, test_shm.transport, test_shm._connect


def _dead_pid() -> int:
    pid = 999_999
    while pid_alive(pid):
        pid -= 1
    return pid


@pytest.fixture
def area(tmp_path: Path) -> Any:
    server = direct.DirectArea(tmp_path / "seg.small-1", TOKEN, create=True, memory_limit=4000)
    yield server
    server.close()


# -- the area on its own ------------------------------------------------------------------


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named-temporary"])
def test_put_get_exists_evict_and_count(area: Any, unnamed: bool) -> None:
    client = direct.DirectArea(area.path, TOKEN)
    client._tmpfile &= unnamed  # file systems without O_TMPFILE: a named temporary file
    assert client.put(b"k1", [b"head:", memoryview(b"x" * 995)])
    assert area.get(b"k1") == bytearray(b"head:" + b"x" * 995)  # another handle sees it
    assert client.exists(b"k1") and not client.exists(b"k2")
    (name,) = direct.leftover_names(area.path)  # in one of the 16 subdirectories
    assert stat.S_IMODE(os.lstat(area.path / name).st_mode) == 0o600
    assert b"k1" not in name.encode()  # named by a keyed hash, not the key
    assert area.usage()["bytes"] == 1000 and area.usage()["objects"] == 1
    assert client.evict(b"k1") and not client.evict(b"k1")  # one evictor wins
    assert area.get(b"k1") is None
    usage = area.usage()
    assert (usage["bytes"], usage["objects"]) == (0, 0)
    assert (usage["PUT"], usage["GET"], usage["EXISTS"], usage["EVICT"]) == (1, 1, 1, 1)
    assert usage["bytes_in"] == 1000 and usage["bytes_out"] == 1000
    assert direct.leftover_names(area.path) == []  # no temporary left
    client.close()


def test_rewriting_a_key_counts_its_bytes_once(area: Any) -> None:
    assert area.put(b"k", [b"a" * 100])
    assert area.put(b"k", [b"b" * 300])
    assert area.get(b"k") == bytearray(b"b" * 300)
    assert area.usage()["bytes"] == 300 and area.usage()["objects"] == 1


def test_threads_and_forked_children_count_exactly(tmp_path: Path) -> None:
    """Each process adds to its own record (a forked child gets a new one); threads of a
    process share it under a thread lock: no count is lost."""
    server = direct.DirectArea(tmp_path / "s.small-3", TOKEN, create=True)
    client = direct.DirectArea(server.path, TOKEN)
    client.put(b"before-fork", [b"x"])

    def puts(prefix: bytes) -> None:
        for i in range(100):
            assert client.put(prefix + b"%d" % i, [b"y" * 10])

    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            puts(b"child-")
        finally:
            os._exit(0)
    threads = [threading.Thread(target=puts, args=(b"t%d-" % t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert os.waitpid(pid, 0)[1] == 0
    usage = server.usage()
    assert usage["objects"] == 401 and usage["bytes"] == 1 + 400 * 10 and usage["PUT"] == 401
    client.close()
    server.remove()


def test_limit_counts_direct_and_server_bytes(area: Any) -> None:
    assert area.put(b"a", [b"x" * 3000])
    assert not area.put(b"b", [b"x" * 1001])  # 4001 > 4000: the server decides
    assert area.get(b"b") is None and area.usage()["bytes"] == 3000
    area.publish_server_bytes(900)
    assert area.put(b"b", [b"x" * 100])  # exactly 4000
    assert not area.put(b"c", [b"x"])
    area.evict(b"a")
    assert area.put(b"c", [b"x"])


def test_reader_of_an_evicted_object_keeps_it(area: Any) -> None:
    area.put(b"k", [b"v" * 100])
    fd = os.open(area._name(b"k"), os.O_RDONLY)
    try:
        assert area.evict(b"k")
        assert os.read(fd, 200) == b"v" * 100  # unlinked, not pulled from under the reader
    finally:
        os.close(fd)


def test_links_and_foreign_modes_are_not_followed_or_served(area: Any, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not an object")
    os.symlink(secret, area._name(b"link"))
    assert area.get(b"link") is None  # O_NOFOLLOW
    loose = area._name(b"loose")
    Path(loose).write_bytes(b"readable by the group")
    os.chmod(loose, 0o640)
    assert area.get(b"loose") is None


def test_another_token_does_not_open_the_area(area: Any) -> None:
    with pytest.raises(OSError, match="another token"):
        direct.DirectArea(area.path, b"u" * 32)


def test_clients_notice_a_dead_server(tmp_path: Path) -> None:
    """The server's lock on ``alive`` goes with it: clients stop using the area."""
    path = tmp_path / "seg.small-2"
    code = (
        "import sys, time; from pathlib import Path; from warpstore.server import direct; "
        f"a = direct.DirectArea(Path({str(path)!r}), {TOKEN!r}, create=True); "
        "a.put(b'k', [b'v']); print('up', flush=True); sys.stdin.readline()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        client = direct.DirectArea(path, TOKEN)
        assert client.server_alive() and client.get(b"k") == bytearray(b"v")
    finally:
        proc.kill()
        proc.wait(10)
    assert not client.server_alive()
    assert client.get(b"k") is None and not client.exists(b"k") and not client.put(b"n", [b"v"])
    client.close()


def test_dead_writers_temporaries_and_dead_servers_areas_are_swept(tmp_path: Path) -> None:
    seg = tmp_path / "node-zmq"
    seg.mkdir()
    live = direct.DirectArea(direct.area_path(seg, os.getpid()), TOKEN, create=True)
    live.put(b"kept", [b"v"])
    dead = _dead_pid()
    stale = f"t-{dead}-{'a' * 32}"
    running = f"t-{os.getpid()}-{'b' * 32}"
    for name in (stale, running):
        (live.path / name).write_bytes(b"half written")
    gone = direct.DirectArea(direct.area_path(seg, dead), TOKEN, create=True)
    gone.put(b"lost", [b"v"])
    lost = Path(gone._name(b"lost"))
    gone.close()
    # pid 1 lives, but not as this area's server: the area's lock is not held
    reused = direct.DirectArea(direct.area_path(seg, 1), TOKEN, create=True)
    reused.close()
    assert len(direct.leftover_files(seg)) == 4  # 2 objects, 2 temporaries
    removed = direct.sweep_areas(seg)
    assert sorted(removed) == sorted([live.path / stale, lost])
    assert not gone.path.exists() and not reused.path.exists()
    assert (live.path / running).exists() and not (live.path / stale).exists()
    assert live.get(b"kept") == bytearray(b"v")
    live.remove()
    assert direct.leftover_files(seg) == []


def test_server_core_serves_area_objects_to_remote_requests(tmp_path: Path) -> None:
    core = ServerCore("tcp://x", "n", memory_limit=5000)
    core.enable_shm(tmp_path, TOKEN)
    assert core.direct is not None
    client = direct.DirectArea(core.direct.path, TOKEN)
    try:
        assert client.put(b"small", [b"s" * 1000])
        reply = core.handle(Op.GET, b"small", None, 0)
        assert reply.status == Status.OK and bytes(reply.data) == b"s" * 1000
        assert core.handle(Op.GET_SHM, b"small", None, 0).data == b"D" + b"s" * 1000
        assert core.handle(Op.EXISTS, b"small", None, 0).status == Status.OK
        status = core.status()
        assert status["objects"] == 1 and status["bytes"] == 1000
        # the limit covers both: 4001 more bytes through the socket do not fit
        assert core.handle(Op.PUT, b"big", b"b" * 4001, 4001).status == Status.STORE_FULL
        assert core.handle(Op.PUT, b"big", b"b" * 4000, 4000).status == Status.OK
        assert not client.put(b"more", [b"m"])  # ...and direct puts see the server's bytes
        assert core.handle(Op.EVICT, b"big", None, 0).status == Status.OK
        # a socket PUT of a key replaces its file; EVICT removes either
        assert core.handle(Op.PUT, b"small", b"new", 3).status == Status.OK
        assert client.get(b"small") is None
        assert bytes(core.handle(Op.GET, b"small", None, 0).data) == b"new"
        assert client.put(b"other", [b"o"])
        assert core.handle(Op.EVICT, b"other", None, 0).status == Status.OK
        assert not client.exists(b"other") and core.direct.usage()["objects"] == 0
    finally:
        client.close()
        core.close_shm()
    assert not direct.area_path(tmp_path, os.getpid()).exists()


# -- through node servers -------------------------------------------------------------------


def _server_requests(c: Any) -> dict[str, int]:
    """Requests the server itself handled (the totals minus the direct operations)."""
    status = c.server_status()
    return {
        op: n - (status["direct"] or {}).get(op, 0)
        for op, n in status["requests"].items()
        if n - (status["direct"] or {}).get(op, 0)
    }


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("WARPSTORE_")}


def test_same_node_put_is_seen_by_another_process_without_a_message(
    runtime: Path, transport: str
) -> None:
    c = _connect(transport)
    key = c.put(b"from the parent")
    before = _server_requests(c)
    assert "PUT" not in before  # the put never reached the server
    code = (
        "import json, sys; "
        f"from warpstore.connectors.{transport} import {type(c).__name__} as C; "
        f"from warpstore.connectors.{transport} import {type(key).__name__} as K; "
        f"c = C(timeout=10); k = K(*json.loads({json.dumps(list(key))!r})); "
        "print(bytes(c.get(k)).decode(), c.exists(k)); "
        "k2 = c.put(b'from the child'); print(json.dumps(list(k2))); c.evict(k); c.close()"
    )
    out = run_python(code, _env()).splitlines()
    assert out[0] == "from the parent True"
    child_key = type(key)(*json.loads(out[1]))
    assert bytes(c.get(child_key)) == b"from the child"
    assert c.get(key) is None and not c.exists(key)  # evicted by the child
    after = _server_requests(c)
    for op in ("PUT", "GET", "EVICT"):
        assert after.get(op, 0) == before.get(op, 0), (op, before, after)
    status = c.server_status()
    assert status["direct"]["PUT"] == 2 and status["requests"]["PUT"] >= 2
    assert status["objects"] == 1 and status["bytes"] == len(b"from the child")
    c.close()


def test_remote_get_exists_and_evict_see_direct_objects(runtime: Path, transport: str) -> None:
    c = _connect(transport)
    remote = _connect(transport, shared_memory=False)  # another node's view: the socket only
    try:
        keys = [c.put(b"v%d" % i) for i in range(3)]
        assert [bytes(b) for b in remote.get_batch(keys)] == [b"v0", b"v1", b"v2"]
        assert remote.exists(keys[0])
        remote.evict(keys[0])
        assert c.get(keys[0]) is None and not c.exists(keys[0])
        assert [bytes(b) for b in c.get_batch(keys[1:])] == [b"v1", b"v2"]
        big = c.put(b"L" * (shm.INLINE_MAX + 1))  # large ones still go through segments
        assert bytes(remote.get(big)) == b"L" * (shm.INLINE_MAX + 1)
        assert _server_requests(c).get("PUT_SHM") == 1
    finally:
        remote.close()
        c.close()


def test_memory_limit_covers_direct_objects(runtime: Path, transport: str) -> None:
    c = _connect(transport, memory_limit=100_000)
    keys = [c.put(b"x" * 30_000) for _ in range(3)]
    with pytest.raises(StoreFullError, match="full"):
        c.put(b"y" * 30_000)
    with pytest.raises(StoreFullError):
        c.put(b"z" * 70_000)  # through a segment: the direct bytes count there too
    c.evict(keys[0])
    key = c.put(b"y" * 30_000)
    assert bytes(c.get(key)) == b"y" * 30_000
    status = c.server_status()
    assert status["bytes"] == 90_000 and status["errors"].get("store_full") == 2
    c.close()


def test_concurrent_threads_and_processes_keep_the_count_exact(
    runtime: Path, transport: str
) -> None:
    c = _connect(transport)
    c.put(b"start")
    code = (
        f"from warpstore.connectors.{transport} import {type(c).__name__} as C; c = C(timeout=10)\n"
        "for i in range(200):\n"
        "    k = c.put(b'p' * (i + 1)); assert bytes(c.get(k)) == b'p' * (i + 1)\n"
        "    (c.evict(k) if i % 2 else None)\n"
        "c.close()\n"
    )
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            run_python(code, _env())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    status = c.server_status()
    kept = sum(i + 1 for i in range(200) if i % 2 == 0)
    assert status["objects"] == 1 + 3 * 100 and status["bytes"] == 5 + 3 * kept
    c.close()


def test_crashed_server_area_is_cleaned_at_teardown(runtime: Path, transport: str) -> None:
    c = _connect(transport)
    key = c.put(b"small")
    info = c.local_server()
    area = c._area(key.address)
    os.kill(info["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    # kill(2) does not wait, and a killed process's files close after its pid shows dead
    while (pid_alive(info["pid"]) or area.server_alive()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not area.server_alive() and not area.exists(key.object_id.encode())
    with contextlib.suppress(ConnectorError):  # the socket: an error (ZeroMQ) or False
        assert not c.exists(key)  # the area is not used once its server is gone
    left = shm.leftover_segments(root=runtime)
    assert len(left) == 1 and left[0].name.startswith("k-")
    removed = shm.cleanup_job(root=runtime)
    assert removed == left and shm.leftover_segments(root=runtime) == []
    c.close()


def test_store_small_objects_go_direct_and_large_ones_through_segments(
    runtime: Path, transport: str
) -> None:
    import numpy as np

    from warpstore.store import Store

    c = _connect(transport)
    with Store(f"direct-{transport}", c, cache_size=0) as store:
        small, large = np.arange(10), np.arange(100_000)
        k_small, k_large = store.put(small), store.put(large)
        assert (store.get(k_small) == small).all() and (store.get(k_large) == large).all()
        assert store.get(k_small).flags.writeable  # a private copy, as before
        assert store.exists(k_small)
        store.evict(k_small)
        assert not store.exists(k_small) and store.get(k_small) is None
        requests = _server_requests(c)
        assert requests.get("PUT_SHM") == 1 and "PUT" not in requests  # only the large one
        assert c.server_status()["direct"]["EVICT"] == 1
    c.close()
