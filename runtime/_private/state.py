"""The state API's readers: the cluster's tasks, actors, objects, nodes, jobs,
workers, placement groups and events as rows with Ray's column names.

Each reader takes the gcs address and the cluster's token and asks the gcs
(and, for workers and objects, each raylet and core worker) on the caller's
loop, with a channel pool of its own; the public API (``runtime.util.state``),
the ``runtime`` command and the dashboard all read through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..protocol.rt import (
    ActorInfo,
    ActorState,
    Empty,
    GcsStub,
    KvGetRequest,
    ListTasksRequest,
    NodeInfo,
    PlacementGroupInfo,
    RayletStub,
)
from . import memory, rpc
from . import task_events as te
from .ids import job_hex

TIMEOUT_S = 10.0
T = TypeVar("T")

#: The resources ``list_*`` reads, and their columns (the filterable keys).
COLUMNS: dict[str, tuple[str, ...]] = {
    "tasks": (
        "task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type",
        "func_or_class_name", "parent_task_id", "node_id", "worker_id", "worker_pid",
        "error_type", "language", "required_resources", "placement_group_id",
        "error_message", "creation_time_ms", "start_time_ms", "end_time_ms", "events",
    ),
    "actors": (
        "actor_id", "class_name", "state", "job_id", "name", "node_id", "pid",
        "ray_namespace", "is_detached", "placement_group_id", "repr_name", "num_restarts",
        "max_restarts", "required_resources", "death_cause",
    ),
    "nodes": (
        "node_id", "node_ip", "is_head_node", "state", "node_name", "resources_total",
        "resources_available", "object_store_used_bytes", "object_store_memory_bytes",
        "raylet_port", "start_time_ms", "session_dir", "pid", "labels",
    ),
    "jobs": (
        "job_id", "submission_id", "type", "status", "entrypoint", "namespace",
        "start_time", "end_time", "driver_info", "metadata",
    ),
    "workers": (
        "worker_id", "is_alive", "worker_type", "node_id", "ip", "port", "pid", "job_id",
        "exit_type", "exit_detail",
    ),
    "objects": (
        "object_id", "object_size", "reference_type", "call_site", "type", "pid", "ip",
        "job_id",
    ),
    "placement_groups": (
        "placement_group_id", "name", "creator_job_id", "state", "is_detached", "strategy",
        "bundles", "ray_namespace",
    ),
    "cluster_events": (
        "event_id", "severity", "time", "source_type", "message", "custom_fields",
    ),
    "runtime_envs": (
        "runtime_env", "success", "creation_time_ms", "node_id", "ref_cnt", "error",
    ),
}  # fmt: skip

RESOURCES = tuple(COLUMNS)
#: The column that identifies a row of each resource (``get``).
ID_COLUMNS = {
    "tasks": "task_id",
    "actors": "actor_id",
    "nodes": "node_id",
    "jobs": "job_id",
    "workers": "worker_id",
    "objects": "object_id",
    "placement_groups": "placement_group_id",
    "cluster_events": "event_id",
}


#: The key of a submitted job's id in its driver's job metadata (Ray's).
SUBMISSION_ID_KEY = "job_submission_id"
#: Where the dashboard keeps submitted jobs' records (one key per submission id)
#: and their list (a key no submission id can be: those are printable).
JOB_KV_NAMESPACE = "job_submission"
JOB_INDEX_KEY = b"\x00index"


def _unconnected(record: dict[str, Any]) -> dict[str, Any]:
    """A submitted job's row while it has no driver (its runner failed, or its
    entrypoint never connected)."""
    return {
        "job_id": None,
        "submission_id": record["submission_id"],
        "type": "SUBMISSION",
        "status": record["status"],
        "entrypoint": record["entrypoint"],
        "metadata": record["metadata"],
        "namespace": None,
        "start_time": record["start_time"],
        "end_time": record["end_time"],
        "driver_info": None,
    }


async def _bounded(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, TIMEOUT_S)


class StateReader:
    """One conversation with a cluster: ``async with StateReader(addr, token) as r``."""

    def __init__(self, gcs_address: tuple[str, int], token: str | None = None) -> None:
        self.gcs_address = gcs_address
        self.token = token
        self.channels = rpc.ChannelPool(token)
        self.gcs = GcsStub(self.channels.get(*gcs_address))

    async def __aenter__(self) -> StateReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.channels.close()

    # -- readers ------------------------------------------------------------------------
    async def tasks(
        self,
        filters: list[te.Filter],
        limit: int,
        detail: bool,
        job_id: int = 0,
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], int, int]:
        """(rows, how many matched, how many the cluster dropped)."""
        request = ListTasksRequest(
            job_id=job_id,
            filters=json.dumps(filters).encode(),
            limit=max(0, limit),
            detail=detail,
            newest_first=newest_first,
        )
        reply = await _bounded(self.gcs.list_tasks(request))
        return json.loads(reply.rows), reply.total, reply.dropped

    async def task_summary(self, filters: list[te.Filter]) -> dict[str, Any]:
        """``summarize_tasks`` of the matching attempts, counted by the gcs."""
        request = ListTasksRequest(filters=json.dumps(filters).encode(), summary=True)
        reply = await _bounded(self.gcs.list_tasks(request))
        summary: dict[str, Any] = json.loads(reply.rows)
        return summary

    async def actors(self) -> list[dict[str, Any]]:
        reply = await _bounded(self.gcs.list_actors(Empty()))
        return [actor_row(a) for a in reply.actors]

    async def nodes(self) -> list[dict[str, Any]]:
        reply = await _bounded(self.gcs.get_all_nodes(Empty()))
        return [node_row(n) for n in reply.nodes]

    async def node_infos(self) -> list[NodeInfo]:
        return list((await _bounded(self.gcs.get_all_nodes(Empty()))).nodes)

    async def jobs(self) -> list[dict[str, Any]]:
        """Every driver's job, and every submitted one (see :meth:`submissions`):
        a submitted job's status is its submission's; one whose driver never
        connected (it failed first, or runs no driver) is listed too."""
        rows = await self.drivers()
        submitted = {record["submission_id"]: record for record in await self.submissions()}
        for row in rows:
            record = submitted.pop(row["submission_id"] or "", None)
            if record is not None:
                row["status"], row["entrypoint"] = record["status"], record["entrypoint"]
        rows.extend(_unconnected(record) for record in submitted.values())
        return rows

    async def drivers(self) -> list[dict[str, Any]]:
        """The jobs whose drivers connected, as the gcs lists them."""
        reply = await _bounded(self.gcs.list_jobs(Empty()))
        return [
            {
                "job_id": job_hex(j.job_id),
                "submission_id": j.metadata.get(SUBMISSION_ID_KEY),
                "type": "SUBMISSION" if SUBMISSION_ID_KEY in j.metadata else "DRIVER",
                "status": "SUCCEEDED" if j.finished else "RUNNING",
                "entrypoint": j.entrypoint,
                "metadata": dict(j.metadata),
                "namespace": j.namespace,
                "start_time": int(j.start_time * 1000),
                "end_time": int(j.end_time * 1000) if j.end_time else None,
                "driver_info": {
                    "id": job_hex(j.job_id),
                    "node_ip_address": j.driver_host,
                    "pid": str(j.driver_pid),
                },
            }
            for j in reply.jobs
        ]

    async def submissions(self) -> list[dict[str, Any]]:
        """The submitted jobs' records the dashboard keeps in the gcs's key-value store."""
        index = await self._kv(JOB_INDEX_KEY)
        records = []
        for submission_id in json.loads(index) if index else []:
            raw = await self._kv(submission_id.encode())
            if raw is not None:
                records.append(json.loads(raw))
        return records

    async def _kv(self, key: bytes) -> bytes | None:
        request = KvGetRequest(namespace=JOB_KV_NAMESPACE, key=key)
        reply = await _bounded(self.gcs.kv_get(request))
        return bytes(reply.value) if reply.found and reply.value != b"null" else None

    def _raylets(self, nodes: list[NodeInfo]) -> list[tuple[NodeInfo, RayletStub]]:
        return [
            (node, RayletStub(self.channels.get(node.host, node.raylet_port)))
            for node in nodes
            if node.alive
        ]

    async def runtime_envs(self) -> list[dict[str, Any]]:
        """Each node's runtime environments (a node that does not answer is left out)."""
        rows = []
        for node, raylet in self._raylets(await self.node_infos()):
            with contextlib.suppress(TimeoutError, *rpc.CONNECTION_ERRORS):
                reply = await _bounded(raylet.list_runtime_envs(Empty()))
                rows += [
                    {
                        "runtime_env": json.loads(e.runtime_env),
                        "success": e.success,
                        "creation_time_ms": e.creation_time_ms,
                        "node_id": node.node_id.hex(),
                        "ref_cnt": e.ref_cnt,
                        "error": e.error or None,
                    }
                    for e in reply.runtime_envs
                ]
        return rows

    async def workers(self) -> list[dict[str, Any]]:
        rows = []
        for node, raylet in self._raylets(await self.node_infos()):
            with contextlib.suppress(TimeoutError, *rpc.CONNECTION_ERRORS):
                reply = await _bounded(raylet.list_workers(Empty()))
                for w in reply.workers:
                    address = w.address
                    rows.append(
                        {
                            "worker_id": address.worker_id.hex() if address else "",
                            "is_alive": True,
                            "worker_type": "DRIVER" if w.is_driver else "WORKER",
                            "node_id": node.node_id.hex(),
                            "ip": node.host,
                            "port": address.port if address else 0,
                            "pid": w.pid,
                            "job_id": job_hex(w.job_id),
                            "exit_type": None,
                            "exit_detail": None,
                        }
                    )
                rows += [
                    {
                        "worker_id": e.worker_id.hex(),
                        "is_alive": False,
                        "worker_type": "WORKER",
                        "node_id": node.node_id.hex(),
                        "ip": node.host,
                        "port": 0,
                        "pid": e.pid,
                        "job_id": job_hex(e.job_id),
                        "exit_type": e.exit_type,
                        "exit_detail": e.exit_detail,
                    }
                    for e in reply.ended
                ]
        return rows

    async def objects(self) -> list[dict[str, Any]]:
        tables = await memory.collect(self.gcs_address, self.token)
        return [
            {
                "object_id": row.object_id.hex(),
                "object_size": row.size,
                "reference_type": ", ".join(memory.kinds(row)),
                "call_site": row.call_site,
                "type": "DRIVER" if table.info.is_driver else "WORKER",
                "pid": table.info.pid,
                "ip": table.info.address.host if table.info.address else "",
                "job_id": job_hex(table.info.job_id),
            }
            for table in tables
            for row in table.rows
        ]

    async def cluster_events(self) -> list[dict[str, Any]]:
        reply = await _bounded(self.gcs.list_cluster_events(Empty()))
        return [
            {
                "event_id": e.event_id,
                "severity": e.severity,
                # (Ray's form: local time, to the second)
                "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time)),
                "source_type": e.source_type,
                "message": e.message,
                "custom_fields": dict(e.custom_fields),
            }
            for e in reply.events
        ]

    async def placement_groups(self) -> list[dict[str, Any]]:
        reply = await _bounded(self.gcs.list_placement_groups(Empty()))
        return [group_row(g) for g in reply.placement_groups]

    async def read(
        self, resource: str, filters: list[te.Filter], limit: int, detail: bool
    ) -> tuple[list[dict[str, Any]], int, int]:
        """Any resource's rows, filtered (rows, matched, dropped)."""
        check_resource(resource)
        check_filter_keys(resource, filters)
        if resource == "tasks":
            return await self.tasks(filters, limit, detail)
        readers: dict[str, Callable[[], Awaitable[list[dict[str, Any]]]]] = {
            "actors": self.actors,
            "nodes": self.nodes,
            "jobs": self.jobs,
            "workers": self.workers,
            "objects": self.objects,
            "placement_groups": self.placement_groups,
            "cluster_events": self.cluster_events,
            "runtime_envs": self.runtime_envs,
        }
        rows = [r for r in await readers[resource]() if te.matches(r, filters)]
        total = len(rows)
        return (rows[:limit] if limit > 0 else rows), total, 0


