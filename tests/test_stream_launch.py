"""A stream inside `warpstore launch`: the job's node servers are broker and store.

Two simulated nodes (mpich's mpiexec, ``WARPSTORE_SIMULATE_NODES=1``): rank 0
produces, rank 1 consumes; neither names a server, both find the topic's
server from the manifest and the objects in rank 0's node server. Nothing
else (no Redis, no ZeroMQ broker) runs.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.launching import launch

pytestmark = pytest.mark.timeout(180)

TASK = '''
import sys
from mpi4py import MPI
import numpy as np
import warpstore
from warpstore.stream import StreamConsumer, StreamProducer
from warpstore.stream.shims.nodeserver import NodeServerPublisher, NodeServerSubscriber

rank = MPI.COMM_WORLD.Get_rank()
store = warpstore.task_store()
if rank == 0:
    with StreamProducer(NodeServerPublisher(), {"arrays": store}, batch_size=2) as producer:
        for i in range(9):
            producer.send("arrays", np.full(100_000, i), metadata={"i": i})
        producer.close_topics("arrays")
else:
    consumer = StreamConsumer(NodeServerSubscriber("arrays", timeout=60))
    for meta, array in consumer.iter_with_metadata():
        node = array.__factory__.key.node
        assert float(array.sum()) == meta["i"] * 100_000
        print(f"got {meta['i']} from {node}", flush=True)
    print("stream done", flush=True)
MPI.COMM_WORLD.Barrier()
'''


def test_stream_between_two_nodes_of_a_launch(job: dict[str, Any]) -> None:
    job["env"]["WARPSTORE_SIMULATE_NODES"] = "1"
    script = job["dir"] / "stream_task.py"
    script.write_text(TASK)
    proc = launch(job, "--site", "local", "--nodes", "2",
                  "--", "mpiexec", "-n", "2", sys.executable, str(script))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = [line for line in proc.stdout.splitlines() if line.startswith("got ")]
    assert got == [f"got {i} from sim0" for i in range(9)]
    assert "stream done" in proc.stdout
    # the job fixture proves no server or rank was left
