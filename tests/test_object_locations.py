"""``runtime.experimental.get_object_locations``: which nodes hold objects,
and their sizes (Ray's), on real nodes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import cluster_of
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import runtime
from runtime import exceptions
from runtime._private import rpc
from runtime.experimental import get_object_locations
from runtime.protocol.rt import ObjectSizesRequest, RayletStub
from runtime.testing import Cluster
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(120)

ARRAY_BYTES = 2 * 1024 * 1024  # (in the store: above the inline limit)


@pytest.fixture
def two_nodes() -> Iterator[tuple[Cluster, str, str]]:
    """A head and a second node (the driver's is the head); their ids."""
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        other = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        assert cluster.head_node is not None
        yield cluster, cluster.head_node.node_id, other.node_id


@runtime.remote(num_cpus=0)
def make_array(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.uint8)


@runtime.remote(num_cpus=0)
def read_size(refs: list[runtime.ObjectRef]) -> int:
    """Reads the object (a copy comes to this task's node)."""
    return int(runtime.get(refs[0]).nbytes)


@runtime.remote(num_cpus=0)
def wait_for(path: str) -> int:
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return 1


def test_locations_of_puts_results_copies_and_pending_objects(
    two_nodes: tuple[Cluster, str, str], tmp_path: os.PathLike[str]
) -> None:
    _, head, other = two_nodes
    on_other = NodeAffinitySchedulingStrategy(node_id=other, soft=False)
    small, big = runtime.put("123"), runtime.put(np.zeros(ARRAY_BYTES, dtype=np.uint8))
    remote_big = make_array.options(scheduling_strategy=on_other).remote(ARRAY_BYTES)
    runtime.wait([remote_big], fetch_local=False)
    gate = os.path.join(os.fspath(tmp_path), "gate")
    pending = wait_for.remote(gate)

    found = get_object_locations([small, big, remote_big, pending])
    assert found[small]["node_ids"] == [head] and found[small]["object_size"] > 0
    assert found[big]["node_ids"] == [head] and found[big]["object_size"] > ARRAY_BYTES
    assert found[remote_big]["node_ids"] == [other]
    assert found[remote_big]["object_size"] > ARRAY_BYTES
    assert found[pending] == {"node_ids": [], "object_size": None, "did_spill": False}

    # A copy pulled to the head counts; so does one read by a task elsewhere.
    runtime.get(remote_big)
    assert set(get_object_locations([remote_big])[remote_big]["node_ids"]) == {head, other}
    assert runtime.get(read_size.options(scheduling_strategy=on_other).remote([big])) == ARRAY_BYTES
    open(gate, "w").close()
    assert runtime.get(pending) == 1
    assert set(get_object_locations([big])[big]["node_ids"]) == {head, other}
    assert get_object_locations([pending])[pending]["node_ids"] == [head]


@runtime.remote(num_cpus=0)
def locate(refs: list[runtime.ObjectRef]) -> dict[str, object]:
    """A borrower's lookup: the owner is asked."""
    (location,) = get_object_locations(refs).values()
    return location


def test_a_borrower_asks_the_owner(two_nodes: tuple[Cluster, str, str]) -> None:
    _, head, other = two_nodes
    on_other = NodeAffinitySchedulingStrategy(node_id=other, soft=False)
    small = runtime.put({"a": 1})
    seen = runtime.get(locate.options(scheduling_strategy=on_other).remote([small]))
    assert seen["node_ids"] == [head] and seen["object_size"] > 0  # type: ignore[operator]


def test_bad_input_and_bounds(cluster: runtime.RuntimeContext) -> None:
    assert get_object_locations([]) == {}
    ref = runtime.put(1)
    with pytest.raises(TypeError, match="list of ObjectRefs"):
        get_object_locations(ref)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ObjectRefs, got an item of type str"):
        get_object_locations([ref, "x"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="timeout_ms must be an int"):
        get_object_locations([ref], timeout_ms=1.5)  # type: ignore[arg-type]
    big = runtime.put(np.zeros(ARRAY_BYTES, dtype=np.uint8))
    with pytest.raises(exceptions.GetTimeoutError):
        get_object_locations([big], timeout_ms=0)  # (the nodes are asked: not at once)
    assert get_object_locations([big], timeout_ms=10_000)[big]["object_size"] > ARRAY_BYTES


def test_uninitialized() -> None:
    if runtime.is_initialized():
        runtime.shutdown()
    with pytest.raises(RuntimeError):
        get_object_locations([])


def test_the_raylet_refuses_bad_lookups(two_nodes: tuple[Cluster, str, str]) -> None:
    """The size lookup's RPC takes whole object ids, and a bounded number."""
    cluster, _, _ = two_nodes
    assert cluster.head is not None
    ref = runtime.put(np.zeros(ARRAY_BYTES, dtype=np.uint8))

    async def ask(ids: list[bytes]) -> list[int]:
        assert cluster.head is not None
        pool = rpc.ChannelPool(cluster.head.token)
        try:
            raylet = RayletStub(pool.get(*cluster.head.raylet_address))
            return list((await raylet.get_object_sizes(ObjectSizesRequest(object_ids=ids))).sizes)
        finally:
            pool.close()

    unknown = bytes(len(ref.binary()))
    sizes = asyncio.run(ask([ref.binary(), unknown]))
    assert sizes[0] > ARRAY_BYTES and sizes[1] == -1
    for ids, says in [([b"abc"], "bytes long"), ([unknown] * 100_001, "at most")]:
        with pytest.raises(GRPCError, match=says) as caught:
            asyncio.run(ask(ids))
        assert caught.value.status is Status.INVALID_ARGUMENT


def test_a_spilled_object_says_so(tmp_path) -> None:
    # Ray's did_spill: 3 objects of 40 MB into a 100 MB store, the first one spilled.
    ctx = runtime.init(num_cpus=1, object_store_memory=100 << 20)
    try:
        first = runtime.put(np.zeros(40 << 20, dtype=np.uint8))
        later = [runtime.put(np.ones(40 << 20, dtype=np.uint8)) for _ in range(2)]
        small = runtime.put(1)
        found = get_object_locations([first, *later, small])
        assert found[first]["did_spill"] is True
        assert found[later[-1]]["did_spill"] is False and found[small]["did_spill"] is False
        assert found[first]["object_size"] >= 40 << 20  # on disk, where it still counts
    finally:
        runtime.shutdown()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)
