"""The cluster's nodes and resources: ``nodes()``, ``cluster_resources()``, ...,
and ``get_node_ip_address()`` (Ray's ``ray.util`` name)."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from ..core_worker import check_blocking_allowed
from ..protocol.rt import Empty
from . import _context


async def nodes_async() -> list[dict[str, Any]]:
    worker = _context.current()
    worker.check_cluster()
    reply = await worker.bridge.on_own_loop(worker.gcs.get_all_nodes(Empty()))
    return [
        {
            "NodeID": n.node_id.hex(),
            "Alive": n.alive,
            "NodeManagerAddress": n.host,
            "NodeName": n.host,
            "NodeManagerHostname": n.host,
            "NodeManagerPort": n.raylet_port,
            "ObjectManagerPort": n.object_manager_port,
            "ObjectStoreSocketName": n.store_socket,
            "IsHead": n.is_head,
            "Resources": dict(n.resources_total),
            "AvailableResources": dict(n.resources_available),
            "SessionDir": n.session_dir,
            "Labels": dict(n.labels),
        }
        for n in reply.nodes
    ]


def nodes() -> list[dict[str, Any]]:
    """Every node of the cluster, as in Ray's ``ray.nodes()``."""
    check_blocking_allowed("nodes", "await runtime.nodes_async()", _context.runtime_loop())
    worker = _context.current()
    result: list[dict[str, Any]] = worker.bridge.run_blocking(nodes_async())
    return result


def _sum(nodes_list: list[dict[str, Any]], key: str) -> dict[str, float]:
    """The live nodes' amounts of each resource; one none has any of now is
    left out (as Ray documents for ``available_resources``: "CPU" is absent
    while every CPU is in use)."""
    total: dict[str, float] = {}
    for node in nodes_list:
        if node["Alive"]:
            for name, amount in node[key].items():
                total[name] = total.get(name, 0.0) + amount
    return {name: amount for name, amount in total.items() if amount > 0}


def cluster_resources() -> dict[str, float]:
    return _sum(nodes(), "Resources")


def available_resources() -> dict[str, float]:
    return _sum(nodes(), "AvailableResources")


async def cluster_resources_async() -> dict[str, float]:
    return _sum(await nodes_async(), "Resources")


async def available_resources_async() -> dict[str, float]:
    return _sum(await nodes_async(), "AvailableResources")


def get_node_ip_address(address: str = "8.8.8.8:53") -> str:
    """The IP address of the node this process runs on: the one the runtime
    uses when it runs here (a local cluster's is the loopback), else the
    address this machine would reach ``address`` (``host:port``) from, as in
    Ray. No packet is sent: a UDP socket is only connected, which picks the
    route."""
    host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"get_node_ip_address(): address must be 'host:port', got {address!r}")
    worker = _context.current_or_none()
    if worker is not None:
        return str(worker.address[0])
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, int(port)))
        return str(s.getsockname()[0])
    return "127.0.0.1"  # no route (an offline machine): the loopback
