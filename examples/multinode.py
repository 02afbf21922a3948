"""Several nodes on one machine: placement, SPREAD, node affinity, objects moving.

Run with ``python examples/multinode.py``. Each node is a separate raylet
process with its own resources and object store, as on separate machines.
"""

from __future__ import annotations

import time

import numpy as np

import runtime
from runtime.testing import Cluster
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@runtime.remote(resources={"gpu_like": 1})
def on_special_node() -> str:
    return runtime.get_runtime_context().get_node_id()[:8]


@runtime.remote
def make(n_bytes: int) -> np.ndarray:
    return np.ones(n_bytes, dtype=np.uint8)


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> tuple[str, int]:
        self.n += 1
        return runtime.get_runtime_context().get_node_id()[:8], self.n


# Wrapped rather than decorated: type checkers do not apply class decorators.
Counter = runtime.remote(_Counter)


def main() -> None:
    with Cluster(head_node_args={"num_cpus": 1}) as cluster:
        special = cluster.add_node(num_cpus=2, resources={"gpu_like": 1})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        try:
            for node in runtime.nodes():
                role = "head" if node["IsHead"] else "node"
                print(f"{role} {node['NodeID'][:8]}: {node['Resources']}")
            print("custom resource ran on", runtime.get(on_special_node.remote()))
            spread = [Counter.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
            nodes = sorted(node for node, _ in runtime.get([c.incr.remote() for c in spread]))
            print("SPREAD placed 3 actors on", nodes)
            pinned = NodeAffinitySchedulingStrategy(special.node_id, soft=False)
            counter = Counter.options(scheduling_strategy=pinned).remote()
            print("actor on the special node:", runtime.get(counter.incr.remote()))
            ref = make.options(scheduling_strategy=pinned).remote(200 * 1024 * 1024)
            runtime.wait([ref], fetch_local=False)
            start = time.perf_counter()
            array = runtime.get(ref)  # pulled from the other node's store
            elapsed = time.perf_counter() - start
            print(f"moved {array.nbytes / 1e6:.0f} MB between nodes in {elapsed * 1000:.0f} ms")
        finally:
            runtime.shutdown()


if __name__ == "__main__":
    main()
