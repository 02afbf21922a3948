"""Placement groups on a real several-node cluster: strategies, pending groups,
isolation of what they reserve, child capture, removal and node failure."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import cluster_of, gcs_pid, wait_until

import runtime
from runtime import exceptions
from runtime.protocol.rt import (
    Bundle,
    BundlesBatch,
    BundlesRequest,
    PrepareBundlesBatch,
    PrepareBundlesRequest,
    RayletStub,
)
from runtime.testing import Cluster
from runtime.util.placement_group import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from runtime.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def three_nodes() -> Iterator[Cluster]:
    """A head and two nodes of 2 CPUs each; a driver."""
    with cluster_of(head_node_args={"num_cpus": 2}) as cluster:
        cluster.add_node(num_cpus=2)
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        yield cluster


@runtime.remote(num_cpus=0)
def node_of() -> str:
    return runtime.get_runtime_context().get_node_id()


def in_bundle(pg: Any, index: int = -1, **more: Any) -> dict[str, Any]:
    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, index, **more)}


def bundle_nodes(pg: Any) -> list[str]:
    row = placement_group_table(pg)
    return [row["bundles_to_node_id"][i] for i in range(len(row["bundles"]))]


def test_each_strategy_places_its_bundles(three_nodes: Cluster) -> None:
    pack = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="PACK")
    spread = placement_group([{"CPU": 0.5}] * 3, strategy="SPREAD")
    runtime.get([pack.ready(), spread.ready()], timeout=30)
    assert len(set(bundle_nodes(pack))) == 1
    assert len(set(bundle_nodes(spread))) == 3
    remove_placement_group(pack)
    remove_placement_group(spread)

    strict_pack = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_PACK")
    strict_spread = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert strict_pack.wait(30) and strict_spread.wait(30)
    assert len(set(bundle_nodes(strict_pack))) == 1
    nodes = bundle_nodes(strict_spread)
    assert len(set(nodes)) == 3
    # Each task runs on its bundle's node, and knows its group.
    where = [node_of.options(**in_bundle(strict_spread, i)).remote() for i in range(3)]
    assert runtime.get(where, timeout=30) == nodes
    table = placement_group_table()
    assert table[strict_spread.id.hex()]["state"] == "CREATED"
    assert table[strict_spread.id.hex()]["strategy"] == "STRICT_SPREAD"


def test_strict_spread_waits_for_a_node_and_is_placed_when_one_joins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        with caplog.at_level(logging.WARNING, logger="runtime"):
            pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD", name="trio")
            wait_until(lambda: "needs 3 nodes" in caplog.text, what="the driver's warning")
        assert not pg.wait(0.5)
        row = placement_group_table(pg)
        assert row["state"] == "PENDING"
        assert "infeasible" in row["stats"]["scheduling_state"]
        assert get_placement_group("trio") == pg
        ready = pg.ready()
        assert runtime.wait([ready], timeout=0.2)[0] == []
        cluster.add_node(num_cpus=1)
        assert runtime.get(ready, timeout=30) == pg
        assert len(set(bundle_nodes(pg))) == 3


@runtime.remote(num_cpus=0)
def remove_in_a_task(pg: Any) -> None:
    remove_placement_group(pg)


def test_a_drivers_waits_follow_its_groups_removed_elsewhere() -> None:
    """The gcs tells a driver its groups' states, and its waits answer from
    them: a group removed by a task is not reported placed afterwards."""
    with cluster_of(head_node_args={"num_cpus": 2}) as cluster:
        runtime.init(address=cluster.address)
        pg = placement_group([{"CPU": 1}])
        assert pg.wait(30)
        assert runtime.get(pg.ready(), timeout=30) == pg
        runtime.get(remove_in_a_task.remote(pg), timeout=30)
        wait_until(lambda: not pg.wait(0), what="the driver to hear of the removal")
        with pytest.raises(exceptions.TaskPlacementGroupRemoved):
            runtime.get(pg.ready(), timeout=30)
        # One removed here is not reported placed either.
        other = placement_group([{"CPU": 1}])
        assert other.wait(30)
        remove_placement_group(other)
        assert not other.wait(0)


def test_reserved_resources_serve_only_the_group() -> None:
    with cluster_of(head_node_args={"num_cpus": 2}) as cluster:
        runtime.init(address=cluster.address)
        pg = placement_group([{"CPU": 2}])
        assert pg.wait(30)
        outside = node_of.options(num_cpus=1).remote()
        # Every CPU is the group's: the task outside it waits ...
        assert runtime.wait([outside], timeout=1.0)[0] == []
        # ... while tasks inside it run, two at a time.
        inside = [node_of.options(num_cpus=1, **in_bundle(pg, 0)).remote() for _ in range(4)]
        assert len(runtime.get(inside, timeout=30)) == 4
        remove_placement_group(pg)
        runtime.get(outside, timeout=30)  # the group's CPUs are the node's again


def test_bad_input_is_refused_at_the_call_site(three_nodes: Cluster) -> None:
    for bundles in ([], [{}], [{"CPU": 0}], [{"CPU": -1}], [{"CPU": float("nan")}], [1]):
        with pytest.raises(ValueError):
            placement_group(bundles)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="below the smallest amount"):
        placement_group([{"CPU": 1e-5}])
    with pytest.raises(ValueError, match="strategy"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")
    pg = placement_group([{"CPU": 1}, {"CPU": 0.5}])
    with pytest.raises(ValueError, match="out of range"):
        node_of.options(**in_bundle(pg, 2)).remote()
    with pytest.raises(ValueError, match="does not fit"):
        node_of.options(num_cpus=1, **in_bundle(pg, 1)).remote()
    with pytest.raises(ValueError, match="does not fit"):
        node_of.options(num_cpus=2, **in_bundle(pg)).remote()
    with pytest.raises(TypeError):
        PlacementGroupSchedulingStrategy("pg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="placement group"):
        node_of.options(resources={f"CPU_group_{pg.id.hex()}": 1}).remote()
    with pytest.raises(ValueError, match="already exists"):
        placement_group([{"CPU": 0.1}], name="twice")
        placement_group([{"CPU": 0.1}], name="twice")
    with pytest.raises(ValueError, match="Failed to look up"):
        get_placement_group("nobody")


@runtime.remote(num_cpus=0)
def child_group() -> str | None:
    pg = get_current_placement_group()
    return pg.id.hex() if pg is not None else None


@runtime.remote(num_cpus=0)
def parent_and_child() -> tuple[str | None, str | None]:
    own = get_current_placement_group()
    return (own.id.hex() if own is not None else None), runtime.get(child_group.remote())


@runtime.remote(num_cpus=0)
def group_context() -> tuple[str | None, bool]:
    ctx = runtime.get_runtime_context()
    return ctx.get_placement_group_id(), ctx.should_capture_child_tasks_in_placement_group()


def test_capture_child_tasks(three_nodes: Cluster) -> None:
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)
    assert get_current_placement_group() is None  # a driver is in no group
    assert runtime.get_runtime_context().get_placement_group_id() is None
    capturing = group_context.options(**in_bundle(pg, placement_group_capture_child_tasks=True))
    assert runtime.get(capturing.remote(), timeout=30) == (pg.id.hex(), True)
    assert runtime.get(group_context.options(**in_bundle(pg)).remote(), timeout=30) == (
        pg.id.hex(),
        False,
    )
    captured = parent_and_child.options(**in_bundle(pg, placement_group_capture_child_tasks=True))
    assert runtime.get(captured.remote(), timeout=30) == (pg.id.hex(), pg.id.hex())
    # Without capture the child runs outside the group; the older options work too.
    free = parent_and_child.options(placement_group=pg, placement_group_bundle_index=0)
    assert runtime.get(free.remote(), timeout=30) == (pg.id.hex(), None)


@runtime.remote(num_cpus=1)
class Member:
    def node(self) -> str:
        return runtime.get_runtime_context().get_node_id()

    def group(self) -> str | None:
        pg = get_current_placement_group()
        return pg.id.hex() if pg is not None else None


@runtime.remote(num_cpus=1)
def sleeper(mark: str) -> None:
    import time

    open(mark, "w").close()
    time.sleep(60)


def test_removal_kills_actors_fails_tasks_and_frees_everything(
    three_nodes: Cluster, tmp_path: Any
) -> None:
    before = runtime.available_resources()["CPU"]
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    assert pg.wait(30)
    actor = Member.options(**in_bundle(pg, 1)).remote()
    assert runtime.get(actor.group.remote(), timeout=30) == pg.id.hex()
    mark = tmp_path / "started"
    running = sleeper.options(max_retries=0, **in_bundle(pg, 0)).remote(str(mark))
    wait_until(mark.exists, what="the task in the group to start")
    remove_placement_group(pg)
    # A task running in the group is killed, for the group's removal: not a crash
    # (no retry spent, no worker death reported; with no retries it was one).
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        runtime.get(running, timeout=30)
    with pytest.raises(exceptions.ActorDiedError, match="placement group was removed"):
        runtime.get(actor.node.remote(), timeout=30)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        runtime.get(node_of.options(**in_bundle(pg, 0)).remote(), timeout=30)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        runtime.get(pg.ready(), timeout=30)
    assert placement_group_table(pg)["state"] == "REMOVED"
    wait_until(
        lambda: (
            runtime.available_resources().get("CPU") == before
            and not any("_group_" in k for k in runtime.cluster_resources())
        ),
        what="the group's resources to be freed everywhere",
    )


@runtime.remote(num_cpus=0)
def submit_into(pg: Any, mark: str) -> str:
    """A task outside the group that submits one into it and waits for it."""
    inner = sleeper.options(max_retries=0, **in_bundle(pg, 0)).remote(mark)
    try:
        runtime.get(inner, timeout=60)
    except Exception as e:
        return type(e).__name__
    return "finished"


def test_a_worker_owner_learns_its_tasks_group_was_removed(
    three_nodes: Cluster, tmp_path: Any
) -> None:
    """Workers hear no group announcements: the owner asks the gcs when the
    task's worker dies, rather than spend a retry (or, with none, call it a crash)."""
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)
    mark = tmp_path / "started"
    outcome = submit_into.remote(pg, str(mark))
    wait_until(mark.exists, what="the task in the group to start")
    remove_placement_group(pg)
    assert runtime.get(outcome, timeout=60) == "TaskPlacementGroupRemoved"


