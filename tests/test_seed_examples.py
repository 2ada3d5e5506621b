"""The examples of the talk this project follows, with the import renamed."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np

from warpstore.proxy import Proxy
from warpstore.store import Store


def test_proxy_example() -> None:
    x = np.array([1, 2, 3])

    # Proxy(Callable[[], T]) -> Proxy[T]
    p = Proxy(lambda: x)

    # A proxy is an instance of its wrapped object
    assert isinstance(p, Proxy)
    assert isinstance(p, np.ndarray)

    # The proxy can do everything the numpy array can
    assert np.array_equal(p, [1, 2, 3])
    assert np.sum(p) == 6
    y = x + p
    assert np.array_equal(y, [2, 4, 6])


@dataclass
class MyData:
    values: list[int]
    label: str


def my_function(x: MyData) -> int:
    # Resolve of x deferred until use
    assert isinstance(x, MyData)
    return sum(x.values)


def test_redis_store_example(redis_server: tuple[str, int]) -> None:
    from warpstore.connectors.redis import RedisConnector

    host, port = redis_server
    my_object = MyData([1, 2, 3], "seed")

    with Store(
        name="my-store",
        connector=RedisConnector(host, port),
        # other optional parameters
    ) as store:
        p = store.proxy(my_object)
        assert isinstance(p, Proxy)
        assert my_function(p) == 6

        # and as a consumer elsewhere sees it: unpickled, unresolved, then used
        q = pickle.loads(pickle.dumps(p))
        assert isinstance(q, Proxy)
        assert my_function(q) == 6
        assert q == my_object
