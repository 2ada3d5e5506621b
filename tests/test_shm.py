"""Same-node objects through shared memory: the segments, and node servers of each transport.

The unit half checks :mod:`warpstore.server.shm` on its own (names, owner,
mode, links, sizes, crash sweeps, the MAC on segment replies); the other
half runs real node servers (ZeroMQ and UCX, parametrized: the shared-memory
path lives in the server core and the client base, so both must behave the
same) and checks what a same-node user sees.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.procs import kill_all, processes_matching, run_python, server_infos
from warpstore.connectors.zmq import ZMQConnector
from warpstore.exceptions import ConnectorError, StoreFullError
from warpstore.server import shm
from warpstore.server.protocol import Op
from warpstore.server.runtime import pid_alive
from warpstore.store import Store

pytestmark = pytest.mark.timeout(180)


# -- segments on their own -------------------------------------------------------------


def test_created_segment_is_private_and_sized(tmp_path: Path) -> None:
    name, mapping = shm.create_segment(tmp_path, 4096)
    assert shm.NAME.match(name) and name.startswith(f"c-{os.getpid()}-")
    st = os.stat(tmp_path / name)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert st.st_size == 4096 and mapping is not None and len(mapping) == 4096


@pytest.mark.parametrize(
    "name", ["../x", "c-1-" + "0" * 31, "s-1-" + "g" * 32, "c-1-" + "0" * 32 + "/", "", "x" * 5000]
)
def test_bad_segment_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(shm.SegmentError):
        shm.open_segment(tmp_path, name, 1)


def _segments(directory: Any) -> list[str]:
    """The segment files in ``directory`` (not its pool of recycled ones)."""
    return [n for n in os.listdir(directory) if shm.NAME.match(n)]


def _segment(directory: Path, nbytes: int = 16) -> str:
    name, _ = shm.create_segment(directory, nbytes)
    return name


def test_open_refuses_links_wrong_mode_size_and_non_files(tmp_path: Path) -> None:
    target = _segment(tmp_path)
    link = f"c-{os.getpid()}-{secrets.token_hex(16)}"
    os.symlink(tmp_path / target, tmp_path / link)
    with pytest.raises(shm.SegmentError, match="cannot open"):  # O_NOFOLLOW
        shm.open_segment(tmp_path, link, 16)
    with pytest.raises(shm.SegmentError, match="holds 16 bytes"):
        shm.open_segment(tmp_path, target, 17)
    os.chmod(tmp_path / target, 0o644)
    with pytest.raises(shm.SegmentError, match="mode 644"):
        shm.open_segment(tmp_path, target, 16)
    fifo = f"c-{os.getpid()}-{secrets.token_hex(16)}"
    os.mkdir(tmp_path / fifo, 0o700)
    with pytest.raises(shm.SegmentError):
        shm.open_segment(tmp_path, fifo, 16)


def test_read_only_mapping_cannot_be_written(tmp_path: Path) -> None:
    name, mapping = shm.create_segment(tmp_path, 8)
    assert mapping is not None
    mapping[:] = b"abcdefgh"
    view = shm.open_segment(tmp_path, name, 8)
    assert view is not None and bytes(view) == b"abcdefgh"
    with pytest.raises(TypeError):
        memoryview(view)[0] = 0


def test_adopt_renames_to_the_server_and_refuses_its_own_names(tmp_path: Path) -> None:
    name = _segment(tmp_path)
    new, mapping = shm.adopt_segment(tmp_path, name, 16)
    assert new.startswith(f"s-{os.getpid()}-") and not (tmp_path / name).exists()
    assert (tmp_path / new).exists() and mapping is not None
    with pytest.raises(shm.SegmentError):
        shm.adopt_segment(tmp_path, new, 16)  # a writer never names a server segment


def test_full_file_system_is_store_full_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(StoreFullError, match="no room for a 1048576-byte segment"):
        shm.create_segment(tmp_path, 1 << 20)
    assert os.listdir(tmp_path) == []


def test_sweep_removes_only_dead_processes_segments(tmp_path: Path) -> None:
    live = _segment(tmp_path)
    dead = f"s-999999-{secrets.token_hex(16)}"
    (tmp_path / dead).touch(mode=0o600)
    (tmp_path / "unrelated").touch()
    assert shm.sweep(tmp_path, alive=lambda pid: pid == os.getpid()) == [dead]
    assert sorted(os.listdir(tmp_path)) == sorted([live, "unrelated"])


def test_unmapped_segment_is_recycled_and_reused_by_the_next_writer(tmp_path: Path) -> None:
    shm.pool_directory(tmp_path)
    name = shm.write_segment(tmp_path, [b"a" * 8192])
    pooled = shm.recycle_segment(tmp_path, name)
    assert pooled is not None and _segments(tmp_path) == []
    assert _segments(tmp_path / shm.POOL) == [pooled]
    # the next writer overwrites the pooled pages: cut to its own size, its own bytes
    again = shm.write_segment(tmp_path, [b"b" * 4000, b"c" * 96])
    assert _segments(tmp_path / shm.POOL) == [] and _segments(tmp_path) == [again]
    assert (tmp_path / again).read_bytes() == b"b" * 4000 + b"c" * 96
    st = os.stat(tmp_path / again)
    assert stat.S_IMODE(st.st_mode) == 0o600 and again.startswith(f"c-{os.getpid()}-")


def test_a_mapped_segment_is_never_recycled(tmp_path: Path) -> None:
    shm.pool_directory(tmp_path)
    name = shm.write_segment(tmp_path, [b"v" * 8192])
    view = shm.open_segment(tmp_path, name, 8192)  # a reader's view holds a shared lock
    assert shm.recycle_segment(tmp_path, name) is None  # so it is unlinked instead
    assert _segments(tmp_path) == [] and _segments(tmp_path / shm.POOL) == []
    shm.write_segment(tmp_path, [b"w" * 8192])  # a new writer gets new pages
    assert view is not None and bytes(view) == b"v" * 8192
    view.close()


def test_a_reserved_segment_is_filled_in_place_or_left_nowhere(tmp_path: Path) -> None:
    """A node fetching a copy allocates its segment while the data travels: the fill
    writes into those pages; a reservation of another size, or an unused one, is gone."""
    from warpstore.connectors._nodeserver import _Reservation

    data = os.urandom(200_000)
    reserving = _Reservation(tmp_path, len(data))
    reserved = reserving.take(len(data))
    assert reserved is not None and _segments(tmp_path) == [reserved[0]]
    name = shm.write_segment(tmp_path, [data], reserved)
    assert name == reserved[0]
    st = os.stat(tmp_path / name)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == len(data)
    assert (tmp_path / name).read_bytes() == data
    shm.remove_segment(tmp_path, name)
    assert _Reservation(tmp_path, 300_000).take(len(data)) is None  # another size arrived
    _Reservation(tmp_path, 300_000).discard()  # the fetch failed
    assert _segments(tmp_path) == []


def test_a_reader_never_opens_a_segment_being_recycled(tmp_path: Path) -> None:
    import fcntl

    shm.pool_directory(tmp_path)
    name = shm.write_segment(tmp_path, [b"r" * 4096])
    fd = os.open(tmp_path / name, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the recycler's lock
    try:
        with pytest.raises(shm.SegmentError, match="being recycled"):
            shm.open_segment(tmp_path, name, 4096)
    finally:
        os.close(fd)
    pooled = shm.recycle_segment(tmp_path, name)  # renamed: the old name leads nowhere
    assert pooled is not None
    with pytest.raises(shm.SegmentError, match="cannot open"):
        shm.open_segment(tmp_path, name, 4096)


def test_sweep_and_cleanup_cover_the_pool(tmp_path: Path) -> None:
    shm.pool_directory(tmp_path)
    dead = f"p-999999-{secrets.token_hex(16)}"
    (tmp_path / shm.POOL / dead).touch(mode=0o600)
    assert shm.sweep(tmp_path, alive=lambda pid: pid == os.getpid()) == [f"pool/{dead}"]
    assert os.listdir(tmp_path / shm.POOL) == []


def test_segment_reply_is_authenticated_and_bound_to_its_key() -> None:
    token = secrets.token_bytes(32)
    name = f"s-12-{secrets.token_hex(16)}"
    reply = shm.pack_segment_reply(token, b"key", name, 123)
    assert shm.unpack_segment_reply(token, b"key", reply) == (name, 123)
    for bad_token, key, data in [
        (secrets.token_bytes(32), b"key", reply),  # wrong token
        (token, b"other", reply),  # replayed for another key
        (token, b"key", reply.replace(b"123", b"124")),  # size changed
        (token, b"key", b"short"),
    ]:
        with pytest.raises(shm.SegmentError):
            shm.unpack_segment_reply(bad_token, key, data)


# -- through node servers ----------------------------------------------------------------


def _connector_class(transport: str) -> Any:
    if transport == "ucx":
        pytest.importorskip("ucxx")
        from warpstore.connectors.ucx import UCXConnector

        return UCXConnector
    return ZMQConnector


@pytest.fixture(params=["zmq", "ucx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str) -> Iterator[Path]:
    """A private runtime root and job; servers stopped and the job's segments checked after."""
    root = tmp_path / "rt"
    root.mkdir()
    job = f"shm-{secrets.token_hex(4)}"
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", str(root))
    monkeypatch.setenv("WARPSTORE_JOB_ID", job)
    monkeypatch.setenv("WARPSTORE_HOSTNAME", "node-a")
    monkeypatch.setenv("WARPSTORE_ADDRESS", "127.0.0.1")
    for var in ("WARPSTORE_TOKEN", "WARPSTORE_TOKEN_FILE", "WARPSTORE_INTERFACE", "WARPSTORE_SHM"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield root
    finally:
        cls = _connector_class(transport)
        for info in server_infos(root):
            c = cls(token_file=info["token_file"], timeout=5, spawn=False)
            try:
                c._client.request(info["address"], Op.SHUTDOWN)
            except Exception:
                os.kill(info["pid"], signal.SIGTERM)
            finally:
                c.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and pid_alive(info["pid"]):
                time.sleep(0.02)
        leftovers = kill_all(str(root))
        assert not processes_matching(str(root))
        left = shm.leftover_segments(job, root)
        shutil.rmtree(Path("/dev/shm") / f"warpstore-{os.getuid()}" / job, ignore_errors=True)
        assert not leftovers, f"test left server processes running: {leftovers}"
        assert not left, f"a stopped server left segments behind: {left}"


def _connect(transport: str, **kwargs: Any) -> Any:
    return _connector_class(transport)(timeout=10, **kwargs)


def test_same_node_put_and_get_use_segments(runtime: Path, transport: str) -> None:
    c = _connect(transport)
    with Store(f"shm-{transport}", c, cache_size=0) as store:
        arr = np.arange(100_000, dtype=np.float64)
        key = store.put(arr)
        shm_dir = Path(c.local_server()["shm_dir"])
        assert len(_segments(shm_dir)) == 1  # the object lives in shared memory
        status = c.server_status()
        assert status["requests"].get("PUT_SHM") == 1 and "PUT" not in status["requests"]
        assert status["bytes_in"] > arr.nbytes

        view = store.get(key)
        np.testing.assert_array_equal(view, arr)
        assert not view.flags.writeable  # a view of the shared segment, not a copy
        with pytest.raises(ValueError):
            view[0] = 1.0
        status = c.server_status()
        assert status["bytes_shared"] > arr.nbytes and status["bytes_out"] == 0

        data = os.urandom(100_000)
        got = store.get(store.put(data))
        assert isinstance(got, memoryview) and got.readonly and got == data
        small = store.get(store.put(b"small"))  # under 64 KiB: inline through the socket
        assert type(small) is bytes and small == b"small"
        assert store.get(store.put("text")) == "text"
        assert store.get(store.put({"nested": [1, 2]})) == {"nested": [1, 2]}
    c.close()


def test_private_copies_when_asked(runtime: Path, transport: str) -> None:
    writer = _connect(transport)
    reader = _connect(transport, copy=True)
    arr = np.arange(1000, dtype=np.int32)
    with (
        Store(f"w-{transport}", writer, cache_size=0) as ws,
        Store(f"r-{transport}", reader, cache_size=0) as rs,
    ):
        key = ws.put(arr)
        copy = rs.get(key)
        assert copy.flags.writeable
        copy[0] = -1  # changes only the private copy
        np.testing.assert_array_equal(ws.get(key), arr)
        got = rs.get(ws.put(b"b" * 100_000))
        assert type(got) is bytes and got == b"b" * 100_000
        assert rs.get(ws.put("t" * 100_000)) == "t" * 100_000
        big = np.arange(100_000, dtype=np.int64)  # through a segment, not inline
        big_key = ws.put(big)
        copy = rs.get(big_key)
        assert copy.flags.writeable
        copy[:] = 0  # the reader's own memory, not the segment it keeps mapped
        np.testing.assert_array_equal(rs.get(big_key), big)
        np.testing.assert_array_equal(ws.get(big_key), big)
    writer.close()
    reader.close()


def test_evicting_a_mapped_object_leaves_readers_intact(runtime: Path, transport: str) -> None:
    c = _connect(transport)
    with Store(f"ev-{transport}", c, cache_size=0) as store:
        arr = np.full(1 << 18, 7, dtype=np.uint8)
        key = store.put(arr)
        view = store.get(key)
        store.evict(key)
        shm_dir = Path(c.local_server()["shm_dir"])
        assert _segments(shm_dir) == []  # gone at once...
        assert _segments(shm_dir / shm.POOL) == []  # ...and not recycled: a reader maps it
        assert store.get(key) is None
        assert int(view.sum()) == 7 * (1 << 18)  # the reader's mapping is still whole
        assert c.server_status()["bytes"] == 0
    c.close()


def test_evicted_segments_are_recycled_for_the_next_put(runtime: Path, transport: str) -> None:
    writer = _connect(transport)
    reader = _connect(transport, copy=True)
    with (
        Store(f"rc-{transport}", writer, cache_size=0) as store,
        Store(f"rcr-{transport}", reader, cache_size=0) as copies,
    ):
        first = np.full(1 << 18, 1, dtype=np.uint8)
        key = store.put(first)
        shm_dir = Path(writer.local_server()["shm_dir"])
        store.evict(key)  # nobody maps it: into the pool, not unlinked
        assert len(_segments(shm_dir / shm.POOL)) == 1
        assert writer.server_status()["shm_pool"] == {"segments": 1, "recycled": 1}
        second = np.arange(1 << 18, dtype=np.uint8)
        key2 = store.put(second)  # overwrites the pooled pages
        assert _segments(shm_dir / shm.POOL) == [] and len(_segments(shm_dir)) == 1
        np.testing.assert_array_equal(store.get(key2), second)
        copy = copies.get(key2)  # a private copy; its reader keeps the segment mapped
        np.testing.assert_array_equal(copy, second)
        np.testing.assert_array_equal(copies.get(key2), second)  # again, from the kept mapping
        store.evict(key2)
        assert _segments(shm_dir / shm.POOL) == []  # a reader still maps it: unlinked
        key3 = store.put(first)
        np.testing.assert_array_equal(copies.get(key3), first)  # lets go of key2's mapping
        assert copies.get(key2) is None and len(reader._mapped) == 1
        np.testing.assert_array_equal(copy, second)  # copies are the reader's own
    writer.close()
    reader.close()


def test_the_pool_stays_within_the_memory_limit(runtime: Path, transport: str) -> None:
    c = _connect(transport, memory_limit=1 << 20)
    with Store(f"pl-{transport}", c, cache_size=0) as store:
        kept = store.put(b"k" * 500_000)
        a, b = store.put(b"a" * 250_000), store.put(b"b" * 250_000)
        store.evict(a)
        store.evict(b)  # 500 KB held + 500 KB pooled: within the limit
        shm_dir = Path(c.local_server()["shm_dir"])
        assert len(_segments(shm_dir / shm.POOL)) == 2
        # 500 KB more claims one pooled segment; held + the other pooled + new would
        # pass the limit: the pool gives way, never an object, and the put succeeds
        new = store.put(b"n" * 500_000)
        assert _segments(shm_dir / shm.POOL) == []
        assert bytes(store.get(kept)) == b"k" * 500_000
        assert bytes(store.get(new)) == b"n" * 500_000
        assert c.server_status()["shm_pool"] == {"segments": 0, "recycled": 2}
    c.close()


def test_memory_limit_covers_shared_memory(runtime: Path, transport: str) -> None:
    c = _connect(transport, memory_limit=1 << 20)
    with Store(f"full-{transport}", c, cache_size=0) as store:
        kept = store.put(b"k" * 600_000)
        with pytest.raises(StoreFullError, match="full"):
            store.put(b"x" * 600_000)
        shm_dir = Path(c.local_server()["shm_dir"])
        assert len(_segments(shm_dir)) == 1  # the refused writer removed its segment
        assert bytes(store.get(kept)) == b"k" * 600_000
    c.close()


def test_other_nodes_and_socket_puts_still_work(runtime: Path, transport: str) -> None:
    local = _connect(transport)
    # a connector with shared memory off behaves exactly as a client on another node
    remote = _connect(transport, shared_memory=False)
    arr = np.arange(50_000, dtype=np.float32)
    with (
        Store(f"l-{transport}", local, cache_size=0) as ls,
        Store(f"rm-{transport}", remote, cache_size=0) as rs,
    ):
        key = ls.put(arr)  # into a segment
        far = rs.get(key)  # sent from the mapping over the transport
        np.testing.assert_array_equal(far, arr)
        key2 = rs.put(arr * 2)  # over the socket
        assert c_requests(local, "PUT") == 1
        near = ls.get(key2)  # moved into a segment on the first same-node get
        np.testing.assert_array_equal(near, arr * 2)
        assert len(_segments(local.local_server()["shm_dir"])) == 2
        assert [bytes(b) for b in local.get_batch([key, key2])] == [
            bytes(ls.connector.get(key)),
            bytes(ls.connector.get(key2)),
        ]
    local.close()
    remote.close()


def c_requests(c: Any, op: str) -> int:
    return int(c.server_status()["requests"].get(op, 0))


def test_forged_segment_registrations_are_refused(runtime: Path, transport: str) -> None:
    c = _connect(transport)
    c.put(b"start the server")
    address = c.local_server()["address"]
    shm_dir = Path(c.local_server()["shm_dir"])
    theirs = _segment(shm_dir)
    os.chmod(shm_dir / theirs, 0o644)
    try:
        for blob, why in [
            (b"k\0../../../etc/passwd\0" + b"10", "refusing segment name"),
            (b"k\0" + theirs.encode() + b"\x00" + b"16", "mode 644"),
            (
                b"k\0" + f"s-{os.getpid()}-{secrets.token_hex(16)}".encode() + b"\x00" + b"0",
                "refusing",
            ),
            (b"no separators", "malformed"),
        ]:
            with pytest.raises(ConnectorError, match=why):
                c._client.request(address, Op.PUT_SHM, blob)
        assert c.server_status()["objects"] == 1  # and it still serves
        assert c.server_status()["errors"]["bad_request"] == 4
    finally:
        (shm_dir / theirs).unlink()
    c.close()


def test_crashed_server_segments_are_cleaned_at_teardown(runtime: Path, transport: str) -> None:
    c = _connect(transport)
    with Store(f"crash-{transport}", c, cache_size=0) as store:
        store.put(b"a" * 100_000)
        store.put(np.zeros(10_000))
    info = c.local_server()
    os.kill(info["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = shm.leftover_segments(root=runtime)
    assert len(left) == 2  # what a crash leaves...
    removed = shm.cleanup_job(root=runtime)  # ...the launcher's teardown removes
    assert sorted(removed) == left and shm.leftover_segments(root=runtime) == []
    # and with them the job's directories under /dev/shm (empty once swept)
    assert not (
        Path("/dev/shm") / f"warpstore-{os.getuid()}" / os.environ["WARPSTORE_JOB_ID"]
    ).exists()
    c.close()


def test_a_stopping_server_leaves_other_servers_directories_alone(
    runtime: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _connect(transport)
    a.put(b"a" * 100_000)
    monkeypatch.setenv("WARPSTORE_HOSTNAME", "node-b")  # a second server of the job here
    b = _connect(transport)
    b_dir = Path(b.local_server()["shm_dir"])  # empty: nothing put yet
    a.stop_server()  # checks this node's segments as it stops...
    deadline = time.monotonic() + 10
    while not list(runtime.glob("*/nodes/node-a/*/report.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (report,) = runtime.glob("*/nodes/node-a/*/report.json")
    import json

    assert json.loads(report.read_text())["segments"] == {"removed": [], "left": []}
    assert b_dir.is_dir() and (b_dir / shm.POOL).is_dir()  # ...but not the others' dirs
    with Store(f"b-{transport}", b, cache_size=0) as store:
        np.testing.assert_array_equal(store.get(store.put(np.ones(50_000))), np.ones(50_000))
    a.close()
    b.close()


def test_launcher_teardown_checks_its_node_and_reports_per_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warpstore.hpc.launcher import _collect_report, _summary, _sweep_this_node
    from warpstore.server.runtime import write_json_atomic

    job = f"td-{secrets.token_hex(4)}"
    monkeypatch.setenv("WARPSTORE_HOSTNAME", "node-a")
    monkeypatch.delenv("WARPSTORE_SHM_DIR", raising=False)
    root = tmp_path / "rt"
    seg_dir = shm.ensure_private_dir(
        Path("/dev/shm") / f"warpstore-{os.getuid()}" / job / "node-a-zmq"
    )
    killed = f"s-999999-{secrets.token_hex(16)}"  # a SIGKILLed server's segment
    held = _segment(seg_dir)  # this (live) process still holds one
    (seg_dir / killed).touch(mode=0o600)
    # node-b's server checked its node when it stopped (what RunningServer.finish writes)
    report_b = root / job / "nodes" / "node-b" / "zmq"
    report_b.mkdir(parents=True)
    write_json_atomic(
        report_b / "report.json",
        {
            "node": "node-b",
            "address": "b",
            "final": {},
            "segments": {"removed": ["x", "y"], "left": []},
        },
    )
    try:
        here = _sweep_this_node({"job_id": job}, root)
        assert here["node"] == "node-a" and [Path(p).name for p in here["removed"]] == [killed]
        assert [Path(p).name for p in here["left"]] == [held]
        report = _collect_report(tmp_path, root, {"job_id": job, "servers": []}, 0, {}, here)
        assert report["segments"] == {
            "node-a": {"removed": 1, "left": 1},
            "node-b": {"removed": 2, "left": 0},
        }
        text = _summary(report, tmp_path)
        assert "removed leftover shared-memory segments: node-a 1, node-b 2" in text
        assert "found still held shared-memory segments: node-a 1" in text
    finally:
        shutil.rmtree(seg_dir.parent, ignore_errors=True)


def test_empty_job_dirs_of_killed_servers_are_removed_but_never_segments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = f"ed-{secrets.token_hex(4)}"
    base = Path("/dev/shm") / f"warpstore-{os.getuid()}" / job
    empty = shm.ensure_private_dir(base / "node-a-zmq")
    shm.ensure_private_dir(empty / shm.POOL)
    full = shm.ensure_private_dir(base / "node-b-zmq")
    name = _segment(full)
    try:
        removed = shm.remove_empty_job_dirs(job)
        assert empty in removed and empty / shm.POOL in removed
        assert not empty.exists() and (full / name).exists()
        (full / name).unlink()
        shm.remove_empty_job_dirs(job)
        assert not base.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- node-local cache of other nodes' objects ---------------------------------------------


def test_cache_makes_room_by_dropping_remote_copies_first(tmp_path: Path) -> None:
    from warpstore.server.core import ServerCore

    core = ServerCore("addr", "node-a", memory_limit=300_000)
    core.enable_shm(tmp_path, secrets.token_bytes(32))
    copy, _ = shm.create_segment(tmp_path, 200_000)
    blob = b"\x00".join([b"cache-1", copy.encode(), b"200000", b"cache"])
    assert core.handle(Op.PUT_SHM, blob, None, 0).status == 0
    assert core.status()["cache"]["fetched_bytes"] == 200_000
    reply = core.handle(Op.PUT, b"own", b"x" * 150_000, 150_000)  # fits only without the copy
    assert reply.status == 0 and b"cache-1" not in core.table.entries
    assert core.status()["cache"]["dropped"] == 1 and _segments(tmp_path) == []
    assert _segments(tmp_path / shm.POOL) == []  # dropped to make room: not pooled
    reply = core.handle(Op.PUT, b"own2", b"x" * 200_000, 200_000)  # own objects never dropped
    assert reply.status != 0 and b"own" in core.table.entries
    core.close_shm()


def test_pooled_segments_expire_and_go_at_shutdown(tmp_path: Path) -> None:
    from warpstore.server.core import ServerCore

    directory = shm.ensure_private_dir(tmp_path / "seg")
    core = ServerCore("addr", "node-a")
    core.enable_shm(directory, secrets.token_bytes(32))

    def put(key: bytes) -> None:
        name = shm.write_segment(directory, [b"x" * 100_000])
        blob = b"\x00".join([key, name.encode(), b"100000"])
        assert core.handle(Op.PUT_SHM, blob, None, 0).status == 0

    put(b"k1")
    put(b"k2")
    core.handle(Op.EVICT, b"k1", None, 0)
    core.handle(Op.EVICT, b"k2", None, 0)
    assert len(_segments(directory / shm.POOL)) == 2
    assert core.status()["shm_pool"] == {"segments": 2, "recycled": 2}
    core.pool_ttl = 0.0  # any request lets expired segments go
    time.sleep(0.01)
    core.handle(Op.STATUS, b"", None, 0)
    assert _segments(directory / shm.POOL) == [] and core.pool == {}
    core.pool_ttl = 30.0
    put(b"k3")
    core.handle(Op.EVICT, b"k3", None, 0)
    assert len(_segments(directory / shm.POOL)) == 1
    core.close_shm()  # at shutdown: the pool goes with the segments
    assert not directory.exists()


READER = """
import json, os
from warpstore.connectors.{module} import {cls}, {keycls}
from warpstore.store import Store
c = {cls}(timeout=10)
c.local_server()  # this "node"'s server, as the launcher starts one per node
key = {key!r}
out = {{}}
with Store("reader", c, cache_size=0) as store:
    value = store.get(key)
    out["value"] = None if value is None else float(value.sum())
out["status"] = c.server_status()
print(json.dumps(out))
"""


def test_remote_object_is_fetched_once_per_node_and_evict_invalidates(
    runtime: Path, transport: str
) -> None:
    import json

    owner = _connect(transport)
    arr = np.arange(300_000, dtype=np.float64)
    with Store(f"own-{transport}", owner, cache_size=0) as store:
        key = store.put(arr)
        names = (
            ("ucx", "UCXConnector", "UCXKey")
            if transport == "ucx"
            else ("zmq", "ZMQConnector", "ZMQKey")
        )
        module, cls, keycls = names
        code = READER.format(module=module, cls=cls, keycls=keycls, key=key)
        node_b = {"WARPSTORE_HOSTNAME": "node-b"}
        results = [json.loads(run_python(code, node_b)) for _ in range(3)]  # 3 ranks of node b
        assert [r["value"] for r in results] == [float(arr.sum())] * 3
        cache = results[-1]["status"]["cache"]
        assert cache["fetched"] == 1 and cache["fetched_bytes"] > arr.nbytes
        assert cache["served"] == 2  # the other two ranks mapped node b's copy
        assert c_requests(owner, "GET") == 1  # the owner sent it to node b once

        store.evict(key)
        after = json.loads(run_python(code, node_b))
        assert after["value"] is None  # never served from a stale copy
        assert after["status"]["objects"] == 0
    owner.close()


def test_ranks_missing_at_once_share_one_fetch(runtime: Path, transport: str) -> None:
    import json
    import subprocess
    import sys

    owner = _connect(transport)
    arr = np.arange(400_000, dtype=np.float64)
    with Store(f"once-{transport}", owner, cache_size=0) as store:
        key = store.put(arr)
        ucx = ("ucx", "UCXConnector", "UCXKey")
        module, cls, keycls = ucx if transport == "ucx" else ("zmq", "ZMQConnector", "ZMQKey")
        code = READER.format(module=module, cls=cls, keycls=keycls, key=key)
        env = {**os.environ, "WARPSTORE_HOSTNAME": "node-c"}
        # node c's server first, so that the four ranks below find it and start together
        start = f"from warpstore.connectors.{module} import {cls}\n{cls}(timeout=10).local_server()"
        run_python(start, {"WARPSTORE_HOSTNAME": "node-c"})
        argv = [sys.executable, "-c", code]
        procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in "abcd"]
        outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
        assert [o["value"] for o in outs] == [float(arr.sum())] * 4
        assert c_requests(owner, "GET") == 1  # one fetch for the node, however they met
        cache = max((o["status"]["cache"] for o in outs), key=lambda c: c["served"])
        assert cache["fetched"] == 1 and cache["served"] == 3
    owner.close()


BATCH_READER = """
import json
from warpstore.connectors.{module} import {cls}, {keycls}
c = {cls}(timeout=10)
c.local_server()
values = c.get_batch([{big!r}, {small!r}, {big!r}])
print(json.dumps({{"sizes": [None if v is None else len(memoryview(v).cast("B")) for v in values],
                  "cache": c.server_status()["cache"]}}))
"""


def test_get_batch_uses_the_node_cache_like_get(runtime: Path, transport: str) -> None:
    import json

    owner = _connect(transport)
    big, small = owner.put(b"B" * 300_000), owner.put(b"s" * 100)
    ucx = ("ucx", "UCXConnector", "UCXKey")
    module, cls, keycls = ucx if transport == "ucx" else ("zmq", "ZMQConnector", "ZMQKey")
    code = BATCH_READER.format(module=module, cls=cls, keycls=keycls, big=big, small=small)
    node_b = {"WARPSTORE_HOSTNAME": "node-b"}
    first, second = (json.loads(run_python(code, node_b)) for _ in range(2))
    assert first["sizes"] == second["sizes"] == [300_000, 100, 300_000]
    assert second["cache"]["fetched"] == 1  # one rank of node b fetched the big one...
    assert second["cache"]["served"] >= 3  # ...everything else came from node b's copy
    # the owner sent the big object once; the small one (not cached) once per rank
    assert c_requests(owner, "GET") == 3
    owner.evict(big)
    after = json.loads(run_python(code, node_b))
    assert after["sizes"] == [None, 100, None]  # never a stale copy
    owner.close()


def _reader_code(transport: str, key: Any) -> str:
    ucx = ("ucx", "UCXConnector", "UCXKey")
    module, cls, keycls = ucx if transport == "ucx" else ("zmq", "ZMQConnector", "ZMQKey")
    return READER.format(module=module, cls=cls, keycls=keycls, key=key)


def test_nodes_relay_copies_so_the_owner_sends_fewer_than_one_per_node(
    runtime: Path, transport: str
) -> None:
    """4 nodes read one object one after another: the owner sends it once, the others
    get it from nodes that hold a copy (each holder sends it to at most 2 nodes), with
    the producer's data tag checked at each reader; evict at the owner ends it all."""
    import json

    from warpstore.server.core import RELAY_FANOUT

    owner = _connect(transport)
    arr = np.arange(250_000, dtype=np.float64)
    with Store(f"relay-{transport}", owner, cache_size=0) as store:
        key = store.put(arr)
        code = _reader_code(transport, key)
        nodes = [f"node-r{i}" for i in range(4)]
        outs = [json.loads(run_python(code, {"WARPSTORE_HOSTNAME": n})) for n in nodes]
        assert [o["value"] for o in outs] == [float(arr.sum())] * 4
        assert c_requests(owner, "GET") == 1 < len(nodes)  # the first node's fetch only
        assert c_requests(owner, "LOCATE") == len(nodes)
        relayed = [o["status"]["cache"]["relayed"] for o in outs]  # as each reader left it
        finals = [owner.server_status(o["status"]["address"])["cache"] for o in outs]
        assert sum(f["relayed"] for f in finals) == len(nodes) - 1
        assert max(f["relayed"] for f in finals) <= RELAY_FANOUT
        assert all(f["fetched"] == 1 for f in finals)  # every node holds its own copy
        assert relayed[0] == 0  # nobody had it before the first node

        store.evict(key)  # at the owner: no node serves it, no node is pointed anywhere
        again = [json.loads(run_python(code, {"WARPSTORE_HOSTNAME": n})) for n in nodes[1:3]]
        fresh = json.loads(run_python(code, {"WARPSTORE_HOSTNAME": "node-r9"}))
        assert [o["value"] for o in (*again, fresh)] == [None] * 3
        assert c_requests(owner, "GET") == 1
    owner.close()


def test_nodes_reading_at_once_wait_for_holders_instead_of_the_owner(
    runtime: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fan-out 1: the owner sends to 2 nodes at once; 4 nodes that all miss at once cannot
    all be served by it (in any order, one of them gets a holder's copy)."""
    import json
    import subprocess
    import sys

    monkeypatch.setenv("WARPSTORE_RELAY_FANOUT", "1")  # the owner's server, started below
    owner = _connect(transport)
    arr = np.arange(300_000, dtype=np.float64)
    with Store(f"wait-{transport}", owner, cache_size=0) as store:
        key = store.put(arr)
        monkeypatch.delenv("WARPSTORE_RELAY_FANOUT")
        code = _reader_code(transport, key)
        module, cls = ("ucx", "UCXConnector") if transport == "ucx" else ("zmq", "ZMQConnector")
        start = f"from warpstore.connectors.{module} import {cls}\n{cls}(timeout=10).local_server()"
        nodes = [f"node-w{i}" for i in range(4)]
        for node in nodes:  # each node's server first, so that the readers start together
            run_python(start, {"WARPSTORE_HOSTNAME": node})
        argv = [sys.executable, "-c", code]
        procs = [
            subprocess.Popen(
                argv, env={**os.environ, "WARPSTORE_HOSTNAME": n}, stdout=subprocess.PIPE, text=True
            )
            for n in nodes
        ]
        outs = [json.loads(p.communicate(timeout=120)[0].splitlines()[-1]) for p in procs]
        assert [o["value"] for o in outs] == [float(arr.sum())] * 4
        gets = c_requests(owner, "GET")
        finals = [owner.server_status(o["status"]["address"])["cache"] for o in outs]
        assert gets < len(nodes) and sum(f["relayed"] for f in finals) == len(nodes) - gets
        assert all(f["relayed"] <= 1 for f in finals)
    owner.close()


def test_a_dead_holder_sends_the_reader_back_to_the_owner(runtime: Path, transport: str) -> None:
    import json

    owner = _connect(transport)
    arr = np.arange(200_000, dtype=np.float64)
    with Store(f"dead-{transport}", owner, cache_size=0) as store:
        key = store.put(arr)
        code = _reader_code(transport, key)
        first = json.loads(run_python(code, {"WARPSTORE_HOSTNAME": "node-h"}))
        holder = first["status"]["address"]
        owner.stop_server(holder)  # node h's server (and its copy) is gone
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(first["status"]["pid"]):
            time.sleep(0.02)
        out = run_python(code, {"WARPSTORE_HOSTNAME": "node-i"})
        second = json.loads(out.splitlines()[-1])  # UCX logs the dead peer to stdout first
        assert second["value"] == float(arr.sum())  # pointed at node h, then the owner
        assert c_requests(owner, "LOCATE") == 2 and c_requests(owner, "GET") == 2
    owner.close()


def test_relay_messages_are_checked_and_never_crash_the_core(tmp_path: Path) -> None:
    """LOCATE/HAVE/RELAY from the network: malformed keys are refused, a HAVE with
    another tag (an old value) is not registered, the fan-out is bounded, and an
    evict or a new value forgets every holder."""
    from warpstore.server.core import OWNER_SENDS_PER_FANOUT, RELAY_FANOUT, ServerCore
    from warpstore.server.protocol import NO_DATA_TAG, Status

    core = ServerCore("owner", "node-a")
    core.enable_shm(shm.ensure_private_dir(tmp_path / "seg"), secrets.token_bytes(32))
    assert core.handle(Op.PUT, b"obj", b"x" * 100_000, 100_000).status == Status.OK
    for bad in (b"", b"obj", b"obj\0", b"\0node", b"obj\0a\0b", b"\xff\0\xff"):
        assert core.handle(Op.LOCATE, bad, None, 0).status == Status.BAD_REQUEST
    for bad in (b"", b"obj\0n1", b"obj\0n1\0zz", b"obj\0n1\0" + b"00" * 27):
        assert core.handle(Op.HAVE, bad, None, 0).status == Status.BAD_REQUEST
    assert core.handle(Op.RELAY, b"nothing", None, 0).status == Status.NOT_FOUND
    assert core.handle(Op.LOCATE, b"gone\0n1", None, 0).status == Status.NOT_FOUND
    core.handle(Op.PUT, b"tiny", b"t" * 100, 100)  # never cached: sent in the LOCATE reply
    gets = core.requests["GET"]
    tiny = core.handle(Op.LOCATE, b"tiny\0n1", None, 0)
    assert bytes(tiny.data) == b"D" + b"t" * 100 and core.requests["GET"] == gets + 1

    def locate(node: str) -> bytes:
        reply = core.handle(Op.LOCATE, b"obj\0" + node.encode(), None, 0)
        assert reply.status == Status.OK
        return bytes(reply.data)

    first = locate("n1")
    assert first[:1] == b"O"  # from the owner, with the object's (now fixed) data tag
    tag_hex = first[1:29].hex().encode()
    assert first[1:29] != b"".join(NO_DATA_TAG)
    at_once = OWNER_SENDS_PER_FANOUT * RELAY_FANOUT
    assert all(locate(f"n{i}")[:1] == b"O" for i in range(2, at_once + 1))
    assert locate("w1") == b"W"  # the owner is sending to as many as it sends at once
    stale = b"obj\0n1\0" + b"00" * 28
    assert core.handle(Op.HAVE, stale, None, 0).status == Status.NOT_FOUND
    assert locate("w1") == b"W"
    assert core.handle(Op.HAVE, b"obj\0n1\0" + tag_hex, None, 0).status == Status.OK
    pointed = [locate(f"w{i}") for i in range(1, RELAY_FANOUT + 1)]
    assert all(r[:1] == b"H" and r[37:] == b"n1" for r in pointed)
    assert all(int.from_bytes(r[29:37], "little") == 100_000 for r in pointed)
    assert core.status()["cache"]["relay_pointed"] == RELAY_FANOUT
    # n1 sent its share; it is no longer fetching, so the owner has a slot again
    assert locate("w9")[:1] == b"O"
    assert locate("w10") == b"W"
    core.handle(Op.HAVE, b"obj\0n2\0" + tag_hex, None, 0)
    assert bytes(locate("w10"))[37:] == b"n2"  # a holder with room, before the owner
    core.handle(Op.PUT, b"obj", b"y" * 100_000, 100_000)  # a new value: holders forgotten
    assert core.handle(Op.HAVE, b"obj\0n1\0" + tag_hex, None, 0).status == Status.NOT_FOUND
    assert locate("n1")[:1] == b"O"
    core.handle(Op.EVICT, b"obj", None, 0)
    assert core.relays == {}
    # holder side: a copy registered for relaying is sent with its tag, until dropped
    copy = shm.write_segment(core.shm_dir, [b"c" * 100_000])
    fill = [b"cache-x", copy.encode(), b"100000", b"cache", b"obj", tag_hex]
    assert core.handle(Op.PUT_SHM, b"\0".join(fill), None, 0).status == Status.OK
    relayed = core.handle(Op.RELAY, b"obj", None, 0)
    assert relayed.status == Status.OK and relayed.tag == (first[1:13], first[13:29])
    bad_fill = [b"cache-y", copy.encode(), b"100000", b"cache", b"obj", b"zz"]
    assert core.handle(Op.PUT_SHM, b"\0".join(bad_fill), None, 0).status == Status.BAD_REQUEST
    core.handle(Op.EVICT, b"cache-x", None, 0)
    assert core.relay_index == {}
    assert core.handle(Op.RELAY, b"obj", None, 0).status == Status.NOT_FOUND
    core.close_shm()


def test_relaying_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from warpstore.server.core import ServerCore
    from warpstore.server.protocol import Status

    monkeypatch.setenv("WARPSTORE_RELAY_FANOUT", "0")
    core = ServerCore("owner", "node-a")
    core.enable_shm(shm.ensure_private_dir(tmp_path / "seg"), secrets.token_bytes(32))
    core.handle(Op.PUT, b"obj", b"x" * 100_000, 100_000)
    replies = [core.handle(Op.LOCATE, b"obj\0n%d" % i, None, 0) for i in range(4)]
    assert all(r.status == Status.OK and bytes(r.data)[:1] == b"O" for r in replies)
    tag_hex = bytes(replies[0].data)[1:29].hex().encode()
    core.handle(Op.HAVE, b"obj\0n0\0" + tag_hex, None, 0)
    assert bytes(core.handle(Op.LOCATE, b"obj\0n5", None, 0).data)[:1] == b"O"
    core.close_shm()


def test_margo_server_uses_the_same_shared_memory(margo_server: Any, margo_connector: Any) -> None:
    """Margo (on the adapter double here) gets shared memory from the same core and base."""
    arr = np.arange(200_000, dtype=np.float64)
    with Store("shm-margo", margo_connector, cache_size=0) as store:
        key = store.put(arr)
        shm_dir = Path(margo_server.server.core.shm_dir)
        assert len(_segments(shm_dir)) == 1
        view = store.get(key)
        assert not view.flags.writeable
        np.testing.assert_array_equal(view, arr)
        status = margo_connector.server_status()
        assert status["requests"]["PUT_SHM"] == 1 and status["requests"]["GET_SHM"] == 1
        store.evict(key)
        assert _segments(shm_dir) == [] and float(view[-1]) == arr[-1]


def test_device_array_goes_from_the_device_straight_into_a_segment(
    runtime: Path, transport: str
) -> None:
    from tests.test_gpu_serialize import HostCudaArray, HostCudaKind
    from warpstore import _gpu

    kind = HostCudaKind()
    _gpu.register_kind(kind)
    try:
        c = _connect(transport)
        host = np.arange(100_000, dtype=np.float32)
        with Store(f"gpu-{transport}", c, cache_size=0) as store:
            key = store.put(HostCudaArray(host, device_id=1))
            assert kind.copies == [host.nbytes]  # one copy off the "device", into the segment
            assert c.server_status()["requests"]["PUT_SHM"] == 1
            out = store.get(key)
            assert type(out) is HostCudaArray and out.device_id == 1
            np.testing.assert_array_equal(out.numpy(), host)
        c.close()
    finally:
        _gpu.unregister_kind(HostCudaKind.name)


# -- spares: a segment made ahead of the next same-node put (server/spare.py) ------------


def _spare_core(directory: Path, memory_limit: int | None = None) -> Any:
    from warpstore.server.core import ServerCore

    core = ServerCore("addr", "node-a", memory_limit=memory_limit)
    core.enable_shm(directory, secrets.token_bytes(32))
    return core


def _put_shm(core: Any, directory: Path, key: bytes, nbytes: int) -> int:
    name = shm.write_segment(directory, [b"x" * nbytes])
    blob = b"\x00".join([key, name.encode(), str(nbytes).encode()])
    return int(core.handle(Op.PUT_SHM, blob, None, 0).status)


def test_a_put_leaves_a_spare_of_its_size_whose_pages_exist(tmp_path: Path) -> None:
    directory = shm.ensure_private_dir(tmp_path / "seg")
    core = _spare_core(directory)
    size = 2 << 20
    assert _put_shm(core, directory, b"k1", size) == 0
    core.spares.wait()
    pooled = _segments(directory / shm.POOL)
    assert len(pooled) == 1 and pooled[0].startswith(f"p-{os.getpid()}-")
    st = os.stat(directory / shm.POOL / pooled[0])
    assert st.st_size == size and st.st_mode & 0o777 == 0o600
    assert st.st_blocks * 512 >= size  # allocated now, not page by page by the next writer
    assert core.status()["shm_spares"] == 1
    # the next writer of that size claims it and writes its own bytes into it
    name = shm.write_segment(directory, [b"y" * size])
    assert _segments(directory / shm.POOL) == []
    assert (directory / name).read_bytes() == b"y" * size
    blob = b"\x00".join([b"k2", name.encode(), str(size).encode()])
    assert core.handle(Op.PUT_SHM, blob, None, 0).status == 0
    core.spares.wait()  # and a new spare follows
    assert len(_segments(directory / shm.POOL)) == 1
    core.close_shm()  # spares go at shutdown like every pooled segment
    assert not directory.exists()


def test_no_spare_for_small_puts_cache_fills_or_when_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = shm.ensure_private_dir(tmp_path / "seg")
    core = _spare_core(directory)
    assert _put_shm(core, directory, b"small", 500_000) == 0  # below SPARE_MIN
    copy, _ = shm.create_segment(directory, 2 << 20)
    blob = b"\x00".join([b"cache-1", copy.encode(), str(2 << 20).encode(), b"cache"])
    assert core.handle(Op.PUT_SHM, blob, None, 0).status == 0  # another node's object
    core.spares.wait()
    assert _segments(directory / shm.POOL) == [] and core.status()["shm_spares"] == 0
    core.close_shm()
    monkeypatch.setenv("WARPSTORE_SHM_SPARE", "0")
    directory = shm.ensure_private_dir(tmp_path / "off")
    core = _spare_core(directory)
    assert core.spares is None
    assert _put_shm(core, directory, b"big", 2 << 20) == 0
    assert _segments(directory / shm.POOL) == []
    core.close_shm()


def test_a_spare_never_costs_an_object_its_room(tmp_path: Path) -> None:
    size = 2 << 20
    directory = shm.ensure_private_dir(tmp_path / "seg")
    core = _spare_core(directory, memory_limit=3 * size)
    assert _put_shm(core, directory, b"k1", size) == 0
    core.spares.wait()
    assert len(_segments(directory / shm.POOL)) == 1  # 1 held + 1 spare: within 3
    assert _put_shm(core, directory, b"k2", size) == 0  # claims the spare
    core.spares.wait()
    assert len(_segments(directory / shm.POOL)) == 1  # 2 held + 1 spare
    # a third object fills the limit: the spare gives way (after landing, if still
    # being made), never the put; no spare follows, there is no room for one
    name = shm.write_segment(directory, [b"z" * size])  # (claims the spare's pages)
    blob = b"\x00".join([b"k3", name.encode(), str(size).encode()])
    assert core.handle(Op.PUT_SHM, blob, None, 0).status == 0
    core.spares.wait()
    assert _segments(directory / shm.POOL) == []
    assert _put_shm(core, directory, b"k4", 1 << 20) != 0  # full: held objects count
    assert set(core.table.entries) >= {b"k1", b"k2", b"k3"}
    core.close_shm()


def _spares(shm_dir: Path) -> list[str]:
    """Finished spares (``p-`` names); one being made has the server's ``s-`` name."""
    return [n for n in _segments(shm_dir / shm.POOL) if n.startswith("p-")]


def test_puts_that_keep_their_objects_write_into_spares(runtime: Path, transport: str) -> None:
    c = _connect(transport)
    with Store(f"sp-{transport}", c, cache_size=0) as store:
        arrays = [np.full(1 << 20, i, dtype=np.float32) for i in range(4)]  # 4 MiB each
        keys = []
        for a in arrays:  # nothing evicted: without spares each put fills new pages
            keys.append(store.put(a))
            deadline = time.monotonic() + 10
            shm_dir = Path(c.local_server()["shm_dir"])
            while not _spares(shm_dir) and time.monotonic() < deadline:
                time.sleep(0.01)  # the server makes the next put's spare while we wait
        assert c.server_status()["shm_spares"] == 4  # three were claimed, one waits
        assert len(_spares(shm_dir)) == 1
        for key, a in zip(keys, arrays, strict=True):
            np.testing.assert_array_equal(store.get(key), a)
    c.stop_server()
    c.close()
    assert not shm_dir.exists()
