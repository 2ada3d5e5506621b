"""Ownership-aware task submission (the original's ``proxystore.store.scopes``).

A borrowed reference sent to a task in another process cannot tell its owner
when the task is done with it. :func:`submit` wraps any ``submit``-like call
(``Executor.submit``, a Parsl app, a FaaS client) and, when the returned
future completes, releases the borrows that were passed, so the owner can be
mutated or dropped again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from warpstore.store.ref import RefMutProxy, RefProxy, _invalidate, _is, _state

__all__ = ["FutureWithCallback", "mark_refs_out_of_scope", "submit"]


@runtime_checkable
class FutureWithCallback(Protocol):
    """Any future that accepts done-callbacks."""

    def add_done_callback(self, callback: Callable[[Any], Any]) -> None: ...


FutureT = TypeVar("FutureT", bound=FutureWithCallback)


def mark_refs_out_of_scope(*refs: RefProxy[Any] | RefMutProxy[Any]) -> None:
    """Release borrows: decrement their owner's count, drop the link, invalidate them.

    A reference already released is skipped. A reference that was pickled
    (sent to the task) is still released here: the owner link, not the
    validity flag, says whether it still counts.

    Raises:
        RuntimeError: a reference has no owner (it was unpickled elsewhere).
    """
    for ref in refs:
        state = _state(ref)
        owner = state.owner
        if owner is None:
            if not state.valid:
                continue  # already released
            raise RuntimeError(
                f"cannot mark the reference to key {state.key!r} out of scope: "
                "it has no owner in this process"
            )
        owner_state = _state(owner)
        if _is(ref, RefProxy):
            owner_state.ref_count = max(0, owner_state.ref_count - 1)
        elif _is(ref, RefMutProxy):
            owner_state.ref_mut_count = 0
        else:
            raise TypeError(f"not a borrowed reference: {type(ref).__name__}")
        state.owner = None
        _invalidate(ref)


def _is_ref(obj: Any) -> bool:
    return type(obj) in (RefProxy, RefMutProxy)


def submit(
    submit_func: Callable[..., FutureT],
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    register_custom_refs: Iterable[Any] = (),
) -> FutureT:
    """Call ``submit_func(*args, **kwargs)`` and release the borrows passed once it completes.

    Borrowed references among ``args``, the values of ``kwargs`` and
    ``register_custom_refs`` (for references nested inside containers) are
    released by a done-callback on the returned future.

    Example::

        owned = store.owned_proxy([1, 2, 3])
        with ProcessPoolExecutor() as pool:
            future = submit(pool.submit, args=(sum, borrow(owned)))
            assert future.result() == 6
        mut_borrow(owned)  # allowed again: the task's borrow was released
    """
    kwargs = {} if kwargs is None else kwargs
    refs = [r for r in register_custom_refs if _is_ref(r)]
    refs.extend(a for a in args if _is_ref(a))
    refs.extend(v for v in kwargs.values() if _is_ref(v))
    future = submit_func(*args, **kwargs)

    def release(_: Any) -> None:
        mark_refs_out_of_scope(*refs)

    future.add_done_callback(release)
    return future
