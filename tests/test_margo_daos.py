"""Margo and DAOS paths, through their doubles (pymargo and pydaos cannot be installed here).

Margo: the node server and client run their real code on ``tests/margo_double.py``,
a double of the one adapter module that calls pymargo. DAOS: the connector and
its adapter run their real code on ``tests/pydaos_double.py``, a double of pydaos.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import numpy as np
import pytest

from tests.margo_double import DoubleEngine
from warpstore.exceptions import AuthenticationError, ConnectorError, StoreFullError
from warpstore.server.auth import ClientSession
from warpstore.server.margo_server import RPC_NAME, parse_margo_address
from warpstore.server.protocol import (
    EAGER_MAX,
    HEADER_SIZE,
    Kind,
    Op,
    Status,
    pack_header,
    parse_header,
    verify,
)

# -- Margo -----------------------------------------------------------------------------


def test_server_registers_each_object_once(margo_server: Any, margo_connector: Any) -> None:
    margo_connector.shared_memory = False  # the RDMA path, as from another node
    big = np.arange(2 << 20, dtype=np.uint8)
    key = margo_connector.put(big)
    server = margo_server.server
    after_put = server.registrations
    pulls = DoubleEngine.pulls
    for _ in range(10):
        assert np.array_equal(np.frombuffer(margo_connector.get(key), np.uint8), big)
    assert server.registrations == after_put  # reused, not re-registered per GET
    assert DoubleEngine.pulls == pulls + 10  # each GET is one RDMA pull by the client
    small = margo_connector.put(b"x" * EAGER_MAX)  # inline: no bulk at all
    regs = server.registrations
    assert bytes(margo_connector.get(small)) == b"x" * EAGER_MAX
    assert server.registrations == regs


def test_large_put_refused_before_any_pull(margo_server: Any, margo_connector: Any) -> None:
    margo_server.server.core.table.memory_limit = 1_000_000
    pulls = DoubleEngine.pulls
    with pytest.raises(StoreFullError) as info:
        margo_connector.put(b"z" * 2_000_000)
    assert DoubleEngine.pulls == pulls  # the server never fetched the data it could not keep
    assert "2000000" in str(info.value) and margo_server.address in str(info.value)
    assert bytes(margo_connector.get(margo_connector.put(b"fits"))) == b"fits"


def _margo_session(engine: Any, mercury: str, token: bytes, address: str) -> ClientSession:
    session = ClientSession(token, address)
    raw = engine.call(mercury, RPC_NAME, session.hello_request(), 5.0)
    session.accept_hello(raw[:HEADER_SIZE], b"", raw[HEADER_SIZE:])
    return session


def test_evicted_object_stays_pullable_for_a_grace_period(
    margo_server: Any, margo_connector: Any
) -> None:
    key = margo_connector.put(np.ones(1 << 20, dtype=np.uint8))
    mercury = parse_margo_address(key.address)
    from warpstore.server.margo_client import _engine

    engine, _ = _engine("ofi+tcp")
    session = _margo_session(engine, mercury, margo_connector._token, key.address)
    _, header = session.request(Op.GET, key.object_id.encode(), None)
    raw = engine.call(mercury, RPC_NAME, header + key.object_id.encode(), 5.0)
    margo_connector.evict(key)  # evicted between the reply and the client's pull
    descriptor = raw[HEADER_SIZE + len(key.object_id) :]
    buffer = np.zeros(1 << 20, dtype=np.uint8)
    engine.pull(mercury, descriptor, engine.expose(buffer, writable=True), 1 << 20)
    assert buffer.sum() == 1 << 20
    # the tag in the reply's header covers the pulled data
    assert verify(session.sealer, raw[:HEADER_SIZE], key.object_id.encode(), buffer)


def test_wrong_token_and_malformed_requests(margo_server: Any, margo_connector: Any) -> None:
    from warpstore.connectors.margo import MargoConnector
    from warpstore.server.margo_client import _engine

    key = margo_connector.put(b"secret")
    intruder = MargoConnector(token="wrong", protocol="ofi+tcp", timeout=5, spawn=False)
    with pytest.raises(AuthenticationError, match="refused our token"):
        intruder.get(key)
    mercury = parse_margo_address(key.address)
    engine, _ = _engine("ofi+tcp")
    token = margo_connector._token
    s = _margo_session(engine, mercury, token, key.address)
    assert s.sealer is not None
    bad_requests = [
        b"",
        b"short",
        b"WSv2" + b"\x00" * 200,
        pack_header(s.sealer, Op.GET, session=s.sealer.session, key=b"k" * 3000),
        s.request(Op.PUT, b"k", b"x" * 10)[1] + b"k" + b"123",
        s.request(Op.PUT, b"k", b"x" * (EAGER_MAX + 1))[1] + b"k",  # unstaged, too large
        s.request(Op.PUT, b"k", b"x" * (EAGER_MAX + 1), staged=True)[1] + b"k" + b"nonsense",
    ]
    put_header = s.request(Op.PUT, b"k", b"v")[1]  # the newest request of the session
    bad_requests += [
        put_header + b"k" + b"v",
        put_header + b"k" + b"v",  # the same PUT replayed
        bytes(put_header[:6]) + bytes([Kind.REPLY]) + put_header[7:] + b"k" + b"v",
    ]
    seen = []
    for bad in bad_requests:
        raw = engine.call(mercury, RPC_NAME, bad, 5.0)
        h = parse_header(raw[:HEADER_SIZE])
        if h.kind == Kind.REFUSAL:  # signed over the server's own fields only
            assert verify(s.hello, raw[:HEADER_SIZE], b"", raw[HEADER_SIZE:])
        else:
            end = HEADER_SIZE + h.key_len
            assert verify(s.sealer, raw[:HEADER_SIZE], raw[HEADER_SIZE:end], raw[end:] or None)
        seen.append(Status(h.status))
    assert seen == [
        Status.BAD_REQUEST,
        Status.BAD_REQUEST,
        Status.BAD_REQUEST,
        Status.BAD_REQUEST,
        Status.BAD_REQUEST,
        Status.BAD_REQUEST,
        Status.BAD_REQUEST,
        Status.OK,
        Status.REPLAYED,
        Status.BAD_REQUEST,
    ]
    assert bytes(margo_connector.get(key)) == b"secret"  # still serving, nothing lost
    errors = margo_server.server.core.errors
    assert errors["auth_failed"] == 1  # the intruder's HELLO
    assert errors["replayed"] == 1


def test_elastic_server_falls_back_from_cxi_to_tcp(
    margo_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from warpstore.connectors.margo import MargoConnector

    c = MargoConnector(protocol="cxi", spawn=False)
    with caplog.at_level("WARNING"):
        assert c.settings().extra_args == ["--protocol", "ofi+tcp"]
    assert "without a Slingshot VNI" in caplog.text and "instead of cxi" in caplog.text
    verbs = MargoConnector(protocol="ofi+verbs", spawn=False)
    assert verbs.settings().extra_args[-1] == "ofi+verbs"
    verbs.close()
    c.close()


def test_real_adapter_without_pymargo_says_how_to_install() -> None:
    if importlib.util.find_spec("pymargo") is not None:
        pytest.skip("pymargo is installed")
    from warpstore.server.margo_adapter import MargoEngine

    with pytest.raises(ConnectorError, match="spack install py-mochi-margo"):
        MargoEngine("tcp", server=False)


# -- DAOS ------------------------------------------------------------------------------


def test_missing_container_says_how_to_make_one(pydaos_double: Any) -> None:
    from warpstore.connectors.daos import DAOSConnector

    with pytest.raises(ConnectorError) as info:
        DAOSConnector("tank", "nosuch")
    msg = str(info.value)
    assert "'nosuch'" in msg and "'tank'" in msg
    assert "daos cont create tank nosuch --type PYTHON" in msg
    with pytest.raises(ConnectorError, match="pool"):
        DAOSConnector("nopool", "objs")


def test_without_pydaos_says_where_it_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydaos", None)  # import fails
    from warpstore.connectors.daos import DAOSConnector

    with pytest.raises(ConnectorError, match="module load daos"):
        DAOSConnector("tank", "objs")


def test_large_values_are_read_in_one_round_trip(daos_connector: Any, pydaos_double: Any) -> None:
    data = b"d" * (5 << 20)  # five times pydaos's default 1 MiB value buffer
    key = daos_connector.put(data)
    before = pydaos_double.round_trips
    assert bytes(daos_connector.get(key)) == data
    assert pydaos_double.round_trips - before == 1
    late = daos_connector.new_key()  # size unknown when the key was made
    daos_connector.set(late, data)
    before = pydaos_double.round_trips
    assert bytes(daos_connector.get(late)) == data
    assert pydaos_double.round_trips - before == 2  # the documented cost of unsized keys


def test_batch_get_with_missing_keys(daos_connector: Any, pydaos_double: Any) -> None:
    keys = daos_connector.put_batch([b"a", b"", b"c" * 3_000_000])
    daos_connector.evict(keys[0])
    got = daos_connector.get_batch(keys)
    assert got[0] is None and bytes(got[1]) == b"" and bytes(got[2]) == b"c" * 3_000_000


def test_two_processes_share_a_namespace_and_clear(pydaos_double: Any) -> None:
    from warpstore.connectors.daos import DAOSConnector

    a = DAOSConnector("tank", "objs", "shared", clear=True)
    b = DAOSConnector("tank", "objs", "shared")  # finds the dictionary a created
    key = a.put(b"from a")
    assert bytes(b.get(key)) == b"from a"
    kept = b.put(b"from b")
    a.close()  # clear: removes what a put, not what b put
    assert b.get(key) is None and bytes(b.get(kept)) == b"from b"
    b.close()
