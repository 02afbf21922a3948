"""``put(value, _owner=actor)``: an object made here and owned by an actor.

Ray's experimental ``_owner``: the object's lifetime follows the actor's, not
its maker's. The maker pickles the value, asks the gcs where the actor's
worker is, writes a large value to this node's store in the actor's name (so
the store frees it if the actor dies, not if the maker does) and hands the
object to the actor's worker (``AdoptObject``). That worker owns it from then
on: it holds the value or the store marker and counts the maker as the
object's first borrower, so the object lives while the maker's ref does, and
after that while refs the actor (or anyone it reached) holds do. As Ray says,
the maker must pass a ref to the actor before it lets go of its own.

Invariants: the maker's ref exists only once the owner has the object (the
call returns after ``AdoptObject`` does), so no read can reach an owner that
does not know it yet; and the maker's count exists before ``AdoptObject`` is
sent, so the owner's first poll of the maker cannot find the borrow ended.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import rpc, serialization
from .._private.ids import OBJECT_ID_SIZE
from .._private.serialization import NODE_ID_SIZE, SerializedObject
from ..protocol.rt import (
    ActorState,
    Address,
    AdoptObjectRequest,
    CoreWorkerStub,
    WaitActorRequest,
)
from ._objects import pickle_for_put
from ._reference import OwnerAddress, Reference

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

#: What a handed value may be: a plain value (in or out of band) or the marker
#: of a value in a node's store (never an error: ``put`` makes none).
_VALUE_KINDS = frozenset(
    {
        serialization.METADATA_VALUE,
        serialization.METADATA_VALUE_OOB,
        serialization.METADATA_IN_STORE,
    }
)


def put_owned_by(worker: CoreWorker, value: Any, actor_key: bytes, actor_name: str) -> Reference:
    """From a thread that may block: ``value`` stored, owned by the actor that
    the handle with ``actor_key`` names."""
    worker.check_cluster()
    pickled = pickle_for_put(value)
    if pickled.refs:
        raise ValueError(
            "put(value, _owner=...) of a value that holds ObjectRefs is not supported: "
            "pass those refs to the actor itself"
        )
    owner = worker.bridge.run_blocking(_actor_address(worker, actor_key, actor_name))
    object_id = worker.ids.put_id()
    obj = worker.objects.store_or_inline(object_id, pickled, owner[2])
    worker.bridge.run_blocking(_hand_over(worker, object_id, obj, owner, actor_name))
    return worker.make_ref(object_id, owner, worker, counted=True)  # (counted by _hand_over)


async def _actor_address(worker: CoreWorker, key: bytes, name: str) -> OwnerAddress:
    """The actor's worker, once the actor is alive (or ActorDiedError)."""
    client = worker.actor_client
    queue = client.actors.existing(key)
    if queue is not None:  # (made here: its gcs id is known once it is registered)
        await client.actors.wait_registered(queue)
    request = WaitActorRequest(actor_id=client.actor_id_of(key), min_restarts=0)
    try:
        reply = await worker.gcs.wait_actor(request)
    except rpc.CONNECTION_ERRORS as e:
        raise exceptions.ActorDiedError(f"actor {name}: the gcs is unreachable ({e})") from None
    info = reply.actor
    if not reply.found or info is None:
        raise exceptions.ActorDiedError(f"actor {name} is unknown to the gcs: it owns no objects")
    if info.state is ActorState.DEAD or info.address is None:
        raise exceptions.ActorDiedError(
            f"actor {name} is dead ({info.death_cause or 'it died'}): it cannot own objects"
        )
    return (info.address.host, info.address.port, info.address.worker_id)


async def _hand_over(
    worker: CoreWorker,
    object_id: bytes,
    obj: SerializedObject,
    owner: OwnerAddress,
    name: str,
) -> None:
    host, port, _ = owner
    me = Address(host=worker.host, port=worker.port, worker_id=worker.worker_id)
    request = AdoptObjectRequest(
        object_id=object_id, metadata=obj.metadata, data=obj.data, borrower=me
    )
    # The maker's count exists before the owner hears of the object: the
    # owner's first poll of its new borrower must find the ref (a count made
    # after it would read as the borrow already ended, and the object freed).
    # No registration: the handing over is one.
    worker.refs.add_local(object_id, owned=False)
    try:
        await CoreWorkerStub(worker.channels.get(host, port)).adopt_object(request)
    except rpc.CONNECTION_ERRORS as e:
        worker.refs.remove_local(object_id)
        # Nobody owns the copy written in the actor's name: not left behind.
        if obj.metadata == serialization.METADATA_IN_STORE and worker.store_client is not None:
            with contextlib.suppress(exceptions.RayError, OSError):
                worker.store_client.delete([object_id])
        raise exceptions.ActorDiedError(
            f"actor {name} could not take the object it was to own ({e})"
        ) from None


def adopt(worker: CoreWorker, request: AdoptObjectRequest) -> None:
    """On the owner's loop: the handed object becomes this process's, with its
    maker as a borrower. ValueError for what no ``put`` would send."""
    object_id, data, borrower = request.object_id, request.data, request.borrower
    if len(object_id) != OBJECT_ID_SIZE:
        raise ValueError(f"object_id must be {OBJECT_ID_SIZE} bytes")
    if borrower is None or not borrower.host or not 0 < borrower.port < 65536:
        raise ValueError("the borrower's address is missing or invalid")
    if request.metadata not in _VALUE_KINDS:
        raise ValueError(f"metadata {request.metadata} is not a value's")
    if request.metadata == serialization.METADATA_IN_STORE:
        if len(data) != OBJECT_ID_SIZE + NODE_ID_SIZE or data[:OBJECT_ID_SIZE] != object_id:
            raise ValueError("a store marker must name the object and a node")
    elif len(data) > 2 * worker.config.max_inline_object_size:
        raise ValueError("an inline value over twice max_inline_object_size")
    if object_id in worker.refs or object_id in worker.store:
        raise ValueError(f"object {object_id.hex()} is already known here")
    worker.refs.add_owned(object_id, 0)
    worker.store.put(object_id, SerializedObject(request.metadata, data))
    worker.ownership.add_borrowers([object_id], (borrower.host, borrower.port, borrower.worker_id))
