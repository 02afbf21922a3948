"""Every RPC boundary refuses bad values, and junk on any port leaves the
cluster working: a bounded fuzz run against real processes."""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import cluster_of
from grpclib.const import Status

import runtime
from runtime._private import resources as res
from runtime._private import rpc
from runtime.protocol.rt import (
    ActorInfo,
    Address,
    AdoptObjectRequest,
    Bundle,
    CoreWorkerStub,
    CreateActorRequest,
    Empty,
    GcsStub,
    LeaseRequest,
    LeaseStatus,
    PrepareBundlesBatch,
    PrepareBundlesRequest,
    RayletStub,
    ReconstructRequest,
    RemovePlacementGroupsRequest,
    ReportResourcesRequest,
    WorkerExitRequest,
)
from runtime.testing import Cluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def one_node() -> Iterator[Cluster]:
    with cluster_of(head_node_args={"num_cpus": 2}) as cluster:
        runtime.init(address=cluster.address)
        yield cluster


def _stubs(cluster: Cluster) -> tuple[rpc.ChannelPool, GcsStub, RayletStub]:
    assert cluster.head is not None
    pool = rpc.ChannelPool(cluster.head.token)
    return (
        pool,
        GcsStub(pool.get(*cluster.head.gcs_address)),
        RayletStub(pool.get(*cluster.head.raylet_address)),
    )


def _free_cpus(cluster: Cluster) -> float:
    async def ask() -> float:
        pool, _, raylet = _stubs(cluster)
        try:
            reply = await raylet.get_node_stats(Empty())
        finally:
            pool.close()
        assert reply.node is not None
        return float(reply.node.resources_available.get("CPU", 0.0))

    return asyncio.run(ask())


BAD_AMOUNTS = [-1.0, -1e18, math.nan, math.inf, 1e18]


def test_bad_resource_amounts_are_refused_and_change_nothing(one_node: Cluster) -> None:
    async def run() -> None:
        pool, gcs, raylet = _stubs(one_node)
        try:
            await attempts(gcs, raylet)
        finally:
            pool.close()

    async def attempts(gcs: GcsStub, raylet: RayletStub) -> None:
        before = (await raylet.get_node_stats(Empty())).node
        assert before is not None
        for amount in BAD_AMOUNTS:
            lease = await raylet.request_worker_lease(
                LeaseRequest(job_id=1, resources={"CPU": amount}, task_name="evil")
            )
            assert lease.status is LeaseStatus.FAILED and "invalid" in lease.error
            batch = PrepareBundlesBatch(
                groups=[
                    PrepareBundlesRequest(
                        placement_group_id=bytes(16), bundles=[Bundle(resources={"CPU": amount})]
                    )
                ]
            )
            (prepared,) = (await raylet.prepare_bundles(batch)).results
            assert not prepared.ok and "invalid" in prepared.error
            created = await gcs.create_actor(
                CreateActorRequest(
                    actor=ActorInfo(actor_id=os.urandom(16), resources={"CPU": amount})
                )
            )
            assert not created.ok and "invalid" in created.error
            with pytest.raises(rpc.GRPCError):
                await gcs.report_resources(
                    ReportResourcesRequest(
                        node_id=before.node_id,
                        resources=res.encode_sets({}, {"CPU": abs(amount) * 1e20}),
                    )
                )
        # Resources that are not the JSON object they should be are refused too.
        for raw in (b"", b"[1]", b'{"available": {"CPU": "1"}}', b'{"total": {"CPU": true}}'):
            with pytest.raises(rpc.GRPCError):
                await gcs.report_resources(
                    ReportResourcesRequest(node_id=before.node_id, resources=raw)
                )
        # A lease for an owner that is no worker of the cluster is refused too.
        stranger = await raylet.request_worker_lease(
            LeaseRequest(job_id=1, resources={"CPU": 1}, owner_id=b"W" + os.urandom(15))
        )
        assert stranger.status is LeaseStatus.FAILED and "owner" in stranger.error
        after = (await raylet.get_node_stats(Empty())).node
        assert after is not None
        assert after.resources_available == before.resources_available
        nodes = (await gcs.get_all_nodes(Empty())).nodes
        assert nodes[0].resources_total["CPU"] == 2.0

    asyncio.run(run())
    assert _free_cpus(one_node) == 2.0
    assert runtime.get([runtime.remote(lambda: 1).remote() for _ in range(4)]) == [1] * 4