def check_resource(resource: str) -> None:
    if resource not in COLUMNS:
        raise ValueError(f"unknown resource {resource!r}; choose one of {', '.join(RESOURCES)}")


def check_filter_keys(resource: str, filters: list[te.Filter]) -> None:
    columns = COLUMNS[resource]
    for key, _, _ in filters:
        if key not in columns:
            raise ValueError(
                f"cannot filter {resource} on {key!r}; its columns are: {', '.join(columns)}"
            )


# -- rows ------------------------------------------------------------------------------


def actor_row(info: ActorInfo) -> dict[str, Any]:
    state = info.state.name.removeprefix("ACTOR_STATE_") if info.state else "UNKNOWN"
    if info.state is ActorState.PENDING_CREATION:
        state = "PENDING_CREATION"
    node = info.node_id or (info.address.node_id if info.address is not None else b"")
    return {
        "actor_id": info.actor_id.hex(),
        "class_name": info.class_name,
        "state": state,
        "job_id": job_hex(info.job_id),
        "name": info.name,
        "node_id": node.hex() if node else None,
        "pid": info.pid or None,
        "ray_namespace": info.namespace,
        "is_detached": info.detached,
        "placement_group_id": info.placement_group_id.hex() or None,
        "repr_name": info.repr_name,
        "num_restarts": info.num_restarts,
        "max_restarts": info.max_restarts,
        "required_resources": dict(info.resources),
        "death_cause": info.death_cause or None,
    }