def test_a_dead_nodes_bundles_are_rescheduled_and_actors_restart(three_nodes: Cluster) -> None:
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(30)
    head = three_nodes.head_node
    assert head is not None
    # The bundle on a node that is not the head: that node dies.
    nodes = bundle_nodes(pg)
    index = next(i for i, node_id in enumerate(nodes) if node_id != head.node_id)
    victim = next(n for n in three_nodes.nodes if n.node_id == nodes[index])
    actor = Member.options(max_restarts=1, max_task_retries=1, **in_bundle(pg, index)).remote()
    assert runtime.get(actor.node.remote(), timeout=30) == victim.node_id
    os.kill(victim.pid, signal.SIGKILL)
    three_nodes.wait_for_dead(victim)
    wait_until(
        lambda: (
            placement_group_table(pg)["state"] == "CREATED"
            and victim.node_id not in bundle_nodes(pg)
        ),
        timeout=30,
        what="the lost bundle to be placed on the spare node",
    )
    moved = bundle_nodes(pg)
    assert len(set(moved)) == 2
    # The actor restarts in its bundle, now on the spare node.
    assert runtime.get(actor.node.remote(), timeout=30) == moved[index]
    assert runtime.util.list_actors()[0]["num_restarts"] == 1


def test_a_failed_prepare_is_rolled_back() -> None:
    """The gcs's view is stale (reports every 60 s here): it tries two nodes,
    one cannot reserve, and what the other prepared is returned."""
    config = {"resource_report_period_s": 60.0}
    with cluster_of(head_node_args={"num_cpus": 2}, system_config=config) as cluster:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        other = next(n for n in runtime.nodes() if not n["IsHead"])
        head = next(n for n in runtime.nodes() if n["IsHead"])
        squatter = bytes(16)
        # A lease on each node makes it report now; the next report is 60 s away.
        for node in (head, other):
            affinity = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            runtime.get(node_of.options(scheduling_strategy=affinity).remote(), timeout=30)

        async def on_other(call: str, request: Any) -> Any:
            from runtime._private import rpc

            pool = rpc.ChannelPool()
            try:
                stub = RayletStub(pool.get(other["NodeManagerAddress"], other["NodeManagerPort"]))
                return await getattr(stub, call)(request)
            finally:
                pool.close()

        # Someone else holds every CPU of the other node; the gcs does not know.
        prepared = asyncio.run(
            on_other(
                "prepare_bundles",
                PrepareBundlesBatch(
                    groups=[
                        PrepareBundlesRequest(
                            placement_group_id=squatter,
                            bundles=[Bundle(index=0, resources={"CPU": 2})],
                        )
                    ]
                ),
            )
        )
        assert prepared.results[0].ok
        pg = placement_group([{"CPU": 2}, {"CPU": 2}], strategy="STRICT_SPREAD")
        assert not pg.wait(1.0)

        def head_free() -> float:
            return float(_node_stats(head)["CPU"])

        wait_until(lambda: head_free() == 2.0, what="the head's prepared bundle to be returned")
        asyncio.run(
            on_other(
                "return_bundles", BundlesBatch(groups=[BundlesRequest(placement_group_id=squatter)])
            )
        )
        assert pg.wait(30)  # the next try finds room on both
        assert head_free() == 0.0


