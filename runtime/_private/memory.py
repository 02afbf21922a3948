"""``runtime memory``: every live reference in the cluster, by process.

Asks the gcs for the nodes, each raylet for its drivers and workers, and
each of those for its reference table (``GetReferenceTable``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from grpclib.client import Channel

from ..protocol.rt import CoreWorkerStub, Empty, GcsStub, RayletStub, ReferenceRow, WorkerInfo
from . import rpc

TIMEOUT_S = 5.0


@dataclass
class WorkerTable:
    info: WorkerInfo
    rows: list[ReferenceRow]
    lineage_bytes: int


def kinds(row: ReferenceRow) -> list[str]:
    """What holds a reference, in Ray's words."""
    if not row.owned:
        return ["BORROWED"]
    out = []
    if row.local:
        out.append("LOCAL_REFERENCE")
    if row.submitted:
        out.append("USED_BY_PENDING_TASK")
    if row.borrowers:
        out.append(f"BORROWED_BY({row.borrowers})")
    if row.contained:
        out.append("CAPTURED_IN_OBJECT")
    if row.in_store:
        out.append("PINNED_IN_STORE")
    return out or ["PENDING"]


async def collect(gcs_address: tuple[str, int], token: str | None = None) -> list[WorkerTable]:
    """Every worker's reference table (``token``: the cluster's, else the process's)."""
    channels = rpc.ChannelPool(token)
    try:
        workers = await live_workers(channels, gcs_address)
        tables = await asyncio.gather(*(_table(channels, w) for w, _ in workers))
        return [t for t in tables if t is not None]
    finally:
        channels.close()


async def live_workers(
    channels: rpc.ChannelPool, gcs_address: tuple[str, int]
) -> list[tuple[WorkerInfo, str]]:
    """Every live driver and worker, with its node's host: the gcs's nodes,
    then each node's raylet (one that does not answer is left out)."""
    gcs = GcsStub(channels.get(*gcs_address))
    nodes = (await asyncio.wait_for(gcs.get_all_nodes(Empty()), TIMEOUT_S)).nodes
    workers: list[tuple[WorkerInfo, str]] = []
    for node in nodes:
        if not node.alive:
            continue
        raylet = RayletStub(channels.get(node.host, node.raylet_port))
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            reply = await asyncio.wait_for(raylet.list_workers(Empty()), TIMEOUT_S)
            workers += [(w, node.host) for w in reply.workers]
    return workers


async def _table(channels: rpc.ChannelPool, info: WorkerInfo) -> WorkerTable | None:
    address = info.address
    if address is None or not address.port:
        return None
    channel: Channel = channels.get(address.host, address.port)
    try:
        reply = await asyncio.wait_for(
            CoreWorkerStub(channel).get_reference_table(Empty()), TIMEOUT_S
        )
    except rpc.CONNECTION_ERRORS:
        return None
    return WorkerTable(info, list(reply.rows), reply.lineage_bytes)


def _size(n: int) -> str:
    if n < 0:
        return "in store"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n //= 1024
    return f"{n} GiB"


def render(tables: list[WorkerTable]) -> str:
    lines = []
    total = 0
    for table in sorted(tables, key=lambda t: (t.info.job_id, not t.info.is_driver, t.info.pid)):
        if not table.rows:
            continue
        info = table.info
        role = "driver" if info.is_driver else (info.label or "worker")
        address = info.address
        where = f"{address.host}:{address.port}" if address is not None else "?"
        lines.append(
            f"--- pid={info.pid} ({role}, job {info.job_id}) at {where}: "
            f"{len(table.rows)} reference(s), lineage {_size(table.lineage_bytes)} ---"
        )
        lines.append(f"  {'OBJECT ID':40}  {'SIZE':>9}  {'KIND':40}  CREATED AT")
        for row in table.rows:
            total += 1
            lines.append(
                f"  {row.object_id.hex():40}  {_size(row.size):>9}  "
                f"{', '.join(kinds(row)):40}  {row.call_site}"
            )
    lines.append(f"{total} reference(s) in {len(tables)} process(es)")
    return "\n".join(lines)
