"""A workload of chained tasks, actor calls and streams while its processes are killed.

Workers killed at random (SIGKILL, every few tens of milliseconds), or whole
nodes killed and replaced: every result must still come out right, retried
and rebuilt from lineage, and nothing may outlive the cluster (``cluster_of``).
Which process dies when varies from run to run; what is checked does not.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import cluster_of, cmdline, runtime_pids

import runtime

pytestmark = pytest.mark.timeout(180)

N = 200


@runtime.remote(max_retries=-1)
def produce(i: int, before: np.ndarray | None = None) -> np.ndarray:
    base = 0 if before is None else int(before[0])
    # Every third result is large (a node's store), the others small (its owner's memory).
    return np.full(200_000 if i % 3 == 0 else 10, i + base, dtype=np.int64)


@runtime.remote(max_retries=-1)
def stream(i: int):
    for k in range(6):
        yield np.full(150_000 if k % 2 == 0 else 10, i * 100 + k, dtype=np.int64)


@runtime.remote(max_restarts=-1, max_task_retries=-1)
class Doubler:
    def double(self, array: np.ndarray) -> int:
        return int(array[0]) * 2


def workload() -> None:
    """Two chained tasks per item, then an actor call on the second's result;
    streaming generators, their items read at the end."""
    doublers = [Doubler.remote() for _ in range(2)]
    firsts = [produce.remote(i) for i in range(N)]
    seconds = [produce.remote(i, firsts[i]) for i in range(N)]
    calls = [doublers[i % 2].double.remote(seconds[i]) for i in range(N)]
    streams = [list(stream.remote(i)) for i in range(N // 10)]
    assert runtime.get(calls, timeout=150) == [4 * i for i in range(N)]
    assert [int(a[0]) for a in runtime.get(firsts, timeout=60)] == list(range(N))
    items = [[int(a[0]) for a in runtime.get(refs, timeout=60)] for refs in streams]
    assert items == [[i * 100 + k for k in range(6)] for i in range(N // 10)]


@contextmanager
def meanwhile(every_s: float, act: Callable[[random.Random], None]) -> Iterator[list[int]]:
    """Runs ``act`` every ``every_s`` seconds on a thread until the block ends;
    yields a list whose length is how many times it acted."""
    stop, acted = threading.Event(), []
    rng = random.Random(7)

    def loop() -> None:
        while not stop.wait(every_s):
            act(rng)
            acted.append(1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield acted
    finally:
        stop.set()
        thread.join()


def test_a_workload_survives_its_workers_being_killed() -> None:
    with cluster_of(head_node_args={"num_cpus": 2}) as cluster:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        assert cluster.head is not None
        session = cluster.head.session.path

        def kill_a_worker(rng: random.Random) -> None:
            workers = [pid for pid in runtime_pids(session) if b"--worker-id" in cmdline(pid)]
            if workers:
                try:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                except ProcessLookupError:
                    pass

        with meanwhile(0.05, kill_a_worker) as kills:
            workload()
        assert kills


def test_a_workload_survives_nodes_being_killed_and_replaced() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)

        def replace_a_node(rng: random.Random) -> None:
            nodes.pop(rng.randrange(len(nodes))).kill()
            nodes.append(cluster.add_node(num_cpus=2))

        with meanwhile(0.7, replace_a_node) as kills:
            workload()
        assert kills