def _node_stats(node: dict[str, Any]) -> dict[str, float]:
    """A raylet's own free resources, asked directly (the gcs's view is stale)."""
    from runtime._private import rpc
    from runtime.protocol.rt import Empty

    async def ask() -> dict[str, float]:
        pool = rpc.ChannelPool()
        try:
            stub = RayletStub(pool.get(node["NodeManagerAddress"], node["NodeManagerPort"]))
            reply = await stub.get_node_stats(Empty())
            assert reply.node is not None
            return dict(reply.node.resources_available)
        finally:
            pool.close()

    return asyncio.run(ask())


def test_a_detached_group_outlives_its_job_and_others_end_with_it(three_nodes: Cluster) -> None:
    placement_group([{"CPU": 0.1}], name="kept", lifetime="detached").wait(30)
    placement_group([{"CPU": 0.1}], name="dropped").wait(30)
    namespace = runtime.get_runtime_context().namespace
    runtime.shutdown()
    runtime.init(address=three_nodes.address, namespace=namespace)
    wait_until(
        lambda: _states() == {"kept": "CREATED", "dropped": "REMOVED"},
        what="the job's own group to be removed with it",
    )
    remove_placement_group(get_placement_group("kept"))


def _states() -> dict[str, str]:
    return {row["name"]: row["state"] for row in placement_group_table().values()}


