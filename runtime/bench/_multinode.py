"""Benchmark rows of several nodes on this machine (``runtime microbenchmark``).

Each node is a separate raylet (``runtime.testing.Cluster``), so the rows
measure the multi-node machinery (spillback, leases on other nodes, object
transfer over TCP), not more hardware: on a 2-core machine, 4 nodes share
the same 2 cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import runtime

from ..testing import Cluster
from ._report import report


@runtime.remote
def _tiny() -> bytes:
    return b"ok"


@runtime.remote(num_cpus=0)
def _make(nbytes: int) -> Any:
    import numpy as np

    return np.ones(nbytes, dtype=np.uint8)


def task_rows(
    scale: float, runs: int, run_s: float, want: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """Throughput of batches of tiny tasks over 1, 2 and 4 one-CPU nodes."""
    out = []
    batch = max(10, int(1000 * scale))
    for count in (1, 2, 4):
        name = f"single client tasks async over {count} node(s) (ours)"
        if not want(name):
            continue
        with Cluster(head_node_args={"num_cpus": 1}) as cluster:
            for _ in range(count - 1):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            runtime.init(address=cluster.address)
            try:
                runtime.get([_tiny.remote() for _ in range(batch)])  # warm every node's workers
                rates = []
                for _ in range(runs):
                    done, start = 0, time.perf_counter()
                    while True:
                        runtime.get([_tiny.remote() for _ in range(batch)])
                        done += batch
                        if time.perf_counter() - start >= run_s:
                            break
                    rates.append(done / (time.perf_counter() - start))
                out.append(report(name, rates))
            finally:
                runtime.shutdown()
    return out


def transfer_rows(scale: float, runs: int, want: Callable[[str], bool]) -> list[dict[str, Any]]:
    """GB/s of getting a 1 GB object held by another node (pull + zero-copy read)."""
    from ..util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = "transfer 1 GB object between two nodes, GB (ours)"
    if not want(name):
        return []
    nbytes = max(1 << 20, int((1 << 30) * scale))
    memory = 3 * nbytes + (64 << 20)
    with Cluster(head_node_args={"num_cpus": 1, "object_store_memory": memory}) as cluster:
        node = cluster.add_node(num_cpus=1, object_store_memory=memory)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        try:
            there = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
            rates = []
            for _ in range(max(2, runs)):
                ref = _make.options(scheduling_strategy=there).remote(nbytes)
                runtime.wait([ref], fetch_local=False)
                start = time.perf_counter()
                array = runtime.get(ref)
                elapsed = time.perf_counter() - start
                assert array.nbytes == nbytes
                del array, ref
                rates.append(nbytes / elapsed / 1e9)
            return [report(name, rates)]
        finally:
            runtime.shutdown()
