"""Connector-specific behaviour (the shared contract is in tests/test_conformance.py)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from warpstore.connectors.file import FileConnector, FileKey
from warpstore.connectors.redis import RedisConnector, RedisKey
from warpstore.exceptions import ConnectorConnectionError, ConnectorError, StoreFullError

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
