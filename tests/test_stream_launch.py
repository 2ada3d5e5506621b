"""A stream inside `warpstore launch`: the job's node servers are broker and store.

Two simulated nodes (mpich's mpiexec, ``WARPSTORE_SIMULATE_NODES=1``): rank 0
produces, rank 1 consumes; neither names a server, both find the topic's
server from the manifest and the objects in rank 0's node server. Nothing
else (no Redis, no ZeroMQ broker) runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.procs import kill_all, processes_matching

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


def test_stream_between_two_nodes_of_a_launch(tmp_path: Path) -> None:
    tag = f"wstest-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "WARPSTORE_TEST_TAG": tag,
        "WARPSTORE_RUNTIME_DIR": str(tmp_path / "runtime"),
        "WARPSTORE_SIMULATE_NODES": "1",
        "TMPDIR": "/tmp",
    }
    for var in ("WARPSTORE_MANIFEST", "WARPSTORE_JOB_ID", "WARPSTORE_TOKEN_FILE"):
        env.pop(var, None)
    script = tmp_path / "stream_task.py"
    script.write_text(TASK)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "warpstore", "launch", "--site", "local", "--nodes", "2",
             "--", "mpiexec", "-n", "2", sys.executable, str(script)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150,
        )
    finally:
        time.sleep(0.2)
        leftover = processes_matching(tag)
        kill_all(tag)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = [line for line in proc.stdout.splitlines() if line.startswith("got ")]
    assert got == [f"got {i} from sim0" for i in range(9)]
    assert "stream done" in proc.stdout
    assert not leftover, f"processes left behind: {leftover}"
