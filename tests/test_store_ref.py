"""Ownership and borrowing (warpstore.store.ref, warpstore.store.scopes), from the
original's object-lifetimes guide: an owner evicts its object when collected, borrows
follow Rust's rules, pickling moves a reference, scopes.submit releases borrows."""

from __future__ import annotations

import copy
import gc
import multiprocessing as mp
import pickle
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from warpstore.connectors.file import FileConnector
from warpstore.connectors.local import LocalConnector
from warpstore.proxy import Proxy, is_resolved
from warpstore.store import Store, unregister_store
from warpstore.store.ref import (
    MutableBorrowError,
    OwnedProxy,
    ReferenceInvalidError,
    ReferenceNotOwnedError,
    RefMutProxy,
    RefProxy,
    borrow,
    clone,
    into_owned,
    mut_borrow,
    update,
)
from warpstore.store.scopes import mark_refs_out_of_scope, submit
from warpstore.store.utils import get_key


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[Store[Any]]:
    s: Store[Any] = Store(f"ref-{request.node.name}", LocalConnector(), cache_size=0)
    yield s
    s.close()
    unregister_store(s)


def test_owned_proxy_is_the_object_and_evicts_when_collected(store: Store[Any]) -> None:
    owned = store.owned_proxy([1, 2, 3])
    assert type(owned) is OwnedProxy
    key = get_key(owned)
    assert owned == [1, 2, 3] and isinstance(owned, list)
    assert store.exists(key)
    del owned
    gc.collect()
    assert not store.exists(key)


def test_unresolved_owner_evicts_without_fetching(store: Store[Any]) -> None:
    owned = store.owned_proxy("x", populate_target=False)
    key = get_key(owned)
    assert not is_resolved(owned)
    gets = []
    real_get = store.connector.get
    store.connector.get = lambda k: gets.append(k) or real_get(k)  # type: ignore[method-assign]
    del owned
    gc.collect()
    assert not store.exists(key) and gets == []


def test_borrow_rules(store: Store[Any]) -> None:
    owned = store.owned_proxy({"a": 1})
    r1 = borrow(owned)
    r2 = borrow(owned)
    assert type(r1) is RefProxy and r1 == {"a": 1} and r2["a"] == 1
    with pytest.raises(MutableBorrowError):
        mut_borrow(owned)
    with pytest.raises(MutableBorrowError):
        update(owned)
    with pytest.raises(RuntimeError, match="cannot safely delete"):
        owned.__del__()
    del r1, r2
    gc.collect()
    m = mut_borrow(owned)
    assert type(m) is RefMutProxy
    with pytest.raises(MutableBorrowError):
        borrow(owned)
    with pytest.raises(MutableBorrowError):
        mut_borrow(owned)
    m["a"] = 2
    update(m)
    del m
    gc.collect()
    key = get_key(owned)
    assert store.get(key) == {"a": 2}
    with pytest.raises(ReferenceNotOwnedError):
        borrow(borrow(owned))  # type: ignore[arg-type]
    with pytest.raises(ReferenceNotOwnedError):
        update(borrow(owned))  # type: ignore[arg-type]


def test_borrow_keeps_owner_alive(store: Store[Any]) -> None:
    owned = store.owned_proxy("kept")
    key = get_key(owned)
    ref = borrow(owned)
    del owned
    gc.collect()
    assert store.exists(key) and ref == "kept"
    del ref
    gc.collect()
    assert not store.exists(key)


def test_borrow_of_unresolved_owner_does_not_resolve(store: Store[Any]) -> None:
    owned = store.owned_proxy("v", populate_target=False)
    ref = mut_borrow(owned)
    assert not is_resolved(owned) and not is_resolved(ref)
    assert ref == "v"
    assert not is_resolved(owned)


def test_clone_and_update(store: Store[Any]) -> None:
    owned = store.owned_proxy([1, 2, 3])
    cloned = clone(owned)
    assert type(cloned) is OwnedProxy and get_key(cloned) != get_key(owned)
    del owned
    gc.collect()
    assert cloned == [1, 2, 3]
    cloned.append(4)
    update(cloned)
    assert store.get(get_key(cloned)) == [1, 2, 3, 4]
    with pytest.raises(ReferenceNotOwnedError):
        clone(store.proxy([0]))  # type: ignore[arg-type]


def test_update_of_unresolved_proxy_writes_nothing(store: Store[Any]) -> None:
    owned = store.owned_proxy([1], populate_target=False)
    update(owned)
    assert owned == [1]


