"""The Parsl serializer with a real HighThroughputExecutor on loopback (one worker).

The submit side's store counts its gets: the DFK and the submit side never
fetch a proxied argument or result unless the test uses it; the apps report
what they received on the worker.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

parsl = pytest.importorskip("parsl")

from parsl.app.app import python_app  # noqa: E402
from parsl.serialize import facade  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.launching import launch  # noqa: E402
from tests.plugin_stores import counting_store, stored  # noqa: E402
from tests.procs import processes_matching  # noqa: E402
from warpstore.plugins.parsl import ProxyStoreSerializer, register, size_of  # noqa: E402
from warpstore.proxy import Proxy, get_factory, is_resolved  # noqa: E402
from warpstore.store import Store  # noqa: E402

THRESHOLD = 100_000
ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store[Any]]:
    s = counting_store("parsl-plugin", tmp_path_factory.mktemp("parsl-objs"), register=True)
    yield s
    s.close()


@pytest.fixture(scope="module")
def dfk(store: Store[Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    run_dir = str(tmp_path_factory.mktemp("parsl-run"))
    saved_env = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ROOT + (os.pathsep + saved_env if saved_env else "")
    saved_methods = dict(facade.methods_for_data)
    register(ProxyStoreSerializer(store=store, threshold=THRESHOLD))
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                loopback_address="127.0.0.1",
                worker_port=free_port(),
                # (49152, 65536) makes pyzmq bind port 0: the OS picks free ports
                interchange_port_range=(49152, 65536),
                max_workers_per_node=1,
                cores_per_worker=1,
                heartbeat_period=2,
                poll_period=10,
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            )
        ],
        run_dir=run_dir,
        strategy="none",
        usage_tracking=0,
    )
    dfk = parsl.load(config)
    try:
        yield dfk
    finally:
        dfk.cleanup()
        facade.methods_for_data.clear()
        facade.methods_for_data.update(saved_methods)
        if saved_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_env
        deadline = time.monotonic() + 20
        while processes_matching(run_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_matching(run_dir) == []


@python_app
def inspect(x: Any, small: Any, nested: Any) -> tuple[Any, ...]:
    fetched = (is_resolved(x), is_resolved(nested["a"]))
    kinds = (type(x).__name__, type(small).__name__, type(nested["a"]).__name__)
    return (*fetched, *kinds, float(x.sum()), float(nested["a"].sum()), os.getpid())


@python_app
def grow(x: Any) -> Any:
    return np.full(100_000, float(x.sum()))


@python_app
def total(x: Any) -> float:
    return float(np.asarray(x).sum())


def test_large_arguments_reach_the_app_as_unresolved_proxies(dfk: Any, store: Store[Any]) -> None:
    big = np.arange(200_000, dtype=np.float64)
    store.gets["n"] = 0  # type: ignore[attr-defined]
    before = stored(store)
    out = inspect(big, np.ones(3), {"a": np.ones(50_000)}).result(timeout=120)
    assert out[:5] == (False, False, "Proxy", "ndarray", "Proxy")
    assert out[5:7] == (big.sum(), 50_000.0)
    assert out[7] != os.getpid()
    assert store.gets["n"] == 0  # type: ignore[attr-defined]
    assert stored(store) == before  # both arguments evicted once the worker read them


def test_large_results_come_back_as_proxies_and_chain(dfk: Any, store: Store[Any]) -> None:
    big = np.arange(200_000, dtype=np.float64)
    store.gets["n"] = 0  # type: ignore[attr-defined]
    first = grow(big)
    chained = total(first)  # the proxy goes on to the next app, never fetched here
    assert chained.result(timeout=120) == big.sum() * 100_000
    assert store.gets["n"] == 0  # type: ignore[attr-defined]
    res = first.result()
    assert type(res) is Proxy and not is_resolved(res)
    assert float(res[-1]) == big.sum()
    assert store.gets["n"] == 1  # type: ignore[attr-defined]
    # results are kept (a result may feed several apps): evicting is the user's call
    key = get_factory(res).key  # type: ignore[attr-defined]
    assert store.exists(key)
    store.evict(key)
    small = total(np.ones(10)).result(timeout=120)
    assert small == 10.0 and type(small) is float


def test_policy_and_refusals() -> None:
    assert size_of(np.ones(10)) == 80 and size_of(b"abc") == 3 and size_of({"a": 1}) == 0
    with pytest.raises(TypeError, match="only deserializes"):
        ProxyStoreSerializer().serialize([1])


LAUNCH_WORKFLOW = '''
import os, sys
import numpy as np
import parsl
from parsl.app.app import python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider
import warpstore
from warpstore.plugins.parsl import ProxyStoreSerializer, register
from warpstore.proxy import Proxy, is_resolved

@python_app
def scale(x, k):
    import os
    from warpstore.proxy import is_resolved
    assert not is_resolved(x), "fetched before the app ran"
    return x * k

@python_app
def total(x):
    return float(x.sum())

store = warpstore.task_store()
register(ProxyStoreSerializer(store=store, threshold=100_000))
parsl.load(Config(
    executors=[HighThroughputExecutor(
        label="htex", address="127.0.0.1", loopback_address="127.0.0.1",
        interchange_port_range=(49152, 65536), worker_port_range=(49152, 65536),
        max_workers_per_node=1, provider=LocalProvider(init_blocks=1, max_blocks=1),
    )],
    run_dir=sys.argv[1], strategy="none", usage_tracking=0,
))
try:
    x = np.arange(100_000, dtype=np.float64)
    scaled = scale(x, 2.0)
    assert total(scaled).result(timeout=120) == 2 * x.sum()
    res = scaled.result()
    assert type(res) is Proxy and not is_resolved(res)
    key = res.__factory__.key
    print("result on", key.node, key.address, flush=True)
finally:
    parsl.dfk().cleanup()
'''


def test_parsl_workflow_inside_warpstore_launch(job: dict[str, Any]) -> None:
    job["env"]["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    script = job["dir"] / "workflow.py"
    script.write_text(LAUNCH_WORKFLOW)
    proc = launch(job, "--site", "local", "--", sys.executable, str(script),
                  str(job["dir"] / "parsl-run"), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the worker stored the large result in the job's own node server
    assert "result on " in proc.stdout and "tcp://" in proc.stdout
    # the job fixture proves no process (interchange, worker pool, server) was left
