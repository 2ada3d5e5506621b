"""Attacks on node servers, runtime files and clients, each as a test (issue 13).

Every test here failed before the fix it names: another local user taking a
job over through its runtime directory, a recorded PUT / SHUTDOWN / reply
replayed, a stalled oversized ZeroMQ frame growing the server's memory, a
recycled pid in ``server.json``, a SIGSTOPped server, a paused Redis, and the
smaller defects. All loopback, bounded in count and time.

Two-user tests fork a child that drops to unused uids 60001 (the victim) and
60002 (the attacker); they need root (as in CI) and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import kill_all, processes_matching
from tests.wire import RawZMQ
from warpstore.connectors.file import FileConnector
from warpstore.connectors.zmq import ZMQConnector
from warpstore.exceptions import AuthenticationError, ConnectorConnectionError, ConnectorError
from warpstore.server.protocol import Kind, Op, Status
from warpstore.server.runtime import (
    RuntimeFileError,
    load_token,
    node_dir,
    open_log,
    pid_alive,
    read_json,
    read_token_file,
    write_json_atomic,
)
from warpstore.server.spawn import find_server, stop_server

VICTIM, ATTACKER = 60001, 60002


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime root and job; every process started under it is ended after."""
    root = tmp_path / "rt"
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", str(root))
    monkeypatch.setenv("WARPSTORE_JOB_ID", f"sec-{secrets.token_hex(4)}")
    monkeypatch.setenv("WARPSTORE_HOSTNAME", "node-a")
    monkeypatch.setenv("WARPSTORE_ADDRESS", "127.0.0.1")
    for var in ("WARPSTORE_TOKEN", "WARPSTORE_TOKEN_FILE", "WARPSTORE_INTERFACE"):
        monkeypatch.delenv(var, raising=False)
    yield root
    leftovers = kill_all(str(root))
    assert not processes_matching(str(root))
    assert not leftovers, f"test left server processes running: {leftovers}"


# -- two local users -----------------------------------------------------------------


