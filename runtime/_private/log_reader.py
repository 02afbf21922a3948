"""Reading the cluster's logs: which node holds which file, and its lines.

Used by ``runtime logs``, ``runtime.util.state.list_logs``/``get_log`` and the
dashboard. A file is named by its node and its name; an actor, a task or a
pid is first turned into that (an actor's worker, the worker that ran a
task's latest attempt).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..protocol.rt import Empty, GetLogRequest, NodeInfo, RayletStub
from . import rpc
from .ids import job_hex
from .state import TIMEOUT_S, StateReader

_UNREACHABLE: tuple[type[BaseException], ...] = (*rpc.CONNECTION_ERRORS, TimeoutError)


@dataclass(frozen=True)
class LogTarget:
    node_id: str
    name: str
    task_id: str = ""  # only this task's lines


def _raylet(reader: StateReader, node: NodeInfo) -> RayletStub:
    return RayletStub(reader.channels.get(node.host, node.raylet_port))


async def _alive_nodes(reader: StateReader, node_id: str | None = None) -> list[NodeInfo]:
    nodes = [n for n in await reader.node_infos() if n.alive]
    if node_id is None:
        return nodes
    chosen = [n for n in nodes if n.node_id.hex().startswith(node_id.lower())]
    if not chosen:
        raise ValueError(f"no live node has an id starting with {node_id!r}")
    return chosen


async def list_logs(
    reader: StateReader, node_id: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every node's log files (node id -> rows of name, size, pid, worker, job)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for node in await _alive_nodes(reader, node_id):
        try:
            reply = await asyncio.wait_for(_raylet(reader, node).list_logs(Empty()), TIMEOUT_S)
        except _UNREACHABLE:
            continue
        out[node.node_id.hex()] = [
            {
                "name": f.name,
                "size": f.size,
                "mtime": f.mtime,
                "worker_id": f.worker_id.hex() or None,
                "pid": f.pid or None,
                "job_id": job_hex(f.job_id) if f.job_id else None,
            }
            for f in reply.files
        ]
    return out


async def resolve(
    reader: StateReader,
    *,
    filename: str | None = None,
    node_id: str | None = None,
    actor_id: str | None = None,
    task_id: str | None = None,
    pid: int | None = None,
    err: bool = False,
) -> LogTarget:
    """The one file (and node) that the given ids name; ValueError says why not."""
    suffix = ".err" if err else ".out"
    want_task = ""
    worker_id = None
    if actor_id is not None:
        rows = [a for a in await reader.actors() if a["actor_id"].startswith(actor_id.lower())]
        if not rows:
            raise ValueError(f"no actor with id {actor_id!r}")
        if not rows[0]["pid"] or not rows[0]["node_id"]:
            raise ValueError(f"actor {actor_id} has not started (state {rows[0]['state']})")
        node_id, pid = rows[0]["node_id"], rows[0]["pid"]
    elif task_id is not None:
        rows, _, _ = await reader.tasks([("task_id", "=", task_id)], 0, False)
        if not rows:
            raise ValueError(f"no task with id {task_id!r} (its events may not be in yet)")
        latest = max(rows, key=lambda r: r["attempt_number"])
        if not latest["worker_id"]:
            raise ValueError(f"task {task_id} has not run (state {latest['state']})")
        node_id, worker_id, want_task = latest["node_id"], latest["worker_id"], task_id.lower()
    elif filename is None and pid is None:
        raise ValueError("name a file, or give --actor-id, --task-id or --pid")
    listing = await list_logs(reader, node_id)
    matches = []
    for node, files in listing.items():
        for f in files:
            if filename is not None and f["name"] == filename:
                matches.append(LogTarget(node, f["name"]))
            elif (
                filename is None and f["name"].endswith(suffix) and _same_worker(f, worker_id, pid)
            ):
                matches.append(LogTarget(node, f["name"], want_task))
    if not matches:
        raise ValueError("no such log file" + (f" on node {node_id}" if node_id else ""))
    if len(matches) > 1:
        nodes = ", ".join(m.node_id[:12] for m in matches)
        raise ValueError(f"several nodes have that file ({nodes}); give --node-id")
    return matches[0]


def _same_worker(f: dict[str, Any], worker_id: str | None, pid: int | None) -> bool:
    if worker_id:
        return bool(f["worker_id"] == worker_id)
    return pid is not None and f["pid"] == pid


async def read(
    reader: StateReader, target: LogTarget, tail: int = 0, follow: bool = False
) -> AsyncIterator[list[str]]:
    """The file's lines, in chunks; with ``follow``, new ones until cancelled."""
    (node,) = await _alive_nodes(reader, target.node_id)
    request = GetLogRequest(name=target.name, tail=tail, follow=follow, task_id=target.task_id)
    async for chunk in _raylet(reader, node).get_log(request):
        yield list(chunk.lines)
