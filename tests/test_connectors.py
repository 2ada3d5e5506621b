"""Every foundation connector: the Protocol's operations, errors and batch paths."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from warpstore.connectors.file import FileConnector, FileKey
from warpstore.connectors.protocols import (
    Connector,
    DeferrableConnector,
    connector_from_path,
    connector_path,
)
from warpstore.connectors.redis import RedisConnector, RedisKey
from warpstore.exceptions import ConnectorConnectionError, ConnectorError, StoreFullError


def test_implements_protocols(connector: Any) -> None:
    assert isinstance(connector, Connector)
    assert isinstance(connector, DeferrableConnector)


@pytest.mark.parametrize("size", [0, 1, 1000, 3 * 1024 * 1024])
def test_put_get_exists_evict(connector: Any, size: int) -> None:
    data = os.urandom(size)
    key = connector.put(data)
    assert connector.exists(key)
    assert bytes(connector.get(key)) == data
    connector.evict(key)
    assert not connector.exists(key)
    assert connector.get(key) is None
    connector.evict(key)  # evicting twice is fine


def test_keys_are_small_picklable_namedtuples(connector: Any) -> None:
    key = connector.put(b"x")
    assert isinstance(key, tuple) and hasattr(key, "_fields")
    assert pickle.loads(pickle.dumps(key)) == key
    assert len(pickle.dumps(key)) < 200


def test_batches(connector: Any) -> None:
    objs = [os.urandom(n) for n in (0, 10, 1000)]
    keys = connector.put_batch(objs)
    assert len(set(keys)) == 3
    assert [bytes(b) for b in connector.get_batch(keys)] == objs
    connector.evict(keys[1])
    got = connector.get_batch(keys)
    assert got[1] is None and bytes(got[2]) == objs[2]
    assert connector.put_batch([]) == [] and connector.get_batch([]) == []


def test_new_key_then_set(connector: Any) -> None:
    key = connector.new_key()
    assert not connector.exists(key)
    connector.set(key, b"later")
    assert bytes(connector.get(key)) == b"later"


def test_config_round_trip(connector: Any) -> None:
    key = connector.put(b"shared")
    other = connector_from_path(connector_path(connector), connector.config())
    try:
        assert bytes(other.get(key)) == b"shared"
    finally:
        other.close()


def test_close_is_idempotent(connector: Any) -> None:
    connector.close()
    connector.close()


# -- FileConnector ------------------------------------------------------------


def _writer(store_dir: str, name: str, fill: int, rounds: int) -> None:
    c = FileConnector(store_dir)
    for _ in range(rounds):
        c.set(FileKey(name), bytes([fill]) * (256 * 1024))


def test_file_many_writers_never_tear(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), "same", i, 30)) for i in range(4)]
    for p in procs:
        p.start()
    reader = FileConnector(tmp_path)
    seen = 0
    try:
        while any(p.is_alive() for p in procs):
            data = reader.get(FileKey("same"))
            if data is not None:
                assert len(data) == 256 * 1024
                assert len(set(data)) == 1  # all bytes from one writer: no torn write
                seen += 1
    finally:
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert seen >= 1 or reader.get(FileKey("same")) is not None


def test_file_rejects_path_traversal(tmp_path: Path) -> None:
    c = FileConnector(tmp_path)
    with pytest.raises(ValueError):
        c.get(FileKey("../etc/passwd"))


def test_file_clear_on_close(tmp_path: Path) -> None:
    c = FileConnector(tmp_path / "s", clear=True)
    c.put(b"x")
    c.close()
    assert not (tmp_path / "s").exists()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_file_full_disk_is_store_full_and_keeps_data(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "256k") as d:
        c = FileConnector(d)
        kept = c.put(b"k" * 1000)
        with pytest.raises(StoreFullError, match="no space left"):
            c.put(b"x" * (1024 * 1024))
        assert bytes(c.get(kept)) == b"k" * 1000  # nothing already stored is lost
        assert [f for f in os.listdir(d)] == [kept.filename]  # no temp file left


def test_file_read_only_is_clear_error(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "1m") as d:
        c = FileConnector(d)
        kept = c.put(b"before")
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        with pytest.raises(ConnectorError, match="read-only"):
            c.put(b"after")
        assert bytes(c.get(kept)) == b"before"


# -- RedisConnector -----------------------------------------------------------


def test_redis_url_form(redis_server: tuple[str, int]) -> None:
    host, port = redis_server
    c = RedisConnector(f"redis://{host}:{port}/0")
    try:
        key = c.put(b"via url")
        assert isinstance(key, RedisKey)
        assert c.get(key) == b"via url"
        assert RedisConnector.from_config(c.config()).get(key) == b"via url"
    finally:
        c.close()
    with pytest.raises(ValueError):
        RedisConnector(f"redis://{host}:{port}", port)


def test_redis_down_names_host_and_port() -> None:
    port = free_port()
    c = RedisConnector("127.0.0.1", port, socket_connect_timeout=1)
    with pytest.raises(ConnectorConnectionError, match=f"127.0.0.1:{port}"):
        c.put(b"x")
    with pytest.raises(ConnectionError):  # also a builtin ConnectionError
        c.get(RedisKey("k"))


def test_redis_clear_removes_only_its_prefix(redis_server: tuple[str, int]) -> None:
    host, port = redis_server
    a = RedisConnector(host, port, prefix="clear-a:", clear=True)
    b = RedisConnector(host, port, prefix="clear-b:")
    ka, kb = a.put(b"a"), b.put(b"b")
    a.close()
    assert not b.exists(ka) and b.exists(kb)
    b.close()
