"""Several nodes on one machine, for tests (as Ray's ``cluster_utils.Cluster``).

::

    from runtime.testing import Cluster

    cluster = Cluster(head_node_args={"num_cpus": 1})
    node = cluster.add_node(num_cpus=2, resources={"special": 1})
    runtime.init(address=cluster.address)
    ...
    cluster.remove_node(node)          # or node.kill(): SIGKILL, a crash
    runtime.shutdown()
    cluster.shutdown()

Each node is a separate raylet process with its own resources, worker pool
and object store; they share the head's session directory. Every process is
tied to the process that made the cluster: if it dies, they all exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from ._private import cluster, process
from ._private import labels as labels_module
from ._private.config import Config
from .protocol.rt import NodeInfo


class Node:
    """One node of a :class:`Cluster`: its raylet process."""

    def __init__(self, process: process.ChildProcess, head: bool) -> None:
        self.process = process
        self.head = head
        self.node_id: str = process.info["node_id"]
        self.address = f"{process.info['host']}:{process.info['port']}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.alive()

    def kill(self) -> None:
        """SIGKILL: the node crashes (its workers follow it)."""
        if self.process.alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.popen.wait()
        self.process.stop()

    def __repr__(self) -> str:
        return f"Node({self.node_id[:12]}, {self.address}{', head' if self.head else ''})"


class Cluster:
    def __init__(
        self,
        initialize_head: bool = True,
        head_node_args: Mapping[str, Any] | None = None,
        *,
        system_config: Mapping[str, Any] | None = None,
    ) -> None:
        """``system_config``: settings for every process of the cluster (the
        fields of ``runtime.Config``, such as ``health_check_period_s``)."""
        self.config = Config.load(system_config)
        self.head: cluster.HeadProcesses | None = None
        self.head_node: Node | None = None
        self.nodes: list[Node] = []
        self._count = 0
        if initialize_head:
            self._start_head(dict(head_node_args or {}))

    # -- building ---------------------------------------------------------------------
    def _start_head(self, args: dict[str, Any]) -> None:
        host = "127.0.0.1"
        self.head = cluster.start_head(
            self.config,
            host=host,
            port=0,
            resources=self._resources(args, host),
            standing=False,
            object_store_memory=args.get("object_store_memory"),
            labels=labels_module.check_node_labels(args.get("labels"), "head_node_args labels"),
        )
        self.head_node = Node(self.head.raylet, head=True)
        self.nodes.append(self.head_node)

    @staticmethod
    def _resources(args: Mapping[str, Any], host: str) -> dict[str, float]:
        known = {"num_cpus", "num_gpus", "resources", "object_store_memory", "labels"}
        unknown = set(args) - known
        if unknown:
            raise ValueError(f"unknown node argument(s): {', '.join(sorted(unknown))}")
        return cluster.default_resources(
            args.get("num_cpus", 1), args.get("num_gpus"), args.get("resources"), host
        )

    @property
    def address(self) -> str:
        """The gcs's ``HOST:PORT``, for ``runtime.init(address=...)``."""
        if self.head is None:
            raise RuntimeError("the cluster has no head yet")
        host, port = self.head.gcs_address
        return f"{host}:{port}"

    def add_node(
        self,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        resources: Mapping[str, float] | None = None,
        object_store_memory: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Node:
        """Starts one more node (a raylet) that joins the cluster; returns once
        the gcs knows it."""
        if self.head is None:
            raise RuntimeError("add_node() needs the head (initialize_head=True)")
        self._count += 1
        host = "127.0.0.1"
        gcs_host, gcs_port = self.head.gcs_address
        process = cluster.launch_raylet(
            self.config,
            self.head.session,
            host=host,
            gcs_address=f"{gcs_host}:{gcs_port}",
            resources=self._resources(
                {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": dict(resources or {})},
                host,
            ),
            object_store_memory=object_store_memory or 256 * 1024 * 1024,
            standing=False,
            head=False,
            token=self.head.token,
            log_name=f"raylet-{self._count}",
            labels=labels_module.check_node_labels(labels),
        ).wait_ready(self.config.process_start_timeout_s)
        node = Node(process, head=False)
        self.nodes.append(node)
        return node

    def remove_node(self, node: Node, allow_graceful: bool = True) -> None:
        """Stops a node: gracefully (SIGTERM: it unregisters, its workers stop), or
        by SIGKILL (a crash)."""
        if allow_graceful:
            node.process.stop(graceful=True)
        else:
            node.kill()
        if node in self.nodes:
            self.nodes.remove(node)

    # -- watching ------------------------------------------------------------------
    def list_nodes(self) -> list[NodeInfo]:
        """Every node the gcs knows, alive or dead."""
        if self.head is None:
            raise RuntimeError("the cluster has no head")
        nodes: list[NodeInfo] = _run(cluster.list_nodes(self.head.gcs_address))
        return nodes

    def wait_for_nodes(self, timeout: float = 30.0) -> None:
        """Waits until the gcs sees exactly this cluster's live nodes as alive."""
        deadline = time.monotonic() + timeout
        want = {n.node_id for n in self.nodes if n.alive()}
        while True:
            alive = {n.node_id.hex() for n in self.list_nodes() if n.alive}
            if alive == want:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes alive: {sorted(alive)}; expected {sorted(want)}")
            time.sleep(0.05)

    def wait_for_dead(self, node: Node, timeout: float = 30.0) -> None:
        """Waits until the gcs has marked ``node`` dead."""
        deadline = time.monotonic() + timeout
        while True:
            for info in self.list_nodes():
                if info.node_id.hex() == node.node_id and not info.alive:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node} is still alive for the gcs")
            time.sleep(0.05)

    # -- the end --------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stops every node, then the gcs."""
        for node in reversed(self.nodes):
            if not node.head:
                node.process.stop()
        self.nodes = [n for n in self.nodes if n.head]
        if self.head is not None:
            self.head.stop()
            self.head = None
        self.nodes = []

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _run(coro: Any) -> Any:
    """Runs a coroutine to the end from sync code, even under a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