def node_row(n: NodeInfo) -> dict[str, Any]:
    return {
        "node_id": n.node_id.hex(),
        "node_ip": n.host,
        "is_head_node": n.is_head,
        "state": "ALIVE" if n.alive else "DEAD",
        "node_name": n.host,
        "resources_total": dict(n.resources_total),
        "resources_available": dict(n.resources_available),
        "object_store_used_bytes": n.object_store_used,
        "object_store_memory_bytes": n.object_store_memory,
        "raylet_port": n.raylet_port,
        "start_time_ms": int(n.start_time * 1000),
        "session_dir": n.session_dir,
        "pid": n.pid,
        "labels": dict(n.labels),
    }


def group_row(g: PlacementGroupInfo) -> dict[str, Any]:
    return {
        "placement_group_id": g.placement_group_id.hex(),
        "name": g.name,
        "creator_job_id": job_hex(g.job_id),
        "state": g.state.name.removeprefix("PLACEMENT_GROUP_STATE_") if g.state else "PENDING",
        "is_detached": g.detached,
        "strategy": g.strategy.name.removeprefix("PLACEMENT_STRATEGY_") if g.strategy else "PACK",
        "bundles": [
            {
                "bundle_id": i,
                "node_id": b.node_id.hex() or None,
                "unit_resources": dict(b.resources),
            }
            for i, b in enumerate(g.bundles)
        ],
        "ray_namespace": g.namespace,
    }


