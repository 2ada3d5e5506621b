"""MultiConnector: routing by priority, size, tags and host; keys that remember the route."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path
from typing import Any

import pytest

from warpstore.connectors.file import FileConnector
from warpstore.connectors.local import LocalConnector
from warpstore.connectors.multi import MultiConnector, MultiKey, NoPolicyError, Policy
from warpstore.proxy import get_factory
from warpstore.store import Store, unregister_store


@pytest.fixture
def multi(tmp_path: Path) -> Any:
    m = MultiConnector(
        {
            "memory": (LocalConnector(), Policy(priority=3, max_size_bytes=1000)),
            "disk": (FileConnector(tmp_path / "disk"), Policy(priority=1)),
            "remote": (
                FileConnector(tmp_path / "remote"),
                Policy(priority=5, superset_tags=["remote"]),
            ),
            "gpu-only": (
                LocalConnector(),
                Policy(priority=9, subset_tags=["gpu"], host_pattern=r"^gpu-node\d+$"),
            ),
        }
    )
    yield m
    m.close()


def test_size_routes_small_to_memory_large_to_disk(multi: MultiConnector) -> None:
    small, large = multi.put(b"s" * 1000), multi.put(b"l" * 1001)
    assert small.connector_name == "memory" and large.connector_name == "disk"
    assert bytes(multi.get(large)) == b"l" * 1001
    assert isinstance(small, MultiKey) and pickle.loads(pickle.dumps(small)) == small


def test_tags_pick_the_remote_route_and_priority_wins(multi: MultiConnector) -> None:
    key = multi.put(b"x", superset_tags=["remote", "other"])
    assert key.connector_name == "remote"  # priority 5 beats memory's 3
    assert multi.put(b"x", superset_tags=["other"]).connector_name == "memory"


def test_subset_tags_and_host_pattern(multi: MultiConnector) -> None:
    assert multi.choose(10, subset_tags=["gpu"], host="gpu-node7") == "gpu-only"
    # on another host the gpu route is closed; an object tagged "gpu" fits no other subset
    with pytest.raises(NoPolicyError) as info:
        multi.choose(10, subset_tags=["gpu"], host="login1")
    msg = str(info.value)
    assert "10 bytes" in msg and "subset_tags=['gpu']" in msg and "login1" in msg
    assert multi.choose(10, host=socket.gethostname()) == "memory"


def test_no_policy_admits_is_a_clear_error(tmp_path: Path) -> None:
    m = MultiConnector({"tiny": (LocalConnector(), Policy(max_size_bytes=10))})
    with pytest.raises(NoPolicyError, match="11 bytes"):
        m.put(b"x" * 11)


def test_bad_policies_fail_early() -> None:
    with pytest.raises(ValueError, match="below"):
        Policy(min_size_bytes=10, max_size_bytes=5)
    with pytest.raises(Exception, match=r"unterminated|missing"):
        Policy(host_pattern="[")
    with pytest.raises(ValueError, match="at least one"):
        MultiConnector({})


def test_batches_split_by_route(multi: MultiConnector) -> None:
    objs = [b"a", b"b" * 5000, b"c"]
    keys = multi.put_batch(objs)
    assert [k.connector_name for k in keys] == ["memory", "disk", "memory"]
    assert [bytes(b) for b in multi.get_batch(keys)] == objs


def test_unknown_route_in_a_key(multi: MultiConnector) -> None:
    with pytest.raises(Exception, match="nowhere"):
        multi.get(MultiKey("nowhere", "k"))


def test_store_passes_tags_and_proxies_resolve_from_config(multi: MultiConnector) -> None:
    store: Store[Any] = Store("multi-store", multi, populate_target=False)
    try:
        p = store.proxy([1, 2, 3] * 1000, superset_tags=["remote"])
        assert get_factory(p).key.connector_name == "remote"
        rebuilt = MultiConnector.from_config(multi.config())
        key = get_factory(p).key
        assert bytes(rebuilt.get(key)) == bytes(multi.get(key))
        assert pickle.loads(pickle.dumps(p)) == [1, 2, 3] * 1000
    finally:
        store.close()
        unregister_store("multi-store")
