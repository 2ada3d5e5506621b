"""The end-to-end data tag (protocol.DataSealer): both constructions and their edges.

Large data is tagged in pieces on a thread pool (see the DataSealer docstring);
these tests check the construction against a plain serial reading of its
definition, and that every change an attacker could make to the data, its
length, its order, its key or its token is refused.
"""

from __future__ import annotations

import hmac
import os
import struct
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from warpstore.server import protocol
from warpstore.server.protocol import (
    CHUNK_SIZE,
    CHUNKED_MIN,
    NO_DATA_TAG,
    DataSealer,
    _hkdf,
)

TOKEN = b"t" * 32


def reference_tag(token: bytes, key: bytes, data: bytes, nonce: bytes) -> bytes:
    """The tag as the DataSealer docstring defines it, computed serially."""
    if len(data) < CHUNKED_MIN:
        aead = AESGCM(_hkdf(token, b"warpstore/2 data"))
        return aead.encrypt(nonce, key, data)[-16:]
    msg_key = hmac.digest(_hkdf(token, b"warpstore/2 data chunked"), nonce, "sha256")
    aead = AESGCM(msg_key)
    pieces = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    tags = b"".join(aead.encrypt(i.to_bytes(12, "big"), b"", p) for i, p in enumerate(pieces))
    aad = struct.pack(">QQ", len(data), len(pieces)) + tags
    return aead.encrypt(b"\xff" * 12, key, aad)[-16:]


@pytest.fixture(scope="module")
def big() -> bytes:
    # every piece different, so that swapping two of them changes the data
    return os.urandom(CHUNKED_MIN + 3 * CHUNK_SIZE + 12345)


@pytest.mark.parametrize(
    "size",
    [
        1,
        CHUNK_SIZE,
        CHUNKED_MIN - 1,  # the last single-pass size
        CHUNKED_MIN,  # the first chunked size, a whole number of pieces
        CHUNKED_MIN + 1,  # one byte in the last piece
        CHUNKED_MIN + CHUNK_SIZE - 1,
        CHUNKED_MIN + CHUNK_SIZE,
    ],
)
def test_tag_is_the_documented_construction_and_round_trips(size: int) -> None:
    sealer = DataSealer(TOKEN)
    data = os.urandom(size)
    nonce, tag = sealer.tag(b"obj", data)
    assert len(nonce) == 12 and len(tag) == 16
    assert tag == reference_tag(TOKEN, b"obj", data, nonce)
    for form in (data, bytearray(data), memoryview(data)):
        assert sealer.verify(b"obj", form, nonce, tag)
    # the other construction's tag over the same bytes is refused: the length decides
    single = AESGCM(_hkdf(TOKEN, b"warpstore/2 data")).encrypt(nonce, b"obj", data)[-16:]
    assert (tag == single) is (size < CHUNKED_MIN)