# -- summaries and the timeline --------------------------------------------------------


def summarize_tasks(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ray's ``summarize_tasks()`` shape: counts by function and state."""
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row["func_or_class_name"] or row["name"]
        entry = summary.setdefault(
            key, {"func_or_class_name": key, "type": row["type"], "state_counts": {}}
        )
        counts = entry["state_counts"]
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {
        "cluster": {
            "summary": summary,
            "total_tasks": sum(1 for r in rows if r["type"] == te.NORMAL_TASK),
            "total_actor_tasks": sum(1 for r in rows if r["type"] == te.ACTOR_TASK),
            "total_actor_scheduled": sum(1 for r in rows if r["type"] == te.ACTOR_CREATION_TASK),
            "summary_by": "func_name",
        }
    }


def summarize_objects(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ray's ``summarize_objects()`` shape: the referenced objects grouped by
    where they were made (``call_site``), with sizes and how they are held."""
    summary: dict[str, dict[str, Any]] = {}
    holders: dict[str, tuple[set[Any], set[Any]]] = {}
    total_mb = 0.0
    for row in rows:
        key = row["call_site"] or "(unknown)"
        entry = summary.get(key)
        if entry is None:
            entry = summary[key] = {
                "total_objects": 0,
                "total_size_mb": 0.0,
                "total_num_workers": 0,
                "total_num_nodes": 0,
                "ref_type_counts": {},
            }
            holders[key] = (set(), set())
        entry["total_objects"] += 1
        if row["object_size"] >= 0:  # (-1: not known here)
            size_mb = row["object_size"] / 1024**2
            entry["total_size_mb"] += size_mb
            total_mb += size_mb
        kinds = entry["ref_type_counts"]
        kinds[row["reference_type"]] = kinds.get(row["reference_type"], 0) + 1
        workers, nodes = holders[key]
        workers.add((row["ip"], row["pid"]))
        nodes.add(row["ip"])
    for key, (workers, nodes) in holders.items():
        summary[key]["total_num_workers"] = len(workers)
        summary[key]["total_num_nodes"] = len(nodes)
    return {
        "cluster": {
            "summary": summary,
            "total_objects": len(rows),
            "total_size_mb": total_mb,
            "callsite_enabled": True,
            "summary_by": "callsite",
        }
    }


def summarize_actors(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(
            row["class_name"], {"class_name": row["class_name"], "state_counts": {}}
        )
        counts = entry["state_counts"]
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(rows)}}


def chrome_trace(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A Chrome trace (Perfetto, chrome://tracing) of task executions: one
    process per node, one thread per worker, one slice per attempt that ran."""
    events: list[dict[str, Any]] = []
    pids: dict[str, int] = {}
    tids: dict[tuple[int, str], int] = {}
    for row in sorted(rows, key=lambda r: r.get("start_time_ms") or 0):
        start = row.get("start_time_ms")
        if start is None or not row.get("worker_id"):
            continue
        node = row.get("node_id") or "unknown"
        pid = pids.get(node)
        if pid is None:
            pid = pids[node] = len(pids) + 1
            events.append(_meta("process_name", pid, 0, f"node {node[:12]}"))
        worker = row["worker_id"]
        tid = tids.get((pid, worker))
        if tid is None:
            tid = tids[(pid, worker)] = len(tids) + 1
            # A worker id starts with its node's prefix: its end tells workers apart.
            label = f"worker {worker[-8:]} (pid {row.get('worker_pid') or '?'})"
            events.append(_meta("thread_name", pid, tid, label))
        end = row.get("end_time_ms") or start
        events.append(
            {
                "cat": row["type"].lower(),
                "name": row["name"],
                "ph": "X",
                "pid": pid,
                "tid": tid,
                "ts": start * 1000,
                "dur": max(0, end - start) * 1000,
                "args": {
                    "task_id": row["task_id"],
                    "attempt_number": row["attempt_number"],
                    "job_id": row["job_id"],
                    "state": row["state"],
                    "actor_id": row.get("actor_id"),
                    "error_type": row.get("error_type"),
                },
            }
        )
    return events


def _meta(name: str, pid: int, tid: int, value: str) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {"name": value}}