def _junk(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 9, 24, 100, 4096])
    prefix = rng.choice([b"", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00\x00\x00\x08"])
    return prefix + rng.randbytes(size)


def _send(address: Any, data: bytes, family: int = socket.AF_INET) -> None:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(address)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    except OSError:
        pass  # the peer hung up on the junk: what it should do


def test_a_workers_exit_is_asked_with_a_worker_id_and_a_bounded_wait(one_node: Cluster) -> None:
    async def run() -> None:
        pool, _, raylet = _stubs(one_node)
        try:
            for worker_id, wait in ((b"", 0.0), (b"W" * 16, -1.0), (b"W" * 16, math.nan),
                                    (b"W" * 16, 60.0)):  # fmt: skip
                request = WorkerExitRequest(worker_id=worker_id, wait_s=wait)
                with pytest.raises(rpc.GRPCError) as caught:
                    await raylet.get_worker_exit(request)
                assert caught.value.status is Status.INVALID_ARGUMENT
            unknown = await raylet.get_worker_exit(WorkerExitRequest(worker_id=b"W" * 16))
            assert not unknown.known
        finally:
            pool.close()

    asyncio.run(run())


def test_junk_on_every_port_leaves_the_cluster_working(one_node: Cluster) -> None:
    assert one_node.head is not None
    rng = random.Random(1234)
    node = runtime.nodes()[0]
    host, port, _ = runtime.api._context.current().address
    tcp = [
        one_node.head.gcs_address,
        one_node.head.raylet_address,
        ("127.0.0.1", node["ObjectManagerPort"]),
        (host, port),
    ]
    for _ in range(25):
        for address in tcp:
            _send(address, _junk(rng))
        _send(node["ObjectStoreSocketName"], _junk(rng), socket.AF_UNIX)

    # Well-formed messages with wrong values, signed with the right token.
    async def wrong_messages() -> None:
        pool, gcs, raylet = _stubs(one_node)
        try:
            await send_wrong(gcs, raylet)
        finally:
            pool.close()

    async def send_wrong(gcs: GcsStub, raylet: RayletStub) -> None:
        calls = [
            raylet.return_worker(Empty()),  # type: ignore[arg-type]
            raylet.prepare_bundles(PrepareBundlesRequest(placement_group_id=b"x")),  # type: ignore[arg-type]
            gcs.kill_actor(Empty()),  # type: ignore[arg-type]
            gcs.wait_placement_group(Empty()),  # type: ignore[arg-type]
            gcs.remove_placement_groups(RemovePlacementGroupsRequest(placement_group_ids=[b"x"])),
        ]
        for call in calls:
            try:
                await asyncio.wait_for(call, 15)
            except (rpc.GRPCError, TimeoutError, AttributeError, TypeError):
                pass

    asyncio.run(wrong_messages())
    assert runtime.get([runtime.remote(lambda x: x * 2).remote(i) for i in range(8)]) == [
        2 * i for i in range(8)
    ]
    assert runtime.get(runtime.put(b"still here")) == b"still here"


def test_a_store_client_that_leaves_a_frame_half_sent_is_dropped() -> None:
    with cluster_of(
        head_node_args={"num_cpus": 1}, system_config={"store_frame_timeout_s": 0.5}
    ) as cluster:
        runtime.init(address=cluster.address)
        path = runtime.nodes()[0]["ObjectStoreSocketName"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(path)
            client.sendall(b"\x00\x00\x01\x00" + b"x" * 10)  # 256 bytes promised, 10 sent
            assert client.recv(1) == b""  # hung up on, within the timeout
        assert runtime.get(runtime.put(b"y" * (1 << 20))) == b"y" * (1 << 20)


def test_a_connection_closed_under_a_call_fails_it_as_a_connection_error(
    one_node: Cluster,
) -> None:
    """A peer's death can close a channel's connection between the channel
    finding it up and the call opening its stream, or after a reply arrived but
    before it was read: the first is a connection error, the second a reply."""

    async def run() -> None:
        pool, _, raylet = _stubs(one_node)
        try:
            assert (await raylet.get_node_stats(Empty())).node is not None
            assert one_node.head is not None
            channel = pool.get(*one_node.head.raylet_address)
            connection = channel._protocol.connection  # type: ignore[attr-defined]
            connection.close()  # as the peer's reset does, before the channel hears of it
            connection.flush()  # nowhere to write: the bytes are dropped
            with pytest.raises(rpc.CONNECTION_ERRORS):
                await raylet.get_node_stats(Empty())
            # The channel hears of the close and opens a fresh connection.
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    assert (await raylet.get_node_stats(Empty())).node is not None
                    break
                except rpc.CONNECTION_ERRORS:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.01)
        finally:
            pool.close()

    asyncio.run(run())


def test_an_object_handed_to_its_owner_must_be_a_puts(one_node: Cluster) -> None:
    """``AdoptObject`` (``put(value, _owner=actor)``) takes only what such a put
    sends, for an object the owner does not know yet."""
    driver = runtime.api._context.current()
    known = runtime.put(1)

    async def run() -> None:
        assert one_node.head is not None
        pool = rpc.ChannelPool(one_node.head.token)
        stub = CoreWorkerStub(pool.get(driver.host, driver.port))
        me = Address(host="127.0.0.1", port=1, worker_id=b"w" * 16)
        fresh = os.urandom(20)
        refused = [
            AdoptObjectRequest(object_id=b"short", metadata=0, data=b"", borrower=me),
            AdoptObjectRequest(object_id=fresh, metadata=1, data=b"", borrower=me),
            AdoptObjectRequest(object_id=fresh, metadata=3, data=b"not a marker", borrower=me),
            AdoptObjectRequest(object_id=fresh, metadata=0, data=b""),
            AdoptObjectRequest(object_id=fresh, metadata=0, data=b"x" * (1 << 20), borrower=me),
            AdoptObjectRequest(object_id=known.binary(), metadata=0, data=b"", borrower=me),
        ]
        try:
            for request in refused:
                with pytest.raises(rpc.GRPCError) as caught:
                    await stub.adopt_object(request)
                assert caught.value.status is Status.INVALID_ARGUMENT, request
        finally:
            pool.close()
        assert fresh not in driver.refs

    asyncio.run(run())
    assert runtime.get(known) == 1


def test_a_rebuild_is_asked_for_a_whole_object_id(one_node: Cluster) -> None:
    driver = runtime.api._context.current()

    async def run() -> None:
        assert one_node.head is not None
        pool = rpc.ChannelPool(one_node.head.token)
        stub = CoreWorkerStub(pool.get(driver.host, driver.port))
        try:
            with pytest.raises(rpc.GRPCError) as caught:
                await stub.reconstruct(ReconstructRequest(object_id=b"short"))
            assert caught.value.status is Status.INVALID_ARGUMENT
            unknown = await stub.reconstruct(ReconstructRequest(object_id=os.urandom(20)))
            assert not unknown.ok and unknown.error
        finally:
            pool.close()

    asyncio.run(run())