def test_into_owned_takes_over_eviction(store: Store[Any]) -> None:
    plain = store.proxy("mine", evict=True)
    owned = into_owned(plain)
    key = get_key(owned)
    assert is_resolved(owned) and owned == "mine"
    assert store.exists(key)  # evict flag cleared: resolving does not evict
    with pytest.raises(ValueError):
        into_owned(owned)
    del owned
    gc.collect()
    assert not store.exists(key)


def test_pickling_moves_the_reference(store: Store[Any]) -> None:
    owned = store.owned_proxy("moved")
    key = get_key(owned)
    blob = pickle.dumps(owned)
    with pytest.raises(ReferenceInvalidError):
        str(owned)  # resolved before, but moved away now
    del owned
    gc.collect()
    assert store.exists(key)  # the moved-away copy does not evict
    again = pickle.loads(blob)
    assert type(again) is OwnedProxy and not is_resolved(again)
    assert again == "moved"
    del again
    gc.collect()
    assert not store.exists(key)  # the new owner does


def test_copy_is_refused(store: Store[Any]) -> None:
    owned = store.owned_proxy([1])
    with pytest.raises(NotImplementedError):
        copy.copy(owned)
    with pytest.raises(NotImplementedError):
        copy.deepcopy(owned)


def test_mark_refs_out_of_scope(store: Store[Any]) -> None:
    owned = store.owned_proxy([5])
    ref = borrow(owned)
    mark_refs_out_of_scope(ref)
    mark_refs_out_of_scope(ref)  # twice is harmless
    with pytest.raises(ReferenceInvalidError):
        len(ref)
    mut_borrow(owned)  # the borrow was released
    orphan = pickle.loads(pickle.dumps(borrow(clone(owned))))
    with pytest.raises(RuntimeError, match="no owner"):
        mark_refs_out_of_scope(orphan)


def _total(values: Any) -> int:
    return sum(values)


def test_submit_releases_borrows_of_a_process_pool_task(tmp_path: Path) -> None:
    with Store("ref-pool", FileConnector(tmp_path / "objs")) as store:
        owned = store.owned_proxy([1, 2, 3])
        borrowed = borrow(owned)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            future: Future[int] = submit(pool.submit, args=(_total, borrowed))
            assert future.result(timeout=120) == 6
        # the task's borrow is released once its future is done
        m = mut_borrow(owned)
        assert m == [1, 2, 3]
        del m, borrowed
        key = get_key(owned)
        del owned
        gc.collect()
        assert not store.exists(key)


def test_owned_proxy_of_none_is_refused_or_skipped(store: Store[Any]) -> None:
    from warpstore.store.exceptions import NonProxiableTypeError

    with pytest.raises(NonProxiableTypeError):
        store.owned_proxy(None)
    assert store.owned_proxy(True, skip_nonproxiable=True) is True
    assert isinstance(store.owned_proxy(1), Proxy)


def test_owner_outliving_its_closed_store_does_not_rebuild_it(tmp_path: Path) -> None:
    from warpstore.store import get_store

    store: Store[Any] = Store("ref-closed", FileConnector(tmp_path / "objs"))
    owned = store.owned_proxy("late")
    store.close()
    assert not (tmp_path / "objs").exists()
    del owned
    gc.collect()
    assert not (tmp_path / "objs").exists()  # not recreated by a rebuilt store
    assert get_store("ref-closed") is None
    # a new store of the same name is used normally again
    with Store("ref-closed", FileConnector(tmp_path / "objs2"), register=True) as again:
        o = again.owned_proxy("x")
        key = get_key(o)
        del o
        gc.collect()
        assert not again.exists(key)


def test_explicit_registration_replaces_an_implicit_one() -> None:
    from warpstore.store import get_store, register_store

    first: Store[Any] = Store("ref-implicit", LocalConnector())
    first.proxy("registers first implicitly")
    second: Store[Any] = Store("ref-implicit", LocalConnector())
    register_store(second)
    assert get_store("ref-implicit") is second
    second.close()
    first.close()


def test_pickling_an_unresolved_owner_does_not_fetch(store: Store[Any]) -> None:
    owned = store.owned_proxy("cold", populate_target=False)
    gets: list[Any] = []
    real_get = store.connector.get
    store.connector.get = lambda k: gets.append(k) or real_get(k)  # type: ignore[method-assign]
    blob = pickle.dumps(owned)
    assert gets == [] and not is_resolved(owned)
    with pytest.raises(ReferenceInvalidError):
        len(owned)
    assert gets == []
    moved = pickle.loads(blob)
    assert moved == "cold"
