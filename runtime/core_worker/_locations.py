"""Where objects are: Ray's ``get_object_locations``, on the loop.

An object is pending (no node, no size yet), a value kept by its owner's
process (a small one: the owner's node, the value's size), or in the object
store of one node or more (the primary and the copies other nodes pulled;
spilled ones count where they were spilled). The store objects' nodes and
sizes come from asking every alive node's raylet which of them it holds,
so copies dropped since show as gone. A borrowed object's owner is asked
for its value without waiting; an owner that cannot say (gone, or the
object freed) leaves the object out of the answer, as in Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._private import rpc, serialization
from .._private.ids import node_prefix
from .._private.serialization import SerializedObject
from ..protocol.rt import (
    CoreWorkerStub,
    Empty,
    GetObjectRequest,
    NodeInfo,
    ObjectSizesReply,
    ObjectSizesRequest,
    ObjectStatus,
    RayletStub,
)
from ._reference import Reference

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

#: An object's location: the ids of the nodes that hold it, its size in bytes
#: (None while it is pending, or when no node holds it any more), and whether a
#: node holding it has written it to disk (Ray's ``did_spill``).
Location = tuple[list[bytes], int | None, bool]

_PENDING: Location = ([], None, False)


async def locations(worker: CoreWorker, refs: Sequence[Reference]) -> dict[bytes, Location]:
    """The locations of ``refs``' objects, by object id (those whose lookup
    failed are left out)."""
    values = await asyncio.gather(*(_value(worker, ref) for ref in refs))
    nodes = await _nodes(worker)
    out: dict[bytes, Location] = {}
    in_store: dict[bytes, bytes] = {}  # object id -> its primary's node id
    for ref, (found, obj) in zip(refs, values, strict=True):
        if not found:
            continue
        if obj is None:
            out[ref._id] = _PENDING
        elif obj.metadata == serialization.METADATA_IN_STORE:
            in_store[ref._id] = serialization.store_location(obj)[1]
        else:  # kept by its owner's process
            out[ref._id] = ([_owner_node(worker, ref, nodes)], len(obj.data), False)
    if in_store:
        alive = [node for node in nodes if node.alive]
        out.update(await _store_locations(worker, list(in_store), alive))
    return out


async def _nodes(worker: CoreWorker) -> list[NodeInfo]:
    """The cluster's nodes, from the gcs (a worker hears only of changes)."""
    try:
        return list((await worker.gcs.get_all_nodes(Empty())).nodes)
    except rpc.CONNECTION_ERRORS:
        return list(worker.cluster.nodes.values())


async def _value(worker: CoreWorker, ref: Reference) -> tuple[bool, SerializedObject | None]:
    """(whether the lookup succeeded, the object's value or marker: None while pending)."""
    obj = worker.store.get_nowait(ref._id)
    if obj is not None or worker.objects.owned(ref):
        return True, obj
    host, port, _ = ref._owner
    stub = CoreWorkerStub(worker.channels.get(host, port))
    try:
        reply = await stub.get_object(GetObjectRequest(object_id=ref._id, timeout=0.0))
    except rpc.CONNECTION_ERRORS:
        return False, None
    if reply.status is ObjectStatus.READY:
        return True, SerializedObject(reply.metadata, reply.data)
    return reply.status is not ObjectStatus.FREED, None


def _owner_node(worker: CoreWorker, ref: Reference, nodes: list[NodeInfo]) -> bytes:
    """The node of the process that owns ``ref`` (its worker id names it)."""
    if worker.objects.owned(ref):
        return worker.node_id
    prefix = node_prefix(ref._owner[2])
    for node in nodes:
        if node.node_id.startswith(prefix):
            return node.node_id
    return prefix


async def _store_locations(
    worker: CoreWorker, object_ids: list[bytes], nodes: list[NodeInfo]
) -> dict[bytes, Location]:
    async def ask(host: str, port: int) -> ObjectSizesReply:
        stub = RayletStub(worker.channels.get(host, port))
        try:
            return await stub.get_object_sizes(ObjectSizesRequest(object_ids=object_ids))
        except rpc.CONNECTION_ERRORS:
            return ObjectSizesReply()  # (a node going away holds nothing)

    answers = await asyncio.gather(*(ask(n.host, n.raylet_port) for n in nodes))
    out: dict[bytes, Location] = {}
    for i, object_id in enumerate(object_ids):
        holders = [
            (node.node_id, reply.sizes[i], i < len(reply.spilled) and reply.spilled[i])
            for node, reply in zip(nodes, answers, strict=True)
            if i < len(reply.sizes) and reply.sizes[i] >= 0
        ]
        size = max((s for _, s, _ in holders), default=None)
        spilled = any(spilled for _, _, spilled in holders)
        out[object_id] = ([node_id for node_id, _, _ in holders], size, spilled)
    return out