async def test_await_ready_on_the_runtimes_loop() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        await runtime.init_async(address=cluster.address)
        try:
            pg = placement_group([{"CPU": 1}])
            assert await pg.ready() == pg
            ref = node_of.options(**in_bundle(pg, 0)).remote()
            assert await ref == cluster.head_node.node_id  # type: ignore[union-attr]
            with pytest.raises(exceptions.BlockingCallOnLoopError):
                pg.wait(1)
            remove_placement_group(pg)
        finally:
            await runtime.shutdown_async()


def test_removal_returns_before_the_gcs_answers_and_later_calls_see_it() -> None:
    """As Ray documents it, removing is asynchronous: it returns while the gcs
    cannot answer. What this process does next comes after the removal: its
    waits and reads see the group removed, its name is free again, and its
    calls to an actor of the group find the actor dead."""
    with cluster_of(head_node_args={"num_cpus": 2}) as cluster:
        runtime.init(address=cluster.address)
        pg = placement_group([{"CPU": 1}], name="reused")
        assert pg.wait(30)
        actor = Member.options(**in_bundle(pg, 0)).remote()
        assert runtime.get(actor.group.remote(), timeout=30) == pg.id.hex()
        gcs = gcs_pid(cluster)
        os.kill(gcs, signal.SIGSTOP)
        try:
            removal = threading.Thread(target=remove_placement_group, args=(pg,))
            removal.start()
            removal.join(30)  # (a removal that waited for the gcs would still wait)
            assert not removal.is_alive()
        finally:
            os.kill(gcs, signal.SIGCONT)
        with pytest.raises(exceptions.ActorDiedError, match="placement group was removed"):
            runtime.get(actor.group.remote(), timeout=30)
        assert not pg.wait(0)
        assert placement_group_table(pg)["state"] == "REMOVED"
        again = placement_group([{"CPU": 1}], name="reused")
        assert again.wait(30)
        assert get_placement_group("reused") == again
        # Removals sent just before the driver goes are not lost.
        kept = placement_group([{"CPU": 1}], lifetime="detached")
        assert kept.wait(30)
        remove_placement_group(kept)
        runtime.shutdown()
        runtime.init(address=cluster.address)
        assert placement_group_table(kept)["state"] == "REMOVED"