def run_as(uid: int, fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` in a forked child as ``uid``/``gid``; its result or its exception, as JSON.

    A fork, not a new interpreter: this Python lives under /root, which the
    unprivileged uids cannot read; everything ``fn`` needs is imported already.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                out: dict[str, Any] = {"result": fn()}
            except BaseException as e:
                out = {"error": type(e).__name__, "message": str(e),
                       "trace": traceback.format_exc()}
            os.write(write_end, json.dumps(out, default=str).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    return result


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="two-user tests drop privileges to uids 60001/60002: run as root"
)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A sticky, world-writable directory like /tmp, private to this test."""
    path = Path(tempfile.mkdtemp(prefix="warpstore-sec-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_another_user_cannot_plant_the_victims_runtime_root(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = shared_tmp / f"warpstore-victim-{VICTIM}"
    monkeypatch.setenv("WARPSTORE_RUNTIME_DIR", str(root))
    monkeypatch.setenv("WARPSTORE_JOB_ID", "job1")
    monkeypatch.delenv("WARPSTORE_TOKEN", raising=False)
    monkeypatch.delenv("WARPSTORE_TOKEN_FILE", raising=False)

    def plant() -> str:  # the attacker, before the victim's job starts
        os.mkdir(root, 0o777)
        os.chmod(root, 0o777)
        os.mkdir(root / "job1", 0o777)
        os.symlink("/proc/self/personality", root / "job1" / "token")
        return "planted"

    assert run_as(ATTACKER, plant) == {"result": "planted"}

    def victim() -> str:
        token, _ = load_token()
        return token.decode()

    outcome = run_as(VICTIM, victim)
    # before: the victim's token became "00000000", known to the attacker
    assert outcome.get("error") == "RuntimeFileError", outcome
    message = outcome["message"]
    assert str(root) in message and f"uid {ATTACKER}" in message and "\n" not in message
    assert "rm -rf" in message  # says how to fix it


@needs_root
def test_open_or_linked_runtime_files_of_another_user_are_refused(shared_tmp: Path) -> None:
    # the victim's own root, but world-writable (an old umask): refused, with the fix
    root = shared_tmp / "victim-root"

    def loose_root() -> str:
        os.mkdir(root, 0o700)
        os.chmod(root, 0o777)
        try:
            load_token(root=str(root))
        except RuntimeFileError as e:
            return str(e)
        return "accepted"

    outcome = run_as(VICTIM, loose_root)
    assert "writable by others" in outcome["result"] and "0777" in outcome["result"]

    # a token file owned by another user, even with mode 0600, is never read
    other = shared_tmp / "their-token"
    other.write_text("attackers-known-token\n")
    os.chown(other, ATTACKER, ATTACKER)
    other.chmod(0o600)

    def read_theirs() -> str:
        try:
            return read_token_file(other).decode()
        except PermissionError as e:
            return f"refused: {e}"

    assert run_as(VICTIM, read_theirs)["result"].startswith("refused: ")

    def read_as_owner() -> str:
        try:
            return read_token_file(other).decode()
        except PermissionError as e:
            return f"refused: {e}"

    assert run_as(ATTACKER, read_as_owner)["result"] == "attackers-known-token"


def test_token_files_checked_like_openssh_private_keys(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text("s3cret\n")
    good.chmod(0o600)
    assert read_token_file(good) == b"s3cret"
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(RuntimeFileError, match="symbolic link"):
        read_token_file(link)
    good.chmod(0o644)
    with pytest.raises(RuntimeFileError, match="chmod 600"):
        read_token_file(good)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(RuntimeFileError, match="not a regular file"):
        read_token_file(fifo)  # and no hang on the FIFO
    if os.geteuid() == 0:
        os.chown(good, ATTACKER, ATTACKER)
        good.chmod(0o600)
        with pytest.raises(RuntimeFileError, match=f"uid {ATTACKER}"):
            read_token_file(good)


def test_planted_links_are_never_written_through(runtime: Path, tmp_path: Path) -> None:
    directory = node_dir("zmq")
    assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
    target = tmp_path / "victims-other-file"
    target.write_text("precious\n")
    (directory / "server.log").symlink_to(target)
    with pytest.raises(OSError):
        open_log(directory / "server.log")
    (directory / "server.json").symlink_to(target)
    assert read_json(directory / "server.json") is None  # not followed
    write_json_atomic(directory / "server.json", {"pid": 1})  # replaces the link itself
    assert target.read_text() == "precious\n"
    assert not (directory / "server.json").is_symlink()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_a_token_file_named_by_a_proxy_is_never_created(runtime: Path) -> None:
    missing = runtime / "gone-job" / "token"
    with pytest.raises(FileNotFoundError) as info:
        ZMQConnector(token_file=str(missing), timeout=5)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    assert not missing.exists()
    # the job's own default token is created by the process that creates the job
    c = ZMQConnector(timeout=10)
    try:
        assert c.token_file is not None and Path(c.token_file).exists()
    finally:
        c.close()


# -- recorded messages replayed ------------------------------------------------------


@pytest.fixture
def server(runtime: Path) -> Iterator[tuple[ZMQConnector, str]]:
    c = ZMQConnector(timeout=10)
    info = c.local_server()
    yield c, info["address"]
    with contextlib.suppress(Exception):
        c.stop_server()
    c.close()


def test_replayed_put_is_refused_and_altered_data_never_reaches_a_consumer(server: Any) -> None:
    c, address = server
    raw = RawZMQ(address, c._token)
    try:
        session = raw.hello()
        honest = b"an honest pickle, 32 bytes long"
        _, header = session.request(Op.PUT, b"obj", honest)
        raw.send([header, b"obj", honest])
        assert raw.reply()[1] == Status.OK
        # an observer replays the header and key with its own data of the same length
        evil = pickle.dumps(_Exploit(str(address)))[:31].ljust(31, b"x")
        assert len(evil) == len(honest)
        raw.send([header, b"obj", evil])
        kind, status, _, _ = raw.reply()
        assert kind == Kind.REFUSAL and status == Status.REPLAYED
        # ... or the whole message, as it was, on a new connection
        other = RawZMQ(address, c._token)
        try:
            other.session = session
            other.send([header, b"obj", honest])
            kind, status, message, _ = other.reply()
            assert kind == Kind.REFUSAL and status == Status.REPLAYED, message
        finally:
            other.close()
        got = c._client.request(address, Op.GET, b"obj")[1]
        assert bytes(got.buffer) == honest
        # a man in the middle swaps the data of a fresh PUT: the server stores bytes it
        # never reads, and the consumer refuses them before anything unpickles them
        _, fresh = session.request(Op.PUT, b"obj2", honest)
        raw.send([fresh, b"obj2", evil])
        assert raw.reply()[1] == Status.OK
        with pytest.raises(AuthenticationError, match="failed authentication"):
            c._client.request(address, Op.GET, b"obj2")
    finally:
        raw.close()


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_replayed_shutdown_does_not_stop_the_next_server(runtime: Path) -> None:
    c = ZMQConnector(timeout=10)
    try:
        first = c.local_server()
        raw = RawZMQ(first["address"], c._token)
        session = raw.hello()
        _, recorded = session.request(Op.SHUTDOWN, b"", None)  # captured on the wire
        raw.send([recorded, b""])
        assert raw.reply()[1] == Status.OK
        raw.close()
        deadline = time.monotonic() + 10
        while pid_alive(first["pid"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        c.close()
        c = ZMQConnector(timeout=10)
        second = c.local_server()
        assert second["pid"] != first["pid"]
        replay = RawZMQ(second["address"], c._token)
        try:
            replay.session = session
            replay.send([recorded, b""])
            kind, status, _, _ = replay.reply()
            assert kind == Kind.REFUSAL and status == Status.UNKNOWN_SESSION
        finally:
            replay.close()
        time.sleep(0.3)
        assert pid_alive(second["pid"])
        assert bytes(c.get(c.put(b"still serving"))) == b"still serving"
    finally:
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def test_a_reply_sent_back_as_a_request_is_refused(server: Any) -> None:
    c, address = server
    key = c.put(b"keep me")
    raw = RawZMQ(address, c._token)
    try:
        session = raw.hello()
        _, header = session.request(Op.EVICT, key.object_id.encode(), None)
        # the server's signed reply to a PUT of the same key, replayed as a request
        _, put = session.request(Op.PUT, b"x", b"")
        raw.send([put, b"x"])
        kind, status, _, frames = raw.reply()
        assert kind == Kind.REPLY and status == Status.OK
        raw.send(frames[:2] + frames[2:])
        kind, status, message, _ = raw.reply()
        assert kind == Kind.REFUSAL and status == Status.BAD_REQUEST, message
        # a request whose status byte is not zero
        forged = bytearray(header)
        forged[5] = Status.OK + 1
        raw.send([bytes(forged), key.object_id.encode()])
        assert raw.reply()[1] == Status.BAD_REQUEST
    finally:
        raw.close()
    assert bytes(c.get(key)) == b"keep me"


# -- memory before authentication ----------------------------------------------------


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _zmtp_connect(host: str, port: int) -> socket.socket:
    """A raw ZMTP 3.0 peer offering the PLAIN mechanism, as anyone on the network can be.

    It stops after the greeting: its next frame is what the server reads before
    it knows whether to admit the peer (server/admission.py).
    """
    s = socket.create_connection((host, port), timeout=5)
    greeting = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"PLAIN".ljust(20, b"\0") + bytes(32)
    s.sendall(greeting)
    got = b""
    while len(got) < 64:
        chunk = s.recv(64 - len(got))
        assert chunk, "server closed during the greeting"
        got += chunk
    return s


def test_stalled_oversized_frame_does_not_grow_the_server(runtime: Path) -> None:
    limit = 64 << 20
    c = ZMQConnector(timeout=10, memory_limit=limit)
    try:
        info = c.local_server()
        pid = info["pid"]
        host, port = info["address"][len("tcp://") :].rsplit(":", 1)
        before = _rss(pid)
        peers = []
        for _ in range(2):  # two connections each declaring an 8 GiB frame, then stalling
            s = _zmtp_connect(host, int(port))
            sent = 0
            with contextlib.suppress(OSError):
                s.sendall(b"\x06" + (8 << 30).to_bytes(8, "big"))  # a "HELLO" command
                chunk = bytes(1 << 20)
                while sent < 96 << 20:
                    s.sendall(chunk)
                    sent += len(chunk)
            peers.append(s)
        time.sleep(0.5)
        during = _rss(pid)
        for s in peers:
            s.close()
        # before: +192 MiB (every byte held until the peer left); now libzmq drops the
        # connection at the frame header, which declares more than the memory limit
        assert during - before < 16 << 20, (before, during)
        assert bytes(c.get(c.put(b"still serving"))) == b"still serving"
        # an honest client never sends what the server announced it cannot take
        from warpstore.exceptions import StoreFullError

        with pytest.raises(StoreFullError, match="at most"):
            c.put(bytes(limit + 1))
        assert _rss(pid) - before < 16 << 20
    finally:
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def test_an_unadmitted_handshake_frame_is_held_at_most_the_handshake_interval(
    runtime: Path,
) -> None:
    """What a peer without the token can still make libzmq hold: one handshake frame under
    the memory limit, and only until the handshake interval ends (then it is cut off)."""
    from warpstore.server.admission import HANDSHAKE_IVL_MS

    c = ZMQConnector(timeout=10, memory_limit=64 << 20)
    try:
        info = c.local_server()
        pid = info["pid"]
        host, port = info["address"][len("tcp://") :].rsplit(":", 1)
        before = _rss(pid)
        s = _zmtp_connect(host, int(port))
        start = time.monotonic()
        with s:
            s.sendall(b"\x06" + (48 << 20).to_bytes(8, "big"))  # a 48 MiB "HELLO", unfinished
            s.sendall(bytes(40 << 20))
            time.sleep(0.3)
            assert _rss(pid) - before > 24 << 20  # libzmq holds it: the bound is real, not 0
            limit = start + HANDSHAKE_IVL_MS / 1000 + 5
            while _rss(pid) - before > 16 << 20 and time.monotonic() < limit:
                time.sleep(0.25)
            assert _rss(pid) - before < 16 << 20, "still held after the handshake interval"
        assert bytes(c.get(c.put(b"still serving"))) == b"still serving"
    finally:
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def _zmtp_command(name: bytes, body: bytes) -> bytes:
    payload = bytes([len(name)]) + name + body
    return b"\x04" + bytes([len(payload)]) + payload  # short command frame


def _endless_multipart(
    host: str, port: int, password: bytes | None, done: list[int], release: Any
) -> None:
    """A raw ZMTP peer sending 64 x 8 MiB frames of one message, never the last frame.

    (A zmq DEALER cannot do this: libzmq sends nothing of a message before its
    last frame.) ``password``: None for the NULL mechanism, else a PLAIN one.
    """
    from warpstore.server.admission import USERNAME

    mechanism = b"NULL" if password is None else b"PLAIN"
    meta = b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
    sent = 0
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=5) as s:
        greeting = b"\xff" + bytes(8) + b"\x7f\x03\x00" + mechanism.ljust(20, b"\0") + bytes(32)
        s.sendall(greeting)
        if password is None:
            s.sendall(_zmtp_command(b"READY", meta))
        else:
            hello = bytes([len(USERNAME)]) + USERNAME + bytes([len(password)]) + password
            s.sendall(_zmtp_command(b"HELLO", hello))
            s.sendall(_zmtp_command(b"INITIATE", meta))
        frame = bytes(8 << 20)
        for _ in range(64):
            s.sendall(b"\x03" + len(frame).to_bytes(8, "big"))  # MORE | LONG
            s.sendall(frame)
            sent += 1
        done.append(sent)
        release.wait(30)  # hold the connection: the message stays unfinished


@pytest.mark.parametrize("peer", ["no-credential", "forged", "replayed"])
def test_endless_multipart_message_without_the_token_does_not_grow_the_server(
    runtime: Path, peer: str
) -> None:
    """One message of 64 x 8 MiB frames, never finished, from a peer without the token.

    libzmq delivers a multipart message only whole and its high-water mark
    counts messages, so before admission at the handshake the server held all
    512 MiB until the peer left. Now the peer is refused before any frame:
    one with no credential (NULL mechanism), one with a credential forged
    without the token, and one replaying a credential an honest client used.
    """
    import threading

    from warpstore.server.admission import credential, port_of

    c = ZMQConnector(timeout=10)
    honest: RawZMQ | None = None
    try:
        info = c.local_server()
        pid, address = info["pid"], info["address"]
        host, port = address[len("tcp://") :].rsplit(":", 1)
        password = None
        if peer == "forged":
            password = credential(b"not the token", int(port))
        elif peer == "replayed":  # seen on the wire while an honest client was admitted
            password = credential(c._token, port_of(address))
            honest = RawZMQ(address, c._token, password=password)
            honest.hello()
        before = _rss(pid)
        done: list[int] = []
        release = threading.Event()
        attack = threading.Thread(
            target=_endless_multipart, args=(host, int(port), password, done, release)
        )
        attack.start()
        during = before
        deadline = time.monotonic() + 3
        try:
            while time.monotonic() < deadline and not done:  # the server keeps serving
                payload = secrets.token_bytes(1 << 20)
                assert bytes(c.get(c.put(payload))) == payload
                during = max(during, _rss(pid))
            time.sleep(0.3)
            during = max(during, _rss(pid))
        finally:
            release.set()
            attack.join(30)
        assert not attack.is_alive()
        # before: +512 MiB, held until the peer left
        assert during - before < 64 << 20, (before >> 20, during >> 20, done)
    finally:
        if honest is not None:
            honest.close()
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def test_admission_credentials_are_one_time_and_bound_to_token_port_and_time() -> None:
    import zmq

    from warpstore.server.admission import USERNAME, WINDOW_S, Admission, credential

    ctx = zmq.Context()
    gate = Admission(ctx, b"the token")
    try:
        gate.port = 4242
        now = time.time()
        fresh = credential(b"the token", 4242, now)
        assert gate.admit(USERNAME, fresh, now) == (True, "")
        assert gate.admit(USERNAME, fresh, now + 1) == (False, "credential used before (a replay)")
        ok, why = gate.admit(USERNAME, credential(b"another token", 4242, now), now)
        assert not ok and "wrong token" in why
        ok, why = gate.admit(USERNAME, credential(b"the token", 4243, now), now)
        assert not ok and "wrong token" in why  # made for another server's port
        ok, why = gate.admit(USERNAME, credential(b"the token", 4242, now - WINDOW_S - 5), now)
        assert not ok and "clocks" in why
        ok, why = gate.admit(b"someone", credential(b"the token", 4242, now), now)
        assert not ok and "missing job token" in why
    finally:
        gate.close()
        ctx.term()


def test_zmq_put_data_is_sent_only_after_the_server_has_room(runtime: Path) -> None:
    from warpstore.exceptions import StoreFullError

    c = ZMQConnector(timeout=10, memory_limit=4 << 20)
    try:
        address = c.local_server()["address"]
        kept = c.put(bytes(3 << 20))
        with pytest.raises(StoreFullError, match="full"):
            c.put(bytes(2 << 20))  # announced, refused, never sent
        raw = RawZMQ(address, c._token)
        try:
            session = raw.hello()
            big = bytes(2 << 20)
            _, announce = session.request(Op.PUT, b"k2", big, staged=True)
            raw.send([announce, b"k2"])
            kind, status, _, _ = raw.reply()
            assert kind == Kind.REPLY and status == Status.STORE_FULL
            raw.send([announce, b"k2", big])  # the data anyway: it got no CONTINUE
            kind, status, _, _ = raw.reply()
            assert kind == Kind.REFUSAL and status == Status.REPLAYED
            small = bytes(1 << 20)
            _, announce = session.request(Op.PUT, b"k3", small, staged=True)
            raw.send([announce, b"k3"])
            assert raw.reply()[:2] == (Kind.CONTINUE, Status.CONTINUE)
            raw.send([announce, b"k3", small])
            assert raw.reply()[:2] == (Kind.REPLY, Status.OK)
            raw.send([announce, b"k3", small])  # the data message replayed
            assert raw.reply()[:2] == (Kind.REFUSAL, Status.REPLAYED)
        finally:
            raw.close()
        status = c.server_status()
        assert status["objects"] == 2 and status["bytes_in"] == (3 << 20) + (1 << 20)
        assert len(bytes(c.get(kept) or b"")) == 3 << 20
    finally:
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def test_two_announcements_cannot_both_take_the_last_room(runtime: Path) -> None:
    """Room promised by a CONTINUE is taken: a second client is refused before sending."""
    c = ZMQConnector(timeout=10, memory_limit=4 << 20)
    first = second = None
    try:
        address = c.local_server()["address"]
        first, second = RawZMQ(address, c._token), RawZMQ(address, c._token)
        one, other = first.hello(), second.hello()
        big = bytes(3 << 20)
        _, announce = one.request(Op.PUT, b"first", big, staged=True)
        first.send([announce, b"first"])
        assert first.reply()[:2] == (Kind.CONTINUE, Status.CONTINUE)
        # nothing is stored yet, but 3 of the 4 MiB are promised: no CONTINUE for 2 MiB
        _, late = other.request(Op.PUT, b"second", bytes(2 << 20), staged=True)
        second.send([late, b"second"])
        assert second.reply()[:2] == (Kind.REPLY, Status.STORE_FULL)
        first.send([announce, b"first", big])
        assert first.reply()[:2] == (Kind.REPLY, Status.OK)
        _, fits = other.request(Op.PUT, b"third", bytes(1 << 20), staged=True)
        second.send([fits, b"third"])
        assert second.reply()[:2] == (Kind.CONTINUE, Status.CONTINUE)
    finally:
        for raw in (first, second):
            if raw is not None:
                raw.close()
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def test_zmq_data_sent_before_its_tag_is_stored_only_with_its_seal(server: Any) -> None:
    """ZeroMQ PUTs tag the data while it is sent: the tag follows in a SEAL."""
    c, address = server
    raw = RawZMQ(address, c._token)
    try:
        session = raw.hello()
        data = os.urandom(2 << 20)
        counter, announce = session.request(Op.PUT, b"held", data, staged=True, tag_follows=True)
        raw.send([announce, b"held"])
        assert raw.reply()[:2] == (Kind.CONTINUE, Status.CONTINUE)
        raw.send([announce, b"held", data])
        assert not raw.sock.poll(300)  # held, not stored: no reply yet ...
        assert c._client.request(address, Op.GET, b"held")[0] == Status.NOT_FOUND  # ... unseen
        seal = session.seal(counter, b"held", data)
        raw.send([seal, b"held"])
        assert raw.reply()[:2] == (Kind.REPLY, Status.OK)
        assert bytes(c._client.request(address, Op.GET, b"held")[1].buffer) == data
        raw.send([seal, b"held"])  # replayed
        assert raw.reply()[:2] == (Kind.REFUSAL, Status.REPLAYED)
        # a man in the middle swaps the data, the honest SEAL follows: stored, never used
        counter, announce = session.request(Op.PUT, b"swap", data, staged=True, tag_follows=True)
        raw.send([announce, b"swap"])
        assert raw.reply()[:2] == (Kind.CONTINUE, Status.CONTINUE)
        raw.send([announce, b"swap", data[:-1] + bytes([data[-1] ^ 1])])
        raw.send([session.seal(counter, b"swap", data), b"swap"])
        assert raw.reply()[:2] == (Kind.REPLY, Status.OK)
        with pytest.raises(AuthenticationError, match="failed authentication"):
            c._client.request(address, Op.GET, b"swap")
    finally:
        raw.close()


# -- stale and hung servers ----------------------------------------------------------


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


@pytest.mark.parametrize("pid_value", ["recycled", "not-a-number"])
def test_stale_server_json_neither_blocks_nor_gets_killed(runtime: Path, pid_value: str) -> None:
    bystander = _sleeper()  # an unrelated process that now has the recorded pid
    try:
        directory = node_dir("zmq")
        pid: Any = bystander.pid if pid_value == "recycled" else "12ab"
        stale = {"address": "tcp://127.0.0.1:9", "pid": pid, "pid_start": 1, "transport": "zmq"}
        write_json_atomic(directory / "server.json", stale)
        assert find_server(directory) is None
        start = time.monotonic()
        c = ZMQConnector(timeout=10)
        try:
            assert bytes(c.get(c.put(b"fresh"))) == b"fresh"
            assert c.local_server()["pid"] != bystander.pid
            assert time.monotonic() - start < 8  # before: 10 s, then "already running"
        finally:
            with contextlib.suppress(Exception):
                c.stop_server()
            c.close()
        # `stop` on the stale record: nothing is signalled
        assert stop_server(stale, None, timeout=1)
        assert bystander.poll() is None
        write_json_atomic(directory / "server.json", stale)
        cli = subprocess.run(
            [sys.executable, "-m", "warpstore", "server", "stop"],
            capture_output=True, text=True, timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert bystander.poll() is None  # before: SIGTERMed
    finally:
        bystander.kill()
        bystander.wait()


def test_sigstopped_server_is_reported_with_pid_and_fix(runtime: Path) -> None:
    c = ZMQConnector(timeout=30, heartbeat_timeout=2.0)
    info = c.local_server()
    key = c.put(b"x" * (1 << 17))  # not a small object: those never reach the server
    os.kill(info["pid"], signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(ConnectorConnectionError, match="heartbeats for 2 s"):
            c.get(key)  # the heartbeat notices, not the 30 s timeout
        assert time.monotonic() - start < 10
        d = ZMQConnector(timeout=30, ping_timeout=1.0)
        try:
            with pytest.raises(ConnectorConnectionError) as err:
                d.put(b"y")
            message = str(err.value)
            assert f"pid {info['pid']}" in message and f"kill -CONT {info['pid']}" in message
            assert "warpstore server stop" in message and "\n" not in message
        finally:
            d.close()
        cli = subprocess.run(
            [sys.executable, "-m", "warpstore", "server", "stop"],
            capture_output=True, text=True, timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert not pid_alive(info["pid"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGCONT)
        c.close()


def test_a_socket_that_lost_its_connection_while_idle_is_replaced(runtime: Path) -> None:
    """libzmq reconnects an idle socket with its used one-time admission credential, which
    the server refuses as a replay; the next request must open a fresh socket, not fail."""
    c = ZMQConnector(timeout=10, heartbeat_timeout=1, shared_memory=False)
    try:
        info = c.local_server()
        assert bytes(c.get(c.put(b"before"))) == b"before"
        os.kill(info["pid"], signal.SIGSTOP)  # past the client's heartbeat timeout
        try:
            time.sleep(2.5)
        finally:
            os.kill(info["pid"], signal.SIGCONT)
        time.sleep(1.5)  # the idle socket reconnects and is refused
        assert bytes(c.get(c.put(b"after"))) == b"after"
        assert "credential used before" in Path(info["log"]).read_text()
    finally:
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def test_killed_server_is_noticed_in_seconds_not_at_the_timeout(runtime: Path) -> None:
    c = ZMQConnector(timeout=30)
    try:
        key = c.put(b"x")
        pid = c.local_server()["pid"]
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        area = c._area(key.address)  # same-node small objects: gone once its lock is
        while time.monotonic() - start < 5 and (  # kill(2) does not wait, and the files
            pid_alive(pid) or (area is not None and area.server_alive())  # close last
        ):
            time.sleep(0.01)
        with pytest.raises(ConnectorConnectionError, match=key.address.replace(".", r"\.")):
            c.get(key)
        assert time.monotonic() - start < 5  # before: the 30 s timeout
    finally:
        c.close()


# -- smaller defects -----------------------------------------------------------------


def test_connector_with_a_direct_token_spawns_a_server_with_that_token(runtime: Path) -> None:
    c = ZMQConnector(token="a-token-given-directly", timeout=10)
    try:
        assert bytes(c.get(c.put(b"ok"))) == b"ok"  # before: AuthenticationError
        cmdline = Path(f"/proc/{c.local_server()['pid']}/cmdline").read_bytes()
        assert b"a-token-given-directly" not in cmdline
    finally:
        with contextlib.suppress(Exception):
            c.stop_server()
        c.close()


def test_encrypted_objects_are_ciphertext_on_the_server(runtime: Path) -> None:
    c = ZMQConnector(timeout=10, encrypt=True)
    plain = ZMQConnector(timeout=10)
    try:
        secret = b"the data itself " * 1000
        key = c.put(secret)
        assert bytes(c.get(key)) == secret
        stored = bytes(plain.get(key) or b"")
        assert secret[:16] not in stored and len(stored) == len(secret) + 32
        assert ZMQConnector.from_config(c.config()).encrypt
        with pytest.raises(ConnectorError, match="not encrypted"):
            c.get(plain.put(b"clear"))
    finally:
        with contextlib.suppress(Exception):
            c.stop_server()
        plain.close()
        c.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `bash tests/run.sh`")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    yield proc, port
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def test_paused_redis_is_an_error_in_the_stated_time(own_redis: Any) -> None:
    from warpstore.connectors.redis import RedisConnector

    proc, port = own_redis
    c = RedisConnector("127.0.0.1", port, timeout=1.0)
    try:
        key = c.put(b"v")
        os.kill(proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(ConnectorConnectionError, match=r"within 1\.0 s"):
            c.get(key)  # before: blocked for as long as Redis stayed paused
        assert time.monotonic() - start < 5
        os.kill(proc.pid, signal.SIGCONT)
        assert c.get(key) == b"v"
    finally:
        c.close()
    assert RedisConnector("127.0.0.1", port).timeout == 30.0  # a timeout by default


def test_file_evict_in_read_only_directory_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "objects"
    c = FileConnector(str(store))
    key = c.put(b"x")
    if os.geteuid() == 0:  # root writes anywhere: be another user for the evict
        os.chown(store, VICTIM, VICTIM)
        for p in store.iterdir():
            os.chown(p, VICTIM, VICTIM)
        store.chmod(0o500)
        tmp_path.chmod(0o755)

        def evict() -> None:
            c.evict(key)

        outcome = run_as(VICTIM, evict)
        assert outcome.get("error") == "ConnectorError", outcome
        message = outcome["message"]
    else:  # pragma: no cover - CI runs as root
        store.chmod(0o500)
        with pytest.raises(ConnectorError) as info:
            c.evict(key)
        message = str(info.value)
        store.chmod(0o700)
    assert key.filename in message and "\n" not in message


def test_relay_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    token = tmp_path / "relay-token"
    token.write_text("relay-secret\n")
    token.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "warpstore", "relay", "--port", "0", "--token-file", str(token)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "chmod 600" in lines[0] and str(token) in lines[0], proc.stderr
    # an endpoint configured with it is refused at once, not when its daemon starts
    configure = subprocess.run(
        [sys.executable, "-m", "warpstore", "endpoint", "configure", "e1",
         "--relay-server", "ws://127.0.0.1:9", "--relay-token-file", str(token)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "WARPSTORE_ENDPOINT_HOME": str(tmp_path / "endpoints")},
    )
    assert configure.returncode == 1 and "chmod 600" in configure.stderr
    assert len(configure.stderr.strip().splitlines()) == 1


def test_malformed_or_huge_peer_reply_fails_the_request_at_once() -> None:
    import asyncio

    from warpstore.endpoint.daemon import MAX_OBJECT_SIZE, _Peer

    async def scenario(message: Any) -> str:
        peer = _Peer(None, None)
        peer.rid = "r1"
        peer.pending = asyncio.get_running_loop().create_future()
        peer.on_message(message)
        try:
            await asyncio.wait_for(peer.pending, 1.0)  # before: waited out 60 s
        except ConnectionError as e:
            return str(e)
        return "accepted"

    for bad in (
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"rid": "r1", "status": "ok", "size": 1 << 40}),
        json.dumps({"rid": "r1", "status": "ok", "size": -1}),
        json.dumps({"rid": "other", "status": "ok", "size": 0}),
        b"data before any header",
    ):
        assert asyncio.run(scenario(bad)) != "accepted", bad
    huge = json.dumps({"rid": "r1", "size": MAX_OBJECT_SIZE + 1})
    assert "exceeds" in asyncio.run(scenario(huge))


def test_encryption_is_a_site_config_key() -> None:
    from warpstore.hpc.connectors import node_server_settings
    from warpstore.hpc.siteconfig import load_site

    assert "encrypt" not in node_server_settings(load_site("local"), "zmq")
    site = load_site("local", ["connector.encrypt=true"])
    assert node_server_settings(site, "ucx")["encrypt"] is True