def test_non_byte_buffers_are_tagged_as_their_bytes() -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange((CHUNKED_MIN // 8) + 3, dtype=np.float64)
    sealer = DataSealer(TOKEN)
    nonce, tag = sealer.tag(b"arr", arr)
    assert sealer.verify(b"arr", arr.tobytes(), nonce, tag)
    assert tag == reference_tag(TOKEN, b"arr", arr.tobytes(), nonce)


def test_no_data_has_no_tag() -> None:
    sealer = DataSealer(TOKEN)
    assert sealer.tag(b"k", None) == NO_DATA_TAG == sealer.tag(b"k", b"")
    assert sealer.verify(b"k", b"", *NO_DATA_TAG)
    assert not sealer.verify(b"k", b"x", *NO_DATA_TAG)


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def _swap(data: bytes, i: int, j: int) -> bytes:
    pieces = [data[k : k + CHUNK_SIZE] for k in range(0, len(data), CHUNK_SIZE)]
    pieces[i], pieces[j] = pieces[j], pieces[i]
    return b"".join(pieces)


def test_every_change_to_chunked_data_is_refused(big: bytes) -> None:
    sealer = DataSealer(TOKEN)
    nonce, tag = sealer.tag(b"obj", big)
    assert sealer.verify(b"obj", big, nonce, tag)
    last = len(big) // CHUNK_SIZE
    altered = {
        "first byte": _flip(big, 0),
        "last byte of the first piece": _flip(big, CHUNK_SIZE - 1),
        "a middle piece": _flip(big, 3 * CHUNK_SIZE + 77),
        "the short last piece": _flip(big, last * CHUNK_SIZE + 5),
        "last byte": _flip(big, len(big) - 1),
        "two pieces swapped": _swap(big, 1, 2),
        "first and last whole pieces swapped": _swap(big, 0, last - 1),
        "one byte cut": big[:-1],
        "the last piece cut": big[: last * CHUNK_SIZE],
        "one byte added": big + b"\0",
        "a piece added": big + big[:CHUNK_SIZE],
        "cut below the chunked size": big[: CHUNKED_MIN - 1],
    }
    for what, data in altered.items():
        assert data != big, what
        assert not sealer.verify(b"obj", data, nonce, tag), what
    # the tag is bound to the object's key, the token, the nonce and the tag bytes
    assert not sealer.verify(b"obk", big, nonce, tag)
    assert not sealer.verify(b"obj", big, nonce, tag[:-1] + bytes([tag[-1] ^ 1]))
    assert not sealer.verify(b"obj", big, _flip(nonce, 0), tag)
    assert not DataSealer(b"u" * 32).verify(b"obj", big, nonce, tag)
    other_nonce, other_tag = DataSealer(b"u" * 32).tag(b"obj", big)
    assert not sealer.verify(b"obj", big, other_nonce, other_tag)
    # a fresh random nonce per tag: tagging the same data twice gives unrelated tags
    again = sealer.tag(b"obj", big)
    assert again[0] != nonce and again[1] != tag and sealer.verify(b"obj", big, *again)


def test_pieces_are_tagged_on_several_threads(
    big: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setattr(protocol, "_tag_workers", lambda: 3)
    monkeypatch.setattr(protocol, "_pools", {})  # a pool sized for 3, for this test only
    seen: dict[str, list[int]] = {}
    original = protocol._gmac_piece

    def recording(aead: AESGCM, view: memoryview, i: int) -> bytes:
        seen.setdefault(threading.current_thread().name, []).append(i)
        time.sleep(0.02)  # long enough that every thread gets to claim pieces
        return original(aead, view, i)

    monkeypatch.setattr(protocol, "_gmac_piece", recording)
    sealer = DataSealer(TOKEN)
    try:
        nonce, tag = sealer.tag(b"obj", big)
        assert tag == reference_tag(TOKEN, b"obj", big, nonce)
        pieces = -(-len(big) // CHUNK_SIZE)
        # each piece tagged once (none claimed twice when no thread is starved)
        assert sorted(i for run in seen.values() for i in run) == list(range(pieces))
        assert len(seen) == 3 and threading.current_thread().name in seen
        assert all(name.startswith("warpstore-gmac_") for name in seen if name != "MainThread")
    finally:
        for _, executor in protocol._pools.values():
            executor.shutdown()


def _never_sent(timeout: float) -> bool:
    return False


def _sent_at_once(timeout: float) -> bool:
    return True


@pytest.mark.parametrize("sent", [_never_sent, _sent_at_once], ids=["sending", "sent"])
@pytest.mark.parametrize("size", [CHUNKED_MIN - 1, CHUNKED_MIN, CHUNKED_MIN + 1, 0])
def test_a_tag_made_while_sending_is_the_same_tag(
    size: int, sent: Any, big: bytes
) -> None:
    """ZeroMQ's SEAL path (tagged behind the send) makes exactly the documented tag."""
    data = big[:size] if size else big
    sealer = DataSealer(TOKEN)
    nonce, tag = sealer.tag(b"obj", data, sent=sent)
    assert tag == reference_tag(TOKEN, b"obj", data, nonce)
    assert sealer.verify(b"obj", data, nonce, tag)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_background_taggers_take_only_idle_cpu(big: bytes) -> None:
    """Taggers that overlap a send run at SCHED_IDLE; the caller and the others do not."""
    policy = os.sched_getscheduler(0)
    DataSealer(TOKEN).tag(b"obj", big, sent=_never_sent)  # the idle pool exists now
    idle = protocol._gmac_pool("idle")
    policies = {idle.submit(os.sched_getscheduler, 0).result(10) for _ in range(8)}
    assert policies == {os.SCHED_IDLE}
    assert protocol._gmac_pool().submit(os.sched_getscheduler, 0).result(10) == policy
    assert os.sched_getscheduler(0) == policy  # the caller's own priority is untouched


class _StarvedPool:
    """A pool whose threads never get the CPU: one claims a piece and never finishes it."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn: Any) -> None:
        if not self.submitted:
            next(fn.__self__._claims)  # piece 0: claimed, never tagged
        self.submitted += 1


def test_starved_background_taggers_do_not_hold_the_tag_up(
    big: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the data has left, the caller tags every piece not done, claimed ones too."""
    starved = _StarvedPool()
    monkeypatch.setattr(protocol, "_gmac_pool", lambda kind="": starved)
    asked: list[float] = []

    def sent(timeout: float) -> bool:
        asked.append(timeout)
        return True

    nonce, tag = DataSealer(TOKEN).tag(b"obj", big, sent=sent)
    assert asked == [0]  # joined as soon as the data had left, not at the stall fallback
    assert starved.submitted >= 1
    assert tag == reference_tag(TOKEN, b"obj", big, nonce)
    # a send that never finishes, on a node with no idle CPU: the caller joins anyway
    starved.submitted = 0
    nonce, tag = DataSealer(TOKEN).tag(b"obj", big, sent=_never_sent)
    assert tag == reference_tag(TOKEN, b"obj", big, nonce)


class _ClosedPool:
    """A pool that takes no work, as at interpreter shutdown (a put in an atexit handler)."""

    def submit(self, fn: Any) -> None:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


@pytest.mark.parametrize("sent", [None, _sent_at_once, _never_sent])
def test_a_pool_that_takes_no_work_leaves_the_tagging_to_the_caller(
    big: bytes, sent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "_gmac_pool", lambda kind="": _ClosedPool())
    sealer = DataSealer(TOKEN)
    asked: list[float] = []

    def recording(timeout: float) -> bool:
        asked.append(timeout)
        return bool(sent(timeout))

    nonce, tag = sealer.tag(b"obj", big, sent=None if sent is None else recording)
    assert asked == []  # no helper started: nothing to wait for, the caller tags at once
    assert tag == reference_tag(TOKEN, b"obj", big, nonce)
    assert sealer.verify(b"obj", big, nonce, tag)


def test_concurrent_taggers_get_their_own_tags(big: bytes) -> None:
    sealer = DataSealer(TOKEN)
    datas = [big, _flip(big, 9), big[: CHUNKED_MIN + 1], _swap(big, 0, 1)]
    results: list[Any] = [None] * len(datas)

    def work(i: int) -> None:
        results[i] = sealer.tag(b"obj", datas[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(datas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for data, (nonce, tag) in zip(datas, results, strict=True):
        assert tag == reference_tag(TOKEN, b"obj", data, nonce)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_tags_large_data(big: bytes) -> None:
    """The parent's pool threads do not exist in a forked child: it must make its own."""
    sealer = DataSealer(TOKEN)
    sealer.tag(b"obj", big)  # the parent's pool exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = False
        try:
            nonce, tag = sealer.tag(b"obj", big)
            ok = tag == reference_tag(TOKEN, b"obj", big, nonce)
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    try:
        import select

        ready, _, _ = select.select([read], [], [], 60)
        answer = os.read(read, 1) if ready else b""
    finally:
        os.close(read)
        if not answer:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert answer == b"1", "the forked child could not tag large data (hung or wrong)"


# -- end to end, every node-server transport --------------------------------------------


@pytest.mark.parametrize("fixture", ["zmq_connector", "ucx_connector", "margo_connector"])
def test_chunked_tags_end_to_end(
    fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warpstore.exceptions import AuthenticationError

    c = request.getfixturevalue(fixture)
    c.shared_memory = False  # the socket / RDMA path, as from another node: tags apply
    data = os.urandom(CHUNKED_MIN + CHUNK_SIZE // 2)
    key = c.put(data)
    assert bytes(c.get(key)) == data
    # a producer whose tag is not of the data it sent (what altered data in flight or in
    # store looks like to the consumer): the server stores it, the consumer refuses it
    honest_tag = DataSealer.tag

    def tag_of_other_data(
        self: DataSealer, key: Any, data: Any, sent: Any = None
    ) -> tuple[bytes, bytes]:
        view = memoryview(data).cast("B") if data is not None else None
        if view is not None and len(view) >= CHUNKED_MIN:
            return honest_tag(self, key, _flip(bytes(view), 2 * CHUNK_SIZE + 1), sent)
        return honest_tag(self, key, data, sent)

    monkeypatch.setattr(DataSealer, "tag", tag_of_other_data)
    bad = c.put(data)
    monkeypatch.setattr(DataSealer, "tag", honest_tag)
    with pytest.raises(AuthenticationError, match="failed authentication"):
        c.get(bad)
    assert bytes(c.get(c.put(data))) == data


# -- tag after the data (ZeroMQ's TAG_FOLLOWS + SEAL), at the sessions' level --------------


def _pair(server: Any = None) -> tuple[Any, Any]:
    """A server's sessions and one client session opened with it (a new server by default)."""
    from warpstore.server.auth import ClientSession, ServerAuth

    server, client = server or ServerAuth(TOKEN), ClientSession(TOKEN, "tcp://test")
    h, none = server.check(client.hello_request(), b"", None)
    assert none is None
    header, data = server.hello_reply(h)
    client.accept_hello(header, b"", data)
    return server, client


def _announce(server: Any, client: Any, key: bytes, data: bytes) -> tuple[int, bytes, Any]:
    counter, header = client.request(1, key, data, staged=True, tag_follows=True)
    h, session = server.check(header, key, None, tag_follows=True)
    server.stage(session, h, key)
    h, session = server.check_staged_data(header, key, data)
    server.hold(session, h, key, data)
    return counter, header, session


def test_a_continue_promises_its_room_until_the_data_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The room a CONTINUE promised counts against the memory limit until the data is in."""
    from warpstore.server import auth

    server, client = _pair()
    data = os.urandom(3 << 20)
    counter, header = client.request(1, b"a", data, staged=True, tag_follows=True)
    h, session = server.check(header, b"a", None, tag_follows=True)
    server.stage(session, h, b"a")
    assert server.held_bytes() == len(data)  # promised, nothing received yet
    h, session = server.check_staged_data(header, b"a", data)
    assert server.held_bytes() == 0  # the promise is kept: the data itself is here ...
    server.hold(session, h, b"a", data)
    assert server.held_bytes() == len(data)  # ... and counts while it waits for its SEAL
    server.check_seal(client.seal(counter, b"a", data), b"a")
    assert server.held_bytes() == 0
    # a promise whose data never comes (the client died) is forgotten after HELD_S
    _, header = client.request(1, b"b", data, staged=True, tag_follows=True)
    h, session = server.check(header, b"b", None, tag_follows=True)
    server.stage(session, h, b"b")
    assert server.held_bytes() == len(data)
    later = auth.time.monotonic() + auth.HELD_S + 1
    monkeypatch.setattr(auth.time, "monotonic", lambda: later)
    server.expire_held()
    assert server.held_bytes() == 0


def test_held_data_is_taken_once_with_its_own_seal() -> None:
    from warpstore.server.auth import Refused
    from warpstore.server.protocol import Op, Status, parse_header

    server, client = _pair()
    data = os.urandom(CHUNKED_MIN + 7)
    counter, header, _ = _announce(server, client, b"obj", data)
    assert parse_header(header).data_tag_pair == NO_DATA_TAG  # the tag is not made yet
    seal = client.seal(counter, b"obj", data)
    bad = bytearray(seal)
    bad[60] ^= 1  # the data tag: the header's tag no longer verifies
    with pytest.raises(Refused) as refused:
        server.check_seal(bytes(bad), b"obj")
    assert refused.value.status == Status.AUTH_FAILED
    with pytest.raises(Refused) as refused:
        server.check_seal(seal, b"obk")  # another key than the header's tag covers
    assert refused.value.status == Status.AUTH_FAILED
    h, _, held = server.check_seal(seal, b"obj")
    assert held is data and h.op == Op.PUT and h.counter == counter
    assert client.data.verify(b"obj", held, *h.data_tag_pair)
    with pytest.raises(Refused) as refused:
        server.check_seal(seal, b"obj")  # replayed: nothing is held any more
    assert refused.value.status == Status.REPLAYED
    # a SEAL for a PUT whose data never came, or as a request, is refused
    never, _ = client.request(Op.PUT, b"k", data, staged=True, tag_follows=True)
    with pytest.raises(Refused):
        server.check_seal(client.seal(never, b"k", data), b"k")
    with pytest.raises(Refused) as refused:
        server.check(client.seal(client.next_counter(), b"k", data), b"k", None)
    assert refused.value.status == Status.BAD_REQUEST


def test_tag_follows_only_where_the_transport_takes_a_seal() -> None:
    from warpstore.server.auth import Refused
    from warpstore.server.protocol import Status

    server, client = _pair()
    _, header = client.request(1, b"k", b"x" * 100, staged=True, tag_follows=True)
    with pytest.raises(Refused) as refused:  # UCX and Margo servers: no SEAL
        server.check(header, b"k", None)
    assert refused.value.status == Status.BAD_REQUEST
    _, header = client.request(1, b"k", b"x" * 100, tag_follows=True)  # not staged
    with pytest.raises(Refused):
        server.check(header, b"k", b"x" * 100, tag_follows=True)


def test_held_data_is_bounded_per_session_and_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from warpstore.server import auth
    from warpstore.server.auth import Refused

    server, client = _pair()
    # many clients whose data messages all arrive before any of their SEALs: none dropped
    others = [_pair(server)[1] for _ in range(12)]
    pending = [_announce(server, o, b"o", b"data") for o in others]
    for o, (counter, _, _) in zip(others, pending, strict=True):
        server.check_seal(o.seal(counter, b"o", b"data"), b"o")
    # one session holds at most HELD_PER_SESSION: its oldest goes first
    n = auth.HELD_PER_SESSION + 1
    held = [_announce(server, client, b"k%d" % i, b"d%d" % i) for i in range(n)]
    with pytest.raises(Refused):
        server.check_seal(client.seal(held[0][0], b"k0", b"d0"), b"k0")
    counter = held[1][0]
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    server._held = type(server._held)(
        (k, (key, data, now[0])) for k, (key, data, _) in server._held.items()
    )
    now[0] += auth.HELD_S + 1  # its client went away: the server's idle sweep drops it
    server.expire_held()
    assert not server._held
    with pytest.raises(Refused):
        server.check_seal(client.seal(counter, b"k1", b"d1"), b"k1")


def test_concurrent_large_zmq_puts_from_many_clients(zmq_connector: Any) -> None:
    """Data messages of several clients reach the server before their SEALs: none is lost."""
    from warpstore.connectors.zmq import ZMQConnector

    zmq_connector.shared_memory = False
    zmq_connector.put(b"start the server")
    clients = [ZMQConnector(timeout=30, shared_memory=False) for _ in range(6)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(clients))

    def work(i: int, c: Any) -> None:
        try:
            barrier.wait(30)
            for j in range(3):
                data = bytes([i, j]) * (CHUNK_SIZE + 3)
                assert bytes(c.get(c.put(data))) == data
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for c in clients:
            c.close()
    assert not errors, errors


def test_held_data_counts_against_the_zmq_servers_memory_limit() -> None:
    """Held data is stored once its SEAL comes: another PUT may not take its room meanwhile."""
    from warpstore.server.zmq_server import ZMQServer

    server = ZMQServer(TOKEN, "127.0.0.1", None, "node-a", memory_limit=1_000_000)
    try:
        auth, client = _pair(server.auth)
        assert server.core.table.can_hold(b"other", 500_000)
        counter, _, _ = _announce(auth, client, b"held", b"h" * 600_000)
        assert auth.held_bytes() == 600_000
        assert not server.core.table.can_hold(b"other", 500_000)  # 600 KB + 500 KB > 1 MB
        auth.check_seal(client.seal(counter, b"held", b"h" * 600_000), b"held")
        assert auth.held_bytes() == 0 and server.core.table.can_hold(b"other", 500_000)
    finally:
        server.close()
